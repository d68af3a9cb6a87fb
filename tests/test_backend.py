"""The ML backend over HTTP (FastAPI TestClient, real model): protocol, bad input, auth, webhooks."""

from __future__ import annotations

import base64
import itertools
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ml_backend.main import create_app
from ml_backend.settings import Settings

SAMPLE_ROOT = Path(__file__).resolve().parent.parent / "sample_data"
NO_RECT = (
    '<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>'
)


@pytest.fixture(scope="module")
def label_config(sample_data) -> str:
    return (sample_data / "label_config.xml").read_text()


def make_client(tmp_path, weights, **settings) -> TestClient:
    # the sample images are sent as local paths, read only under the local-files root
    settings.setdefault("local_files_document_root", SAMPLE_ROOT)
    s = Settings(model_dir=tmp_path / "models", model_path=str(weights), **settings)
    return TestClient(create_app(s))


@pytest.fixture
def client(tmp_path, trained_weights):
    with make_client(tmp_path, trained_weights) as c:
        yield c


def tasks_for(paths, start=1):
    return [{"id": start + i, "data": {"image": str(p)}} for i, p in enumerate(paths)]


def test_health_and_setup_report_the_same_model_version(client, label_config):
    h = client.get("/health").json()
    assert h["status"] == "UP"
    s = client.post("/setup", json={"project": "3.1700000000", "schema": label_config}).json()
    assert s["model_version"] == h["model_version"] and s["model_version"].startswith("v0-")
    assert client.get("/versions").json()["versions"] == [s["model_version"]]


def test_predict_one_result_per_task_in_order_and_failures_are_isolated(client, label_config, sample_data):
    good = sorted((sample_data / "images" / "val").glob("*.jpg"))[:4]
    tasks = tasks_for(good)
    tasks.insert(2, {"id": 99, "data": {"image": str(sample_data / "bad_inputs" / "truncated.jpg")}})
    tasks.insert(3, {"id": 98, "data": {"image": "/data/upload/1/missing.jpg"}})
    started = time.perf_counter()
    r = client.post("/predict", json={"tasks": tasks, "project": "3.17", "label_config": label_config})
    elapsed_ms = 1000 * (time.perf_counter() - started)
    assert r.status_code == 200, r.text
    name, duration = r.headers["Server-Timing"].split(";dur=")
    assert name == "predict" and 0 < float(duration) <= elapsed_ms  # the prediction's own share of the request
    results = r.json()["results"]
    assert len(results) == len(tasks)
    assert results[2]["result"] == [] and results[3]["result"] == []
    version = client.get("/health").json()["model_version"]
    for res in (results[0], results[1], results[4], results[5]):
        assert res["model_version"] == version and 0 < res["score"] <= 1
        for region in res["result"]:
            v = region["value"]
            assert region["type"] == "rectanglelabels" and v["rectanglelabels"][0] in ("circle", "square", "star")
            assert 0 <= v["x"] <= 100 and 0 < v["width"] <= 100 and region["original_width"] > 0
    assert sum(len(res["result"]) for res in results) > 0
    stored = client.app.state.backend.store.predictions(3)
    assert {row["task_id"] for row in stored} == {t["id"] for t in tasks}
    ranked = [row for row in stored if row["rank"] is not None]
    assert [row["rank"] for row in ranked] == list(range(1, len(ranked) + 1))
    non_accepted = [row for row in ranked if row["decision"] != "auto_accept"]
    assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(non_accepted))
    assert {row["task_id"] for row in stored if row["error"]} == {98, 99}


def test_label_config_errors_are_clear(client, label_config):
    r = client.post("/setup", json={"project": "1.1", "schema": NO_RECT})
    assert r.status_code == 422 and "RectangleLabels" in r.json()["detail"]
    other = label_config.replace('"circle"', '"Car"').replace('"square"', '"Bus"').replace('"star"', '"Bike"')
    r = client.post("/setup", json={"project": "1.1", "schema": other})
    assert r.status_code == 422 and "Car" in r.json()["detail"] and "circle" in r.json()["detail"]
    mapped = other.replace('value="Car"', 'value="Car" predicted_values="circle"')
    r = client.post("/setup", json={"project": "1.1", "schema": mapped})
    assert r.status_code == 200 and set(r.json()["unmatched_labels"]) == {"Bus", "Bike"}


def test_malformed_requests_get_422_with_a_message(client):
    r = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "invalid request" in r.json()["detail"]
    r = client.post("/predict", json={"project": "1.1"})
    assert r.status_code == 422 and "tasks" in r.json()["detail"]
    r = client.post("/webhook", json={"project": 1})
    assert r.status_code == 422 and "action" in r.json()["detail"]
    r = client.post("/predict", json={"tasks": [{"id": 1, "data": {}}], "project": "77.1"})
    assert r.status_code == 422 and "setup" in r.json()["detail"]


def test_webhook_records_events_and_coalesces_training_requests(tmp_path, trained_weights):
    import threading

    release, seen = threading.Event(), []

    def slow_job(job, report):  # stands in for the trainer: blocks until released
        seen.append(job["id"])
        report(phase="train", epoch=1, epochs=2)
        release.wait(10)
        return {"model_version": "vX"}

    s = Settings(model_dir=tmp_path / "models", model_path=str(trained_weights))
    with TestClient(create_app(s, run_job=slow_job)) as client:
        started = time.perf_counter()
        jobs = []
        for i in range(5):
            r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 5}})
            assert r.status_code == 200
            jobs.append(r.json()["training_job"])
            if i == 0:
                deadline = time.time() + 5
                while not seen and time.time() < deadline:
                    time.sleep(0.02)
        r = client.post(
            "/webhook",
            json={"action": "ANNOTATION_CREATED", "project": {"id": 5}, "task": {"id": 9}, "annotation": {"id": 4}},
        )
        assert (time.perf_counter() - started) / 6 < 0.5
        store = client.app.state.backend.store
        assert [e["action"] for e in store.events(5)] == ["START_TRAINING"] * 5 + ["ANNOTATION_CREATED"]
        assert store.events(5)[-1]["task_id"] == 9
        assert len(set(jobs)) == 2, jobs  # the running one, and one queued job for the rest of the burst
        state = client.get("/health").json()["training"]
        assert state["phase"] == "train" and state["epoch"] == 1 and state["queued"] == 1 and state["elapsed_s"] >= 0
        release.set()
        deadline = time.time() + 10
        while time.time() < deadline and any(j["status"] != "done" for j in store.training_jobs()):
            time.sleep(0.05)
        assert [j["status"] for j in store.training_jobs()] == ["done", "done"]


def test_a_training_that_cannot_run_fails_visibly_and_keeps_the_model(client):
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 6}})
    store = client.app.state.backend.store
    deadline = time.time() + 10
    while time.time() < deadline and store.training_jobs()[0]["status"] in ("queued", "running"):
        time.sleep(0.05)
    job = store.training_jobs()[0]
    assert job["status"] == "failed" and "LABEL_STUDIO_URL" in job["error"]  # nobody said where Label Studio is
    health = client.get("/health").json()
    assert health["training"]["last"]["status"] == "failed" and health["model_version"].startswith("v0-")


def test_train_every_n_annotations(tmp_path, trained_weights):
    with make_client(tmp_path, trained_weights, train_every=3) as c:
        ids = [
            c.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 2}, "task": {"id": i}}).json()[
                "training_job"
            ]
            for i in range(3)
        ]
        assert ids[:2] == [None, None] and ids[2] is not None


def test_the_model_retrains_after_each_batch_by_default(tmp_path, trained_weights, monkeypatch):
    """Unset, ``TRAIN_EVERY`` is ``QUEUE_BUDGET``: the batch the queue serves, then a retraining (the cadence the
    batch-size runs measured best); 0 still means only "Start Training", and compose's empty value is unset."""
    from detector_al.policy.settings import QUEUE_BATCH

    assert Settings().train_every == Settings().queue_budget == QUEUE_BATCH
    assert Settings(queue_budget=4).train_every == 4 and Settings(queue_budget=4, train_every=0).train_every == 0
    monkeypatch.setenv("TRAIN_EVERY", "")
    assert Settings().train_every == QUEUE_BATCH
    monkeypatch.setenv("TRAIN_EVERY", "0")
    assert Settings().train_every == 0
    monkeypatch.delenv("TRAIN_EVERY")
    with make_client(tmp_path, trained_weights) as c:
        store = c.app.state.backend.store
        store.claim_training = lambda: None  # the jobs stay queued: this test reads the triggers only
        jobs = [
            c.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 2}, "task": {"id": i}}).json()[
                "training_job"
            ]
            for i in range(2 * QUEUE_BATCH)
        ]
        status = c.get("/status").json()
    assert jobs[: QUEUE_BATCH - 1] == [None] * (QUEUE_BATCH - 1) and jobs[QUEUE_BATCH - 1] is not None
    assert jobs[QUEUE_BATCH:-1] == [None] * (QUEUE_BATCH - 1) and jobs[-1] == jobs[QUEUE_BATCH - 1]  # coalesced
    assert status["train_every"] == QUEUE_BATCH and status["projects"][0]["annotations_since_training"] == 0


def test_too_few_labels_ends_a_job_waiting_not_failed(tmp_path, trained_weights):
    """A retraining before the validation split can judge a candidate ends ``waiting``, saying what to label, and
    costs no back-off: the next request trains at once (a failed job would hold it back)."""
    from detector_al.pipelines.retrain_dataset import check_splits

    runs = []

    def job(j, report):
        runs.append(j["id"])
        if len(runs) == 1:
            check_splits(10, 8, 2, min_labeled=2, min_val_images=3, project=8)  # the first 10 labels, 2 validate
        return {"model_version": "v1"}

    s = Settings(model_dir=tmp_path / "models", model_path=str(trained_weights))
    with TestClient(create_app(s, run_job=job)) as c:
        store = c.app.state.backend.store
        store.claim_training = lambda: type(store).claim_training(store, backoff_s=600.0)
        first = c.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 8}}).json()["training_job"]
        waiting = wait_until(lambda: (j := store.training_job(first)) and j["status"] == "waiting" and j)
        assert waiting and "Label about 5 more tasks" in waiting["error"], store.training_job(first)
        assert c.get("/health").json()["training"]["last"]["status"] == "waiting"
        second = c.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 8}}).json()["training_job"]
        assert wait_until(lambda: (j := store.training_job(second)) and j["status"] == "done")
        assert runs == [first, second]


def test_basic_auth(tmp_path, trained_weights, label_config):
    with make_client(tmp_path, trained_weights, basic_auth_user="ls", basic_auth_pass="s3cret") as c:
        assert c.get("/health").status_code == 200
        body = {"project": "1.1", "schema": label_config}
        assert c.post("/setup", json=body).status_code == 401
        bad = base64.b64encode(b"ls:wrong").decode()
        assert c.post("/setup", json=body, headers={"Authorization": f"Basic {bad}"}).status_code == 401
        good = base64.b64encode(b"ls:s3cret").decode()
        assert c.post("/setup", json=body, headers={"Authorization": f"Basic {good}"}).status_code == 200


def test_concurrent_predictions_are_consistent(client, label_config, sample_data):
    from concurrent.futures import ThreadPoolExecutor

    paths = sorted((sample_data / "images" / "val").glob("*.jpg"))[:3]
    body = {"tasks": tasks_for(paths), "label_config": label_config}
    ref = client.post("/predict", json=body).json()
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: client.post("/predict", json=body).json(), range(6)))
    for out in outs:
        assert [len(r["result"]) for r in out["results"]] == [len(r["result"]) for r in ref["results"]]
        assert [r["score"] for r in out["results"]] == pytest.approx([r["score"] for r in ref["results"]], abs=1e-5)


@pytest.mark.parametrize(
    "body",
    [
        {"project": "7.1700000000", "annotations": [], "label_config": "<View/>"},
        {"project": 7},
        {"project": {"id": 7, "label_config": "<View/>"}},
    ],
)
def test_older_label_studio_start_training_through_post_train(tmp_path, trained_weights, body):
    seen = []

    def job(j, report):
        seen.append(j["project"])
        return {}

    s = Settings(model_dir=tmp_path / "models", model_path=str(trained_weights))
    with TestClient(create_app(s, run_job=job)) as c:
        r = c.post("/train", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["action"] == "START_TRAINING" and r.json()["training_job"] is not None
        deadline = time.time() + 5
        while not seen and time.time() < deadline:
            time.sleep(0.02)
        assert seen == [7]
        assert c.get("/status").json()["jobs"][0]["project"] == 7


def test_post_train_without_a_project_is_a_clear_422(client):
    r = client.post("/train", json={"annotations": []})
    assert r.status_code == 422 and "project" in r.json()["detail"]


def test_per_task_scores_follow_the_queue_bands(client, label_config, sample_data):
    """Each task scored alone gets its band's score: Label Studio's lowest-first order is the queue order."""
    from detector_al.queue.build import AUTO_ACCEPT, label_studio_score

    paths = sorted((sample_data / "images" / "pool").glob("*.jpg"))[:6]
    r = client.post("/predict", json={"tasks": tasks_for(paths), "project": "4.1", "label_config": label_config})
    scores = {i + 1: res["score"] for i, res in enumerate(r.json()["results"])}
    rows = {p["task_id"]: p for p in client.app.state.backend.store.predictions(4)}
    strategy = client.app.state.backend.service.strategy
    for task_id, score in scores.items():
        row = rows[task_id]
        assert score == pytest.approx(label_studio_score(row["decision"], strategy.confidence(row["score"])))
        assert (score > 0.5) == (row["decision"] == AUTO_ACCEPT)
    assert [p["task_id"] for p in client.app.state.backend.store.predictions(4)] == sorted(scores, key=scores.get)


def wait_until(fn, timeout: float = 30.0):
    """Poll ``fn`` until it returns something truthy (returned) or ``timeout`` passes (its last value)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := fn():
            return value
        time.sleep(0.02)
    return fn()


def test_failing_training_requests_coalesce_and_back_off(tmp_path, trained_weights):
    """1000 Start Training presses while every job fails fast: a few failures, not one job (and traceback) each."""
    runs = []

    def failing(job, report):
        runs.append(job["id"])
        raise RuntimeError("the training process died (exit code -9)")

    s = Settings(model_dir=tmp_path / "models", model_path=str(trained_weights))
    with TestClient(create_app(s, run_job=failing)) as c:
        store = c.app.state.backend.store
        # a back-off longer than the burst, so that what the test sees does not depend on the machine's speed
        store.claim_training = lambda: type(store).claim_training(store, backoff_s=600.0)

        def press():
            assert c.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 8}}).status_code == 200

        press()
        first = wait_until(lambda: (j := store.training_job(1)) and j["status"] == "failed" and j)
        assert first and "exit code -9" in first["error"], first
        for _ in range(999):
            press()
        jobs = store.training_jobs(2000)
        assert runs == [1]  # the first failed; the back-off holds the rest in one queued job
        assert [j["status"] for j in jobs] == ["queued", "failed"], jobs
        assert jobs[0]["reason"].startswith("START_TRAINING")  # the presses coalesced into it
