"""Which token the backend sends where: LABEL_STUDIO_API_KEY to LABEL_STUDIO_URL only; /setup's token only when no
key is configured, and only to the hostname /setup sent with it. Fake Label Studios on loopback, real model."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ml_backend.main import create_app
from ml_backend.settings import Settings
from tests.loopback import FakeLabelStudio

UPLOAD = "/data/upload/1/a.jpg"


@pytest.fixture(scope="module")
def label_config(sample_data) -> str:
    return (sample_data / "label_config.xml").read_text()


@pytest.fixture(scope="module")
def jpeg(sample_data) -> bytes:
    return next((sample_data / "images" / "pool").glob("*.jpg")).read_bytes()


@pytest.fixture
def two_label_studios(jpeg):
    with FakeLabelStudio() as ls, FakeLabelStudio() as other:
        for fake in (ls, other):
            fake.files[UPLOAD] = jpeg
        yield ls, other


def backend(tmp_path, weights, **settings) -> TestClient:
    return TestClient(create_app(Settings(model_dir=tmp_path / "models", model_path=str(weights), **settings)))


def predict(c: TestClient, label_config: str) -> dict:
    body = {"tasks": [{"id": 1, "data": {"image": UPLOAD}}], "project": "1.1", "label_config": label_config}
    r = c.post("/predict", json=body)
    assert r.status_code == 200, r.text
    return r.json()["results"][0]


def setup(c: TestClient, label_config: str, hostname: str, token: str) -> None:
    body = {"project": "1.1", "schema": label_config, "hostname": hostname, "access_token": token}
    assert c.post("/setup", json=body).status_code == 200


def auth_headers(fake) -> list[str]:
    return [h.get("Authorization", "") for m, p, h in fake.http.log if p == UPLOAD or "storage-data" in p]


def test_the_configured_pat_goes_to_the_configured_url_only(two_label_studios, tmp_path, trained_weights, label_config):
    ls, other = two_label_studios
    with backend(tmp_path, trained_weights, label_studio_url=ls.url, label_studio_api_key=ls.pat) as c:
        setup(c, label_config, other.url, "creators-legacy-token")  # another host: neither key goes there
        assert predict(c, label_config)["score"] is not None
    assert other.http.log == []
    sent = auth_headers(ls)
    assert sent and all(h.startswith("Bearer ") for h in sent) and ls.pat not in sent[0]


def test_without_a_key_the_setup_token_is_used_for_its_own_hostname(
    two_label_studios, tmp_path, trained_weights, label_config
):
    ls, other = two_label_studios
    ls.legacy_on = True
    # behind basic auth: only then may /setup name a Label Studio on a private address (tests/test_ssrf.py)
    with backend(tmp_path, trained_weights, basic_auth_user="u", basic_auth_pass="p") as c:
        c.auth = ("u", "p")
        setup(c, label_config, ls.url, "legacy-key")
        assert predict(c, label_config)["score"] is not None
        assert set(auth_headers(ls)) == {"Token legacy-key"}
        setup(c, label_config, other.url, "")  # another hostname without a token: ls's token does not follow
        for p in (tmp_path / "models" / "image-cache").glob("*"):
            p.unlink()
        res = predict(c, label_config)
        assert res["score"] is None and res["result"] == []
        assert "no Label Studio API key" in c.app.state.backend.store.predictions(1)[-1]["error"]
    assert other.http.log == []


def test_with_a_configured_url_a_setup_token_for_another_host_is_not_used(
    two_label_studios, tmp_path, trained_weights, label_config
):
    ls, other = two_label_studios
    other.legacy_on = True
    with backend(tmp_path, trained_weights, label_studio_url=ls.url) as c:
        setup(c, label_config, other.url, "legacy-key")
        res = predict(c, label_config)
        assert res["score"] is None
        rows = c.app.state.backend.store.predictions(1)
        assert "no Label Studio API key" in rows[0]["error"]
    assert other.http.log == [] and ls.http.log == []
