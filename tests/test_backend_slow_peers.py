"""Slow, huge and broken image servers fail their own task only: /predict answers within the limits, the task's
error says why, nothing partial stays in the cache, and /health still answers within a second."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from ml_backend.main import create_app
from ml_backend.settings import Settings
from tests.loopback import Loopback, Request

LIMITS = {
    "fetch_connect_timeout_s": 1.0,
    "fetch_read_timeout_s": 0.5,
    "fetch_timeout_s": 1.5,
    "fetch_max_bytes": 200_000,
    "fetch_allow_private": True,  # the loopback image servers stand in for hosts on the internet
}


def never_answers(release: threading.Event):
    return lambda req: release.wait(20)


def huge(req: Request) -> None:
    req.send_response(200)
    req.send_header("Content-Length", str(2 * 1024**3))  # announces 2 GB, sends until the client hangs up
    req.end_headers()
    try:
        for _ in range(100_000):
            req.wfile.write(b"\0" * 65536)
    except OSError:
        pass


def cut_half_way(req: Request) -> None:
    req.send_response(200)
    req.send_header("Content-Length", "100000")
    req.end_headers()
    req.wfile.write(b"\xff\xd8" + b"x" * 40_000)
    req.wfile.flush()
    req.close_connection = True
    req.connection.shutdown(2)


@pytest.fixture
def client(tmp_path, trained_weights, sample_data):
    s = Settings(
        model_dir=tmp_path / "models", model_path=str(trained_weights), local_files_document_root=sample_data, **LIMITS
    )
    with TestClient(create_app(s)) as c:
        yield c


@pytest.mark.parametrize(
    ("server", "reason"),
    [("never", "timed out"), ("huge", "too large"), ("cut", "connection broke")],
)
def test_a_bad_image_server_fails_its_task_alone(client, label_config, sample_data, server, reason):
    release = threading.Event()
    route = {"never": never_answers(release), "huge": huge, "cut": cut_half_way}[server]
    good = str(next((sample_data / "images" / "pool").glob("*.jpg")))
    with Loopback(route) as bad:
        tasks = [{"id": 1, "data": {"image": f"{bad.url}/a.jpg"}}, {"id": 2, "data": {"image": good}}]
        start = time.perf_counter()
        r = client.post("/predict", json={"tasks": tasks, "project": 5, "label_config": label_config})
        elapsed = time.perf_counter() - start
        release.set()
    assert r.status_code == 200, r.text
    assert elapsed < LIMITS["fetch_timeout_s"] + 3.0, elapsed
    bad_result, good_result = r.json()["results"]
    assert bad_result["result"] == [] and bad_result["score"] is None
    assert good_result["score"] is not None
    rows = {row["task_id"]: row for row in client.app.state.backend.store.predictions(5)}
    assert rows[1]["error"].startswith(f"cannot fetch {bad.url}/a.jpg") and reason in rows[1]["error"]
    cache = client.app.state.backend.service.config.cache_dir
    assert not cache.exists() or all(p.stat().st_size > 0 for p in cache.rglob("*") if p.is_file())
    assert not any("a.jpg" in p.name for p in cache.rglob("*")) if cache.exists() else True
    assert_health_within_a_second(client)


def test_many_hung_urls_do_not_stop_health_or_other_requests(client, label_config, sample_data):
    """40 requests for a URL that never answers used to stop /health; each now ends at its deadline."""
    release = threading.Event()
    good = str(next((sample_data / "images" / "pool").glob("*.jpg")))
    with Loopback(never_answers(release)) as hung:
        body = {"tasks": [{"id": i, "data": {"image": f"{hung.url}/{i}.jpg"}} for i in range(4)], "project": 6}
        body["label_config"] = label_config
        with ThreadPoolExecutor(8) as pool:
            jammed = [pool.submit(client.post, "/predict", json=body) for _ in range(8)]
            time.sleep(0.3)
            assert_health_within_a_second(client)
            start = time.perf_counter()
            r = client.post(
                "/predict",
                json={"tasks": [{"id": 99, "data": {"image": good}}], "project": 6, "label_config": label_config},
            )
            assert r.status_code == 200 and r.json()["results"][0]["score"] is not None
            assert time.perf_counter() - start < 10
            assert all(f.result(timeout=60).status_code == 200 for f in jammed)
        release.set()


@pytest.fixture
def label_config(sample_data) -> str:
    return (sample_data / "label_config.xml").read_text()


def assert_health_within_a_second(client):
    start = time.perf_counter()
    assert client.get("/health").status_code == 200
    assert time.perf_counter() - start < 1.0


def test_files_outside_the_allowed_root_and_huge_images_fail_their_task_alone(
    tmp_path, trained_weights, label_config, sample_data
):
    """file:// URLs, paths and symlinks leading outside LOCAL_FILES_DOCUMENT_ROOT are refused; an image over the
    decode budget fails at once; the other task of the request is served; /health answers within a second."""
    from tests.test_images import _huge_png

    root, outside = tmp_path / "root", tmp_path / "outside.jpg"
    root.mkdir()
    jpeg = next((sample_data / "images" / "pool").glob("*.jpg")).read_bytes()
    outside.write_bytes(jpeg)
    (root / "good.jpg").write_bytes(jpeg)
    (root / "link.jpg").symlink_to(outside)
    _huge_png(root / "huge.png", 19999)
    s = Settings(model_dir=tmp_path / "models", model_path=str(trained_weights), local_files_document_root=root)
    cases = {1: f"file://{outside}", 2: str(outside), 3: str(root / "link.jpg"), 4: str(root / "huge.png")}
    cases[5] = str(root / "good.jpg")
    with TestClient(create_app(s)) as client:
        tasks = [{"id": i, "data": {"image": url}} for i, url in cases.items()]
        start = time.perf_counter()
        r = client.post("/predict", json={"tasks": tasks, "project": 9, "label_config": label_config})
        assert r.status_code == 200 and time.perf_counter() - start < 10
        results = r.json()["results"]
        assert [res["score"] is None for res in results] == [True, True, True, True, False]
        rows = {row["task_id"]: row["error"] for row in client.app.state.backend.store.predictions(9)}
        for task in (1, 2, 3):
            assert "outside" in rows[task], rows[task]
        assert "too large to decode" in rows[4]
        assert_health_within_a_second(client)
