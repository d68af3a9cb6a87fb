"""Retraining decisions that need no server: the stable split, the latest annotation, promotion."""

from __future__ import annotations

import numpy as np
import pytest

from detector_al.label_studio.annotations import latest_label
from detector_al.pipelines.retrain_dataset import in_validation, should_promote

VALIDATION_TASKS_UNDER_40 = [0, 1, 14, 18, 24, 31, 39]  # sha256(str(t)) mod 5 == 0


def test_split_is_stable_and_about_a_fifth():
    share = sum(in_validation(t) for t in range(5000)) / 5000
    assert 0.17 < share < 0.23
    # fixed for ever: the first validation tasks, computed once (a changed rule would move tasks between splits)
    assert [t for t in range(40) if in_validation(t)] == VALIDATION_TASKS_UNDER_40


@pytest.mark.parametrize(
    ("labeled", "train", "val", "error"),
    [
        (1, 1, 0, "label at least 2"),
        (6, 4, 2, "Label about 5 more tasks"),  # 2 of the 3 validation images needed: judged on nothing it trained on
        (6, 6, 0, "Label about 15 more tasks"),
        (3, 0, 3, "every labeled task is in the validation split"),  # it would train on its judges
        (6, 3, 3, None),
    ],
)
def test_a_training_starts_only_when_it_can_be_judged_on_held_out_labels(labeled, train, val, error):
    from detector_al.pipelines.retrain_dataset import check_splits

    if error is None:
        check_splits(labeled, train, val, min_labeled=2, min_val_images=3, project=5)
        return
    with pytest.raises(ValueError, match=error):
        check_splits(labeled, train, val, min_labeled=2, min_val_images=3, project=5)


@pytest.mark.parametrize(
    ("ratio", "n_train", "cap"), [(2.0, 3, 6), (0.5, 3, 1), (0.0, 9, 0), (None, 3, None), (-1, 3, None)]
)
def test_pseudo_labels_per_round_are_capped_relative_to_the_human_labels(ratio, n_train, cap):
    from detector_al.pipelines.retrain_dataset import pseudo_label_cap

    assert pseudo_label_cap(ratio, n_train) == cap


def test_an_own_dataset_file_survives_the_cache_evicting_its_source(tmp_path):
    """A training set's image from the bounded cache is the dataset's own file (a hard link, else a copy): the cache
    may evict its copy while ultralytics reads the dataset (a symbolic link would break, and be skipped silently)."""
    from detector_al.pipelines.retrain_dataset import place_file

    src = tmp_path / "cache" / "d__a.jpg"
    src.parent.mkdir()
    src.write_bytes(b"jpg")
    place_file(src, tmp_path / "own" / "a.jpg", own=True)
    place_file(src, tmp_path / "link" / "a.jpg")
    src.unlink()  # evicted
    assert (tmp_path / "own" / "a.jpg").read_bytes() == b"jpg"
    assert not (tmp_path / "link" / "a.jpg").exists()  # what a symbolic link into the cache becomes


class Task:
    def __init__(self, annotations):
        self.annotations = annotations


def test_latest_non_cancelled_annotation_wins():
    anns = [
        {"id": 1, "updated_at": "2026-01-01T00:00:00", "result": ["old"]},
        {"id": 2, "updated_at": "2026-01-03T00:00:00", "result": ["cancelled"], "was_cancelled": True},
        {"id": 3, "updated_at": "2026-01-02T00:00:00", "result": ["new"]},
    ]
    assert latest_label(Task(anns)) == ["new"]
    assert latest_label(Task([anns[1]])) is None
    assert latest_label(Task([])) is None


@pytest.mark.parametrize(
    ("new", "old", "n", "promote"),
    [
        (0.30, 0.30, 100, True),  # equal is not worse
        (0.29, 0.30, 10000, False),  # clearly worse on a large split
        (0.296, 0.30, 10000, True),  # within the base tolerance
        (0.28, 0.30, 4, True),  # within the noise of 4 images
        (0.20, 0.30, 4, False),  # beyond it
    ],
)
def test_promotion_rule(new, old, n, promote):
    assert should_promote({"map50_95": new}, {"map50_95": old}, n) is promote


def test_a_failing_training_subprocess_raises_in_the_parent(tmp_path):
    from detector_al.model.training import TrainConfig, train_in_subprocess

    bad = tmp_path / "data.yaml"
    bad.write_text("train: nowhere\nval: nowhere\nnames:\n  0: a\n")
    with pytest.raises(RuntimeError, match="training failed"):
        train_in_subprocess(bad, tmp_path / "run", TrainConfig(epochs=1, imgsz=64))


def test_a_cold_rescoring_covers_the_labeled_images_as_the_new_model_embeds_them(sample_data, tmp_path):
    """After a retraining the cold batch stays away from the labeled images' clusters in the *new* model's space
    (their stored embeddings come from older models), and no labeled task gets a prediction or a queue place. The
    re-scored tasks keep only the new version's prediction; the labeled ones keep what they were shown."""
    from detector_al.label_studio.config import parse_label_config
    from detector_al.model.detector import Detector
    from detector_al.pipelines.job_control import JobControl
    from detector_al.pipelines.retrain import RetrainConfig, Retrainer
    from detector_al.pipelines.retrain_pool import LabeledTask, TaskImages
    from detector_al.queue.build import QUERY, cold_start_batch
    from detector_al.serving.service import PredictionService, ServiceConfig
    from detector_al.state.registry import ModelRegistry
    from detector_al.state.store import Store
    from tests.fake_label_studio import FakeLabelStudio

    detector = Detector.load("yolov8n.yaml", imgsz=128)  # a new project's model before any training: cold
    store = Store(tmp_path / "store.sqlite3")
    service = PredictionService(detector, store, ServiceConfig(local_files_root=sample_data))
    budget = 3
    retrainer = Retrainer(
        service, ModelRegistry(tmp_path / "models"), store, None, None, tmp_path, RetrainConfig(budget=budget)
    )
    promoted = []
    retrainer._promote = lambda candidate, project, round_index: promoted.append(candidate.version)
    names = sorted(p.name for p in (sample_data / "images" / "pool").glob("*.jpg"))[:15]

    def task(i, name, **kw):
        old = [{"id": 10_000 + i, "model_version": "v-old", "score": 0.3, "result": []}]
        return {"id": i, "data": {"image": f"/data/local-files/?d=images/pool/{name}"}, "predictions": old, **kw}

    unlabeled = [task(i, n) for i, n in enumerate(names)]
    labeled = [task(100 + i, n, annotations=[{"id": i, "result": []}]) for i, n in enumerate(names[:6:2])]  # covered
    skipped = task(200, names[1], annotations=[{"id": 200, "result": [], "was_cancelled": True}])  # not a label
    unlabeled.append(skipped)
    mapping = {"0": "circle", "1": "square", "2": "star"}  # an 80-class head: map three of its classes
    target = parse_label_config((sample_data / "label_config.xml").read_text(), detector.names, mapping)
    fake = FakeLabelStudio(unlabeled + labeled, model_version="v-old")
    kept = [LabeledTask(t["id"], t["data"], [], ("v-old",)) for t in labeled]

    out = retrainer._serve(
        fake, 1, TaskImages(fake, target, service.config), detector, detector, kept, 1, JobControl(), tmp_path
    )

    assert out["rescored"] == len(unlabeled) and promoted == [detector.version]
    assert fake.project.model_version == detector.version  # switched once every prediction was written
    assert all(fake.versions(t["id"]) == [detector.version] for t in unlabeled)  # one model's boxes
    assert all(fake.versions(t["id"]) == ["v-old"] for t in labeled)  # what their annotators were shown
    assert fake.calls["actions.delete_tasks_predictions"] == 1  # the older predictions went in bulk
    rows = {r["task_id"]: r for r in store.predictions(1)}
    assert set(rows) == {t["id"] for t in unlabeled}
    queued = [r["task_id"] for r in store.predictions(1) if r["decision"] == QUERY]  # in queue order
    preds = list(detector.predict([str(sample_data / "images" / "pool" / n) for n in [*names, names[1]]]))
    emb = np.stack([p.embedding for p in preds])
    top = np.array([rows[t["id"]]["max_confidence"] for t in unlabeled])
    accepted = np.zeros(len(unlabeled), bool)
    expected = [unlabeled[i]["id"] for i in cold_start_batch(top, accepted, emb, budget, emb[:6:2])]
    uncovered = [unlabeled[i]["id"] for i in cold_start_batch(top, accepted, emb, budget, None)]
    assert expected != uncovered, "the test needs labeled images that change the cold batch"
    assert queued == expected


def test_a_cancel_while_collecting_the_labels_stops_the_job_and_promotes_nothing(detector, sample_data, tmp_path):
    """Cancel reaches a job in any phase: here while Label Studio is slow to list the labeled tasks (before, only a
    running training process could be cancelled, and the job went on to train and promote)."""
    import threading
    import time

    from detector_al.pipelines.retrain import Retrainer
    from detector_al.serving.service import PredictionService
    from detector_al.serving.worker import TrainingWorker
    from detector_al.state.registry import ModelRegistry
    from detector_al.state.store import Store
    from tests.fake_label_studio import FakeLabelStudio

    tasks = [{"id": i, "data": {"image": "x.jpg"}, "annotations": [{"id": i, "result": []}]} for i in range(1, 20)]
    fake = FakeLabelStudio(tasks)
    listing = threading.Event()
    real_list = fake.ls.tasks.list

    def slow_list(**kw):
        listing.set()
        time.sleep(1.0)
        return real_list(**kw)

    fake.ls.tasks.list = slow_list
    store = Store(tmp_path / "store.sqlite3")
    registry = ModelRegistry(tmp_path / "models")
    service = PredictionService(detector, store)
    config = (sample_data / "label_config.xml").read_text()
    retrainer = Retrainer(service, registry, store, lambda: fake, lambda p: config, tmp_path / "training")
    worker = TrainingWorker(store, retrainer, poll_s=0.05)
    job, _ = store.enqueue_training(3, "START_TRAINING")
    worker.start()
    try:
        assert listing.wait(30)
        assert worker.state()["phase"] == "collecting annotations"
        assert worker.cancel(job) == ("cancelling", True)
        deadline = time.time() + 30
        while store.training_job(job)["status"] == "running" and time.time() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    assert store.training_job(job)["status"] == "cancelled", store.training_job(job)
    assert fake.calls["tasks.list"] == 2  # the skips, the first page of labels: nothing fetched, trained or written
    assert fake.calls["projects.import_predictions"] == 0 and not (tmp_path / "training" / f"job-{job}").exists()
    assert service.model_version == detector.version and registry.versions() == []


def test_the_time_limit_counts_from_the_job_start():
    import time

    from detector_al.pipelines.job_control import JobCancelled, JobControl

    control = JobControl(None, 0.2)
    control.check()
    assert 0 < control.remaining() <= 0.2
    time.sleep(0.25)
    assert control.remaining() == 0.0
    with pytest.raises(JobCancelled, match=r"time limit of 0.2 s \(TRAIN_TIMEOUT_S\)"):
        control.check()


@pytest.mark.parametrize(("base", "expected"), [(None, "serving"), ("pretrained", "pretrained"), ("w.pt", "w.pt")])
def test_a_retraining_starts_from_the_serving_model_unless_train_base_names_another(
    tmp_path, monkeypatch, base, expected
):
    """TRAIN_BASE: unset, each round fine-tunes the serving weights; set, it starts from that base (as `train --base`)."""
    from types import SimpleNamespace

    from detector_al.pipelines import retrain
    from detector_al.pipelines.job_control import JobControl
    from detector_al.pipelines.retrain import RetrainConfig, Retrainer

    seen = {}
    monkeypatch.setattr(retrain, "run_in_subprocess", lambda fn, data, out, cfg, *a, **kw: seen.update(cfg=cfg, **kw))
    registry = SimpleNamespace(path=lambda version: tmp_path / f"{version}.pt")
    detector = SimpleNamespace(version="v3", imgsz=128)
    r = Retrainer(None, registry, None, None, None, tmp_path, RetrainConfig(base=base))
    r._train(detector, tmp_path, lambda **kw: None, JobControl())
    assert seen["cfg"].base == (str(tmp_path / "v3.pt") if expected == "serving" else expected)
    assert seen["niceness"] == RetrainConfig().niceness > 0  # the server's requests come first
