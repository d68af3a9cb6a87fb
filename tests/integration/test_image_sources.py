"""Every image source against a real Label Studio with its default auth (legacy tokens off, a personal access
token), and a real backend server that does not share Label Studio's local-files root: images uploaded through
the import API as the UI does, a local-files storage, plain http URLs. Each task gets the adapter's boxes.
Also: an access token refused in the middle of a prediction run, a legacy token, and a stock /setup token."""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from detector_al.label_studio.auth import label_studio_auth
from detector_al.label_studio.regions import xyxy_to_percent
from detector_al.model.detector import Detector
from tests.integration.conftest import BackendServer, connect_backend, sync_local_storage
from tests.loopback import Loopback, Request

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(sample_data) -> list[Path]:
    return sorted((sample_data / "images" / "pool").glob("*.jpg"))[20:29]


@pytest.fixture(scope="module")
def reference(trained_weights):
    det = Detector.load(trained_weights, conf=0.05)
    cache: dict[str, list] = {}

    def boxes(path: Path) -> list[tuple]:
        if path.name not in cache:
            (ref,) = det.predict([path])
            shown = ref.detections[ref.detections.confidence >= 0.25]
            cache[path.name] = sorted(xyxy_to_percent(b, ref.width, ref.height) for b in shown.xyxy)
        return cache[path.name]

    return boxes


@pytest.fixture(scope="module")
def image_server(images):
    """Plain http URLs on loopback (another origin than Label Studio: no key goes there)."""
    by_name = {p.name: p.read_bytes() for p in images}

    def route(req: Request) -> None:
        body = by_name.get(req.path.lstrip("/"))
        req.send(200, body, {"Content-Type": "image/jpeg"}) if body else req.send(404)

    with Loopback(route) as srv:
        yield srv


def upload(label_studio, project_id: int, paths: list[Path]) -> None:
    """What the UI's Import does: one multipart request, each file under its own field."""
    files = {f"file{i}": (p.name, p.read_bytes(), "image/jpeg") for i, p in enumerate(paths)}
    r = requests.post(
        f"{label_studio.url}/api/projects/{project_id}/import",
        files=files,
        auth=label_studio_auth(label_studio.url, label_studio.token),
        timeout=120,
    )
    assert r.status_code == 201, r.text


def source_name(value: str) -> str:
    """The original file name behind a task's image value."""
    name = value.split("d=")[-1].rsplit("/", 1)[-1]
    return re.sub(r"^[0-9a-f]{8}-", "", name) if value.startswith("/data/upload/") else name


def assert_adapter_boxes(ls_client, project_id: int, by_name: dict[str, Path], reference, n_tasks: int) -> set:
    tasks = list(ls_client.tasks.list(project=project_id, fields="all"))
    assert len(tasks) == n_tasks
    kinds, n_boxes = set(), 0
    for t in tasks:
        value = t.data["image"]
        kinds.add("upload" if value.startswith("/data/upload/") else "local" if "local-files" in value else "http")
        preds = list(ls_client.predictions.list(task=t.id))
        assert len(preds) == 1, value
        got = sorted(
            (r["value"]["x"], r["value"]["y"], r["value"]["width"], r["value"]["height"]) for r in preds[0].result
        )
        want = reference(by_name[source_name(value)])
        assert len(got) == len(want), value
        np.testing.assert_allclose(np.array(got).reshape(-1, 4), np.array(want).reshape(-1, 4), atol=0.05)
        n_boxes += len(got)
    assert n_boxes > 0
    return kinds


def test_every_source_gets_the_adapters_boxes_without_a_shared_root(
    label_studio, ls_client, trained_weights, sample_data, images, image_server, reference, tmp_path
):
    local = label_studio.files_root / "sources-local"
    local.mkdir(exist_ok=True)
    for p in images[3:6]:
        shutil.copy(p, local / p.name)
    p = ls_client.projects.create(title="image sources", label_config=(sample_data / "label_config.xml").read_text())
    upload(label_studio, p.id, images[:3])
    sync_local_storage(ls_client, p.id, local)
    for img in images[6:9]:
        ls_client.tasks.create(project=p.id, data={"image": f"{image_server.url}/{img.name}"})

    server = BackendServer(
        trained_weights,
        None,  # Label Studio's local-files root is not shared: every Label Studio file is downloaded
        tmp_path / "models",
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        FETCH_ALLOW_PRIVATE="true",  # the plain URLs' image server, on loopback, stands in for a host on the web
    ).start()
    try:
        connect_backend(ls_client, p.id, server.url)
        ls_client.actions.create(
            id="retrieve_tasks_predictions", project=p.id, selected_items={"all": True, "excluded": []}
        )
        kinds = assert_adapter_boxes(ls_client, p.id, {x.name: x for x in images}, reference, 9)
        assert kinds == {"upload", "local", "http"}
        from detector_al.state.store import Store

        rows = Store(server.model_dir / "detector_al.sqlite3").predictions(p.id)
        assert len(rows) == 9 and all(r["error"] is None for r in rows)
        assert all("Authorization" not in h for _, _, h in image_server.log)  # the key stays with Label Studio
        assert "legacy" not in server.log.read_text()
    finally:
        server.stop()


@pytest.fixture
def in_process_backend(label_studio, trained_weights, tmp_path):
    """The backend app served by uvicorn in this process, so a test can reach its auth object."""
    import uvicorn

    from detector_al.label_studio.local_server import free_port
    from ml_backend.main import create_app
    from ml_backend.settings import Settings

    settings = Settings(
        model_dir=tmp_path / "models",
        model_path=str(trained_weights),
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.token,
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.2)
    yield url, settings
    server.should_exit = True
    thread.join(30)


def test_an_access_token_refused_mid_run_is_refreshed_once_and_no_task_is_lost(
    label_studio, ls_client, sample_data, images, reference, in_process_backend, monkeypatch
):
    import detector_al.serving.service as service

    url, _settings = in_process_backend
    p = ls_client.projects.create(title="refused mid-run", label_config=(sample_data / "label_config.xml").read_text())
    upload(label_studio, p.id, images[:6])
    auth = label_studio_auth(label_studio.url, label_studio.token)  # the one the backend uses (shared)
    calls = {"n": 0}
    before = {"refreshes": None}
    real = service.fetch_image
    lock = threading.Lock()

    def fetch_then_refuse(*args, **kwargs):
        path = real(*args, **kwargs)
        with lock:
            calls["n"] += 1
            if calls["n"] == 2:  # Label Studio now refuses the access token held (as after a restart or expiry)
                auth._access = "eyJhbGciOiJIUzI1NiJ9.eyJnYXJiYWdlIjoxfQ.garbage"
                before["refreshes"] = auth.refreshes
        return path

    monkeypatch.setattr(service, "fetch_image", fetch_then_refuse)
    connect_backend(ls_client, p.id, url, title="detector-al in-process")
    ls_client.actions.create(
        id="retrieve_tasks_predictions", project=p.id, selected_items={"all": True, "excluded": []}
    )
    assert calls["n"] == 6
    assert before["refreshes"] is not None and auth.refreshes == before["refreshes"] + 1
    assert_adapter_boxes(ls_client, p.id, {x.name: x for x in images}, reference, 6)


def test_a_legacy_token_still_works_when_legacy_tokens_are_on(
    label_studio, legacy_token, ls_client, sample_data, images, trained_weights, tmp_path, reference
):
    from fastapi.testclient import TestClient

    from ml_backend.main import create_app
    from ml_backend.settings import Settings

    p = ls_client.projects.create(title="legacy token", label_config=(sample_data / "label_config.xml").read_text())
    upload(label_studio, p.id, images[:1])
    (task,) = list(ls_client.tasks.list(project=p.id, fields="all"))
    settings = Settings(
        model_dir=tmp_path / "models",
        model_path=str(trained_weights),
        label_studio_url=label_studio.url,
        label_studio_api_key=legacy_token,
    )
    body = {
        "tasks": [{"id": task.id, "data": task.data}],
        "project": f"{p.id}.1",
        "label_config": (sample_data / "label_config.xml").read_text(),
    }
    with TestClient(create_app(settings)) as c:
        (res,) = c.post("/predict", json=body).json()["results"]
    want = reference(images[0])
    assert res["score"] is not None and len(res["result"]) == len(want)


def test_on_a_stock_install_the_setup_token_is_refused_with_a_clear_message(
    label_studio, ls_client, sample_data, images, trained_weights, tmp_path
):
    """Without a key of its own the backend has only /setup's token: the project creator's legacy token. (Behind basic
    auth: without LABEL_STUDIO_URL, a /setup host on a private address is trusted only then.)"""
    from fastapi.testclient import TestClient

    from ml_backend.main import create_app
    from ml_backend.settings import Settings

    config = (sample_data / "label_config.xml").read_text()
    p = ls_client.projects.create(title="stock setup token", label_config=config)
    upload(label_studio, p.id, images[:1])
    (task,) = list(ls_client.tasks.list(project=p.id, fields="all"))
    settings = Settings(
        model_dir=tmp_path / "models", model_path=str(trained_weights), basic_auth_user="ls", basic_auth_pass="pw"
    )
    with TestClient(create_app(settings)) as c:
        c.auth = ("ls", "pw")
        setup = {"project": f"{p.id}.1", "schema": config, "hostname": label_studio.url}
        assert c.post("/setup", json={**setup, "access_token": label_studio.legacy_token}).status_code == 200
        body = {"tasks": [{"id": task.id, "data": task.data}], "project": f"{p.id}.1", "label_config": config}
        (res,) = c.post("/predict", json=body).json()["results"]
        (row,) = c.app.state.backend.store.predictions(p.id)
    assert res["result"] == [] and res["score"] is None
    assert "legacy tokens are off by default since 1.20" in row["error"]
    assert "personal access token" in row["error"]
