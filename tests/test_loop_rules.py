"""The loop's rules that need no Label Studio: what counts as a label (skips, deletions), one policy settings object,
strategies refused at start, training time limits and cancellation, bounded state, PIL's bomb check, exposure."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from detector_al.label_studio.annotations import is_labeled, latest_label
from detector_al.state.registry import ModelRegistry, digest_of, names_same_weights
from detector_al.state.store import MAX_EVENTS, Store
from ml_backend.main import create_app
from ml_backend.settings import Settings, exposure_warning

# ---- labels: skips and deletions --------------------------------------------------------------------------------


def test_a_skip_is_no_label_and_a_deleted_label_returns_its_task(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    store.record_event("ANNOTATION_CREATED", 1, 10, 100)
    store.record_event("ANNOTATION_CREATED", 1, 11, 101, cancelled=True)  # a skip
    store.record_event("ANNOTATION_CREATED", 1, 12, 102)
    store.record_event("ANNOTATION_CREATED", 1, 12, 103)  # a second annotator on task 12
    assert store.labeled_tasks(1) == {10, 12}
    assert store.project(1)["annotations_since_training"] == 3  # the skip does not count towards training
    store.record_event("ANNOTATIONS_DELETED", 1, None, None, deleted_annotations=[100, 102])
    assert store.labeled_tasks(1) == {12}  # 103 still labels task 12; task 10 is back in the queue
    store.record_event("ANNOTATION_UPDATED", 1, 11, 101)  # the skipped task labeled after all
    assert store.labeled_tasks(1) == {11, 12}
    assert store.labeled_tasks(2) == set()


def test_a_store_written_before_the_annotations_table_takes_its_labels_from_the_events(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as c:
        c.execute(
            "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, action TEXT NOT NULL, project INTEGER,"
            " task_id INTEGER, annotation_id INTEGER, received_at REAL NOT NULL)"
        )
        c.executemany(
            "INSERT INTO events (action, project, task_id, annotation_id, received_at) VALUES (?,?,?,?,?)",
            [("ANNOTATION_CREATED", 1, 5, 50, 1.0), ("START_TRAINING", 1, None, None, 2.0)],
        )
    assert Store(path).labeled_tasks(1) == {5}


@pytest.mark.parametrize(
    ("annotations", "label"),
    [
        ([], None),
        ([{"id": 1, "result": ["a"], "was_cancelled": True}], None),
        ([{"id": 1, "result": ["a"]}, {"id": 2, "result": ["b"], "was_cancelled": True}], ["a"]),
        (
            [
                {"id": 1, "result": ["a"], "updated_at": "2026-01-02"},
                {"id": 2, "result": ["b"], "updated_at": "2026-01-01"},
            ],
            ["a"],
        ),
        ([{"id": 1, "result": []}], []),  # an empty submission is a label: "nothing here"
    ],
)
def test_the_label_of_a_task_is_its_latest_annotation_that_is_not_a_skip(annotations, label):
    assert latest_label({"annotations": annotations}) == label
    assert is_labeled({"annotations": annotations}) is (label is not None)


def test_the_webhook_reads_skips_and_deletions(tmp_path, trained_weights):
    s = Settings(model_dir=tmp_path / "models", model_path=str(trained_weights), train_every=2)
    with TestClient(create_app(s, run_job=lambda job, report: {})) as client:
        store = client.app.state.backend.store

        def post(body):
            r = client.post("/webhook", json={"project": {"id": 3}, **body})
            assert r.status_code == 200, r.text
            return r.json()

        skip = {"action": "ANNOTATION_CREATED", "task": {"id": 1}, "annotation": {"id": 7, "was_cancelled": True}}
        assert post(skip)["training_job"] is None
        assert post({**skip, "annotation": {"id": 8, "was_cancelled": True}})["training_job"] is None  # no training
        post({"action": "ANNOTATION_CREATED", "task": {"id": 2}, "annotation": {"id": 9}})
        assert store.labeled_tasks(3) == {2}
        post({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 9}]})  # Label Studio names only the ids
        assert store.labeled_tasks(3) == set()
        r = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "x"}]})
        assert r.status_code == 422


# ---- one policy, strategies refused at start --------------------------------------------------------------------


def test_round_weighted_and_unknown_strategies_are_refused_where_they_would_run_another(tmp_path):
    from typer.testing import CliRunner

    from detector_al.cli.app import app
    from detector_al.policy.settings import PolicySettings

    for name, says in (("entropy_ppal", "only `detector-al simulate`"), ("nope", "unknown strategy")):
        with pytest.raises(ValueError, match=says):
            Settings(model_dir=tmp_path, strategy=name)
        with pytest.raises(ValueError, match=says):
            PolicySettings(strategy=name)
        res = CliRunner().invoke(app, ["score", str(tmp_path), "--model", "x.pt", "--out", "q.csv", "--strategy", name])
        assert res.exit_code == 2 and says.split()[0] in res.output
    res = CliRunner().invoke(app, ["serve", "--model-dir", str(tmp_path)], env={"STRATEGY": "entropy_balanced"})
    assert res.exit_code != 0 and "strategy" in res.output and "simulate" in res.output


def test_a_ceal_min_confidence_outside_0_1_is_refused_at_start_everywhere(tmp_path):
    """CEAL_MIN_CONFIDENCE (the lowest box confidence of an auto-accepted image) outside [0, 1] is refused where it is
    read, saying which setting and why: the backend's settings (so ``serve`` does not start), ``ingest``, ``score``."""
    from typer.testing import CliRunner

    from detector_al.cli.app import app
    from detector_al.policy.settings import PolicySettings, ceal_config

    says = r"min_confidence must be in \[0, 1\], got 1\.5"
    with pytest.raises(ValueError, match=says):
        Settings(model_dir=tmp_path, ceal_min_confidence=1.5)
    with pytest.raises(ValueError, match=says):
        PolicySettings.from_options(ceal_min_confidence=1.5)
    with pytest.raises(ValueError, match=r"got -0\.1"):
        ceal_config(min_confidence=-0.1)
    assert Settings(model_dir=tmp_path, ceal_min_confidence=1.0).policy().ceal.min_confidence == 1.0
    bad = {"CEAL_MIN_CONFIDENCE": "1.5"}
    res = CliRunner().invoke(app, ["serve", "--model-dir", str(tmp_path)], env=bad)
    assert res.exit_code != 0 and "ceal_min_confidence" in res.output and "[0, 1]" in res.output
    for command in (
        ["score", str(tmp_path), "--model", "x.pt", "--out", "q.csv"],
        ["ingest", str(tmp_path), "-m", "x.pt", "--out", str(tmp_path / "t.json")],
    ):
        res = CliRunner().invoke(app, command, env=bad)
        said = " ".join(res.output.replace("│", " ").split())  # the error box wraps the message
        assert res.exit_code == 2 and "min_confidence must be in [0, 1], got 1.5" in said, (command, res.output)


def test_every_caller_takes_its_defaults_from_the_one_policy():
    from detector_al.demo.run import DemoConfig
    from detector_al.pipelines.ingest import IngestConfig
    from detector_al.pipelines.retrain import RetrainConfig
    from detector_al.policy.settings import POLICY
    from detector_al.serving.service import ServiceConfig

    s = Settings()
    assert s.policy() == IngestConfig().policy == ServiceConfig().policy == POLICY
    assert s.queue_budget == RetrainConfig().budget == DemoConfig().budget == POLICY.budget
    assert s.score_threshold == POLICY.score_threshold and s.strategy == POLICY.strategy


def test_one_environment_configures_the_backend_and_ingest_alike(tmp_path, monkeypatch, trained_weights):
    """The same variables set the backend's policy and ingest's: ingest of an empty folder offline reads them."""
    from typer.testing import CliRunner

    from detector_al.cli.app import app
    from detector_al.pipelines import ingest as ingest_module

    env = {"STRATEGY": "margin", "SCORE_THRESHOLD": "0.4", "QUEUE_BUDGET": "7", "QUEUE_COLD_START": "false"}
    env |= {"CEAL_DELTA0": "0.01", "CEAL_DECAY": "0.002", "CEAL_MIN_CONFIDENCE": "0.7"}
    env |= {"LABEL_MAPPING": '{"circle": "square"}'}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    backend = Settings().policy()
    seen = {}

    def fake_ingest(folder, det, store, target, cfg, **kw):
        seen["policy"], seen["mapping"] = cfg.policy, cfg.label_mapping
        return ingest_module.IngestReport()

    monkeypatch.setattr(ingest_module, "ingest", fake_ingest)
    (tmp_path / "empty").mkdir()
    weights = str(trained_weights)
    res = CliRunner().invoke(
        app,
        ["ingest", str(tmp_path / "empty"), "-m", weights, "--out", str(tmp_path / "t.json"),
         "--store", str(tmp_path / "s.sqlite3"), "--model-dir", str(tmp_path / "models")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert seen["policy"] == backend
    assert (backend.strategy, backend.score_threshold, backend.budget, backend.cold_start) == ("margin", 0.4, 7, False)
    assert (backend.ceal.delta_0, backend.ceal.decay, backend.ceal.min_confidence) == (0.01, 0.002, 0.7)
    assert seen["mapping"] == {"circle": "square"}


# ---- training: a time limit and a cancel --------------------------------------------------------------------------


def _sleeps(seconds, on_epoch=None):  # a training that hangs (module level: it runs in a spawned process)
    time.sleep(seconds)
    return "finished"


def test_a_hung_training_is_killed_at_its_time_limit_and_a_cancel_kills_it_at_once():
    from detector_al.model.training import TrainingCancelled, run_in_subprocess

    started = time.monotonic()
    with pytest.raises(TrainingCancelled, match="time limit of 2 s"):
        run_in_subprocess(_sleeps, 60, timeout_s=2)
    assert time.monotonic() - started < 20
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(TrainingCancelled, match="cancelled"):
        run_in_subprocess(_sleeps, 60, cancel=cancel)
    assert time.monotonic() - started < 20


def _niceness(on_epoch=None):  # the training process's niceness, as it sees it
    return os.nice(0)


def test_the_training_process_yields_the_cores_to_the_server():
    """The retraining's child runs ``RetrainConfig.niceness`` above the server (benchmarks/bench_predict_while_training.py
    measures what that saves /predict); at 0 it runs as the server does."""
    from detector_al.model.training import run_in_subprocess
    from detector_al.pipelines.retrain import RetrainConfig

    mine, step = os.nice(0), RetrainConfig().niceness
    assert step > 0
    assert run_in_subprocess(_niceness) == mine
    assert run_in_subprocess(_niceness, niceness=step) == min(mine + step, 19)


def test_cancel_endpoint_stops_the_running_job_and_a_queued_one(tmp_path, trained_weights):
    started = threading.Event()

    def job(job, report):  # a training that runs until cancelled
        started.set()
        if not job["cancel"].wait(30):
            return {}
        raise RuntimeError("killed")

    s = Settings(model_dir=tmp_path / "models", model_path=str(trained_weights))
    with TestClient(create_app(s, run_job=job)) as client:
        first = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).json()["training_job"]
        assert started.wait(10)
        second = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 2}}).json()["training_job"]
        assert client.post(f"/jobs/{second}/cancel").json() == {"job": second, "status": "cancelled"}
        assert client.post(f"/jobs/{first}/cancel").json() == {"job": first, "status": "cancelling"}
        store = client.app.state.backend.store
        deadline = time.time() + 10
        while time.time() < deadline and store.training_job(first)["status"] == "running":
            time.sleep(0.05)
        assert store.training_job(first)["status"] == store.training_job(second)["status"] == "cancelled"
        assert client.post(f"/jobs/{first}/cancel").status_code == 409  # finished: nothing to cancel
        assert client.post("/jobs/999/cancel").status_code == 404
        assert client.post("/jobs/abc/cancel").status_code == 422


# ---- bounded state ------------------------------------------------------------------------------------------------


def test_events_are_bounded(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    for _ in range(MAX_EVENTS + 250):
        store.record_event("PROJECT_UPDATED", 1, None, None)
    n = len(store.events(1))
    assert MAX_EVENTS <= n < MAX_EVENTS + 100


def test_old_training_folders_are_removed(tmp_path):
    from detector_al.pipelines.retrain import RetrainConfig, Retrainer

    for i in (1, 2, 3, 4, 10):
        (tmp_path / f"job-{i}").mkdir()
    Retrainer(None, None, None, None, None, tmp_path, RetrainConfig(keep_job_folders=3))._prune_job_folders()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job-10", "job-3", "job-4"]


def test_pils_bomb_check_stays_on_for_the_rest_of_the_process(sample_data):
    from detector_al.io.images import MAX_PIXELS, load_image

    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None and limit < MAX_PIXELS
    loaded = load_image(sample_data / "bad_inputs" / "huge.jpg", max_side=256)
    assert (loaded.width, loaded.height) == (5600, 5600)
    assert limit == Image.MAX_IMAGE_PIXELS


def test_big_images_between_pils_limit_and_ours_still_open(tmp_path, monkeypatch):
    from detector_al.io.images import load_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # stands in for PIL's limit: a 64x64 image is "a bomb"
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(path)
    assert load_image(path).width == 64
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_pils_limit_is_never_changed_while_a_big_image_opens(tmp_path, monkeypatch):
    """Other threads open images meanwhile (the backend's fetch pool, the inference thread): every ``Image.open`` in
    the process sees PIL's own limit, also while an image between PIL's limit and ours opens."""
    from detector_al.io import images

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    seen = []
    real_open = Image.open

    def spy(fp, *args, **kwargs):
        seen.append(Image.MAX_IMAGE_PIXELS)  # what another thread's open would see right now
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(images.Image, "open", spy)
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(path)
    assert images.load_image(path).width == 64 and images.needs_web_copy(path) is False
    assert seen and set(seen) == {1000}
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 63)  # above our limit too: refused, with the size
    with pytest.raises(images.ImageLoadError, match=r"image too large: 64x64 = 0 MP > 0 MP"):
        images.load_image(path)
    assert set(seen) == {1000}


# ---- one name per model ---------------------------------------------------------------------------------------


def test_a_name_another_registry_gave_the_same_weights_names_them(tmp_path, trained_weights):
    ours = ModelRegistry(tmp_path / "a")
    v = ours.add(trained_weights)
    assert names_same_weights("v7-" + digest_of(v), v)
    assert not names_same_weights("v8-deadbeef", v)  # other weights
    (tmp_path / "older.pt").write_bytes(b"older weights")
    older = ours.add(tmp_path / "older.pt")
    assert not names_same_weights(older, v)  # a project still on an older version of ours: never a rename
    assert not names_same_weights("detector-al", v)  # Label Studio's default version (the backend's title)
    assert not names_same_weights("detector-al", "untracked")  # two names without a digest are not the same weights
    assert digest_of("5518076f4d43") == "5518076f"  # a bare hash: what ingest named weights before


def test_serving_beyond_loopback_without_basic_auth_is_warned_about():
    assert exposure_warning(Settings(), "127.0.0.1") is None
    assert "without basic auth" in exposure_warning(Settings(), "0.0.0.0")
    assert exposure_warning(Settings(basic_auth_user="u", basic_auth_pass="p"), "0.0.0.0") is None
