"""A bounded, seeded schema-driven fuzz run over the backend's OpenAPI: no request gets a server error."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from ml_backend.main import create_app
from ml_backend.settings import Settings


@pytest.fixture(scope="module")
def api(tmp_path_factory, trained_weights):
    s = Settings(model_dir=tmp_path_factory.mktemp("fuzz") / "models", model_path=str(trained_weights))
    app = create_app(s, run_job=lambda job, report: {})  # the worker runs no training
    with TestClient(app):  # runs the lifespan: the model is loaded once, as in the server
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_server_errors(api):
    """Every operation, 40 generated requests each (seeded): no 5xx, and every 4xx body says what is wrong."""
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/setup", "/webhook", "/train", "/health", "/status"}
    for op in operations:

        @settings(
            max_examples=40,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def check(case):
            response = case.call()
            assert response.status_code < 500, (
                f"{case.method} {case.path}: {response.status_code} {response.text[:500]}"
            )
            if response.status_code in (400, 401, 422):
                assert isinstance(response.json().get("detail"), str), response.text[:500]

        check()
