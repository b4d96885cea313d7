import pytest


@pytest.fixture(scope="session")
def home(tmp_path_factory):
    """One segflow home (Prefect database) for every command of these tests: migrated once."""
    return tmp_path_factory.mktemp("segflow-home")
