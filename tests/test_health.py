"""GET /health answers anyone (Label Studio polls it without auth), but with basic auth on it tells a request without
the credentials only that the backend is up: not the model version, not the last job's result or error text."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from ml_backend.main import create_app
from ml_backend.settings import Settings


def test_health_without_credentials_says_only_up_when_basic_auth_is_on(tmp_path, trained_weights):
    settings = Settings(
        model_dir=tmp_path / "models", model_path=str(trained_weights), basic_auth_user="ls", basic_auth_pass="s3cret"
    )
    with TestClient(create_app(settings)) as c:
        c.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 6}}, auth=("ls", "s3cret"))
        store = c.app.state.backend.store
        deadline = time.time() + 10
        while time.time() < deadline and store.training_jobs()[0]["status"] in ("queued", "running"):
            time.sleep(0.05)
        assert store.training_jobs()[0]["status"] == "failed"  # its error names what is missing
        anyone = c.get("/health")
        assert anyone.status_code == 200 and anyone.json() == {"status": "UP", "model_class": "detector-al"}
        assert c.get("/", auth=("ls", "wrong")).json() == {"status": "UP", "model_class": "detector-al"}
        full = c.get("/health", auth=("ls", "s3cret")).json()
        assert full["status"] == "UP" and full["model_version"].startswith("v0-")
        assert "LABEL_STUDIO_URL" in full["training"]["last"]["error"]


def test_health_tells_everything_when_basic_auth_is_off(tmp_path, trained_weights):
    with TestClient(create_app(Settings(model_dir=tmp_path / "models", model_path=str(trained_weights)))) as c:
        h = c.get("/health").json()
        assert h["status"] == "UP" and h["model_version"].startswith("v0-") and "queued" in h["training"]
