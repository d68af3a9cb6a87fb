"""Hostile and broken bodies get a 4xx that names the field, never a 500, and the server keeps answering."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from ml_backend.main import create_app
from ml_backend.settings import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory, trained_weights):
    s = Settings(model_dir=tmp_path_factory.mktemp("hostile") / "models", model_path=str(trained_weights))
    with TestClient(create_app(s)) as c:
        yield c


@pytest.fixture(scope="module")
def label_config(sample_data) -> str:
    return (sample_data / "label_config.xml").read_text()


def post_raw(client, path, text):
    return client.post(path, content=text, headers={"content-type": "application/json"})


PREDICT_CASES = [
    ('{"tasks": [{"id": "abc", "data": {"image": "x.jpg"}}]}', "tasks.0.id"),
    ('{"tasks": [{"id": NaN, "data": {"image": "x.jpg"}}]}', "tasks.0.id"),
    ('{"tasks": [{"id": 1e30, "data": {"image": "x.jpg"}}]}', "tasks.0.id"),
    ('{"tasks": [{"id": 100000000000000000000000000000, "data": {"image": "x.jpg"}}]}', "tasks.0.id"),
    ('{"tasks": [{"id": {"a": 1}, "data": {"image": "x.jpg"}}]}', "tasks.0.id"),
    ('{"tasks": [{"id": -1, "data": {"image": "x.jpg"}}]}', "tasks.0.id"),
    ('{"tasks": [{"id": 1, "data": "x.jpg"}]}', "tasks.0.data"),
    ('{"tasks": [{"id": 1, "data": ["x.jpg"]}]}', "tasks.0.data"),
    ('{"tasks": [], "project": 1e30}', "project"),
    ('{"tasks": [], "project": "abc.17"}', "project"),
    ('{"tasks": [], "project": 100000000000000000000000000000}', "project"),
    ('{"tasks": "all"}', "tasks"),
    ('{"tasks": [], "label_config": ["<View/>"]}', "label_config"),
]


@pytest.mark.parametrize(("body", "field"), PREDICT_CASES)
def test_predict_refuses_bad_fields_by_name(client, label_config, body, field):
    body = '{"label_config": ' + json.dumps(label_config) + ", " + body[1:]  # the case's own key, if any, wins
    r = post_raw(client, "/predict", body)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]
    assert_alive(client)


WEBHOOK_CASES = [
    ('{"action": "START_TRAINING", "project": {"id": 1e30}}', "project.id"),
    ('{"action": "ANNOTATION_CREATED", "project": {"id": 1}, "task": {"id": Infinity}}', "task.id"),
    ('{"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": ["<View/>"]}}', "project.label_config"),
    ('{"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": "' + "x" * 300_000 + '"}}', "label_config"),
    ('{"action": ""}', "action"),
    ('{"project": 1}', "action"),
    ("[]", "body"),
    ("{not json", "body"),
]


@pytest.mark.parametrize(("body", "field"), WEBHOOK_CASES)
def test_webhook_refuses_bad_fields_by_name_and_stores_nothing(client, body, field):
    store = client.app.state.backend.store
    before = len(store.events())
    r = post_raw(client, "/webhook", body)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]
    assert len(store.events()) == before and 1 not in client.app.state.backend.credentials.label_configs
    assert_alive(client)


def test_a_webhook_with_a_bare_id_is_accepted(client):
    r = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": 3, "task": 9})
    assert r.status_code == 200 and client.app.state.backend.store.events(3)[-1]["task_id"] == 9


def assert_alive(client):
    start = time.perf_counter()
    assert client.get("/health").status_code == 200
    assert time.perf_counter() - start < 1.0


def test_per_project_state_in_memory_is_bounded(client):
    """100 webhooks with new project ids and large label configs kept +99 MB for ever: now the oldest go."""
    from detector_al.serving.project_sync import MAX_PROJECTS

    config = "<View>" + " " * 200_000 + "</View>"
    for pid in range(10_000, 10_000 + MAX_PROJECTS + 50):
        body = {"action": "ANNOTATION_CREATED", "project": {"id": pid, "label_config": config}}
        assert client.post("/webhook", json=body).status_code == 200
    configs = client.app.state.backend.credentials.label_configs
    assert len(configs) == MAX_PROJECTS and 10_000 not in configs and 10_000 + MAX_PROJECTS + 49 in configs
    assert_alive(client)


def test_with_basic_auth_only_health_is_open(tmp_path, trained_weights):
    s = Settings(
        model_dir=tmp_path / "models", model_path=str(trained_weights), basic_auth_user="u", basic_auth_pass="p"
    )
    with TestClient(create_app(s)) as c:
        assert c.get("/health").status_code == 200
        for path in ("/docs", "/redoc", "/openapi.json", "/status", "/versions"):
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.json()["detail"] == "wrong or missing basic-auth credentials"
        assert c.get("/openapi.json", auth=("u", "p")).json()["info"]["title"] == "detector-al ML backend"
        assert "swagger" in c.get("/docs", auth=("u", "p")).text.lower()
        spec = c.get("/openapi.json", auth=("u", "p")).json()
        assert {"401", "422"} <= set(spec["paths"]["/predict"]["post"]["responses"])
