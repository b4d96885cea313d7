"""Shared test settings: no network, Prefect kept off the user's home."""

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

# Session servers on 127.0.0.1 (moto's S3 API), started only by the tests that ask for them.
pytest_plugins = ["tests.servers", "tests.cluster"]


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri(monkeypatch):
    """Start each test without ``MLFLOW_TRACKING_URI`` (a developer's own server, or one a test
    set): the tests' runs go to their own temporary databases."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
