import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(autouse=True, scope="session")
def prefect_harness():
    """One temporary Prefect server and database for all flow tests (~9 s to start)."""
    with prefect_test_harness(server_startup_timeout=120):
        yield
