"""Retraining decisions that need no server: the stable split, the latest annotation, promotion."""

from __future__ import annotations

from types import SimpleNamespace

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


def test_every_labeled_task_in_validation_still_gives_a_training_split(tmp_path):
    """It crashed: the copy went into a labels/train folder that nothing created."""
    from detector_al.pipelines.retrain_dataset import fill_empty_train_split, write_labels

    for t in VALIDATION_TASKS_UNDER_40[:3]:
        (tmp_path / "images" / "val").mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / "val" / f"task{t}.jpg").write_bytes(b"jpg")
        write_labels(tmp_path / "labels" / "val" / f"task{t}.txt", np.array([[0.1, 0.1, 0.5, 0.5]]), np.array([1]))
    assert fill_empty_train_split(tmp_path) == 3
    for t in VALIDATION_TASKS_UNDER_40[:3]:
        assert (tmp_path / "images" / "train" / f"task{t}.jpg").read_bytes() == b"jpg"
        assert (tmp_path / "labels" / "train" / f"task{t}.txt").read_text().startswith("1 0.300000 0.300000")


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


class _LabelStudioWrites:
    """The Label Studio calls re-scoring makes, recorded (the real ones run in tests/integration)."""

    def __init__(self, tasks) -> None:
        self.url, self.api_key, self.created, self.project = "http://ls.invalid", "", {}, {}
        self.ls = SimpleNamespace(
            tasks=SimpleNamespace(list=lambda project, fields: tasks, update=lambda id, data: None),
            projects=SimpleNamespace(
                import_predictions=lambda id, request: self.created.update({r["task"]: r for r in request}),
                get=lambda id: SimpleNamespace(sampling="Uncertainty sampling", model_version="old"),
                update=lambda id, **kw: self.project.update(kw),
            ),
            predictions=SimpleNamespace(list=lambda project: []),
        )


def test_a_cold_rescoring_covers_the_labeled_images_as_the_new_model_embeds_them(sample_data, tmp_path):
    """After a retraining the cold batch stays away from the labeled images' clusters in the *new* model's space
    (their stored embeddings come from older models), and no labeled task gets a prediction or a queue place."""
    from detector_al.label_studio.config import parse_label_config
    from detector_al.label_studio.publish import publish_version
    from detector_al.model.detector import Detector
    from detector_al.pipelines.retrain import RetrainConfig, Retrainer
    from detector_al.queue.build import QUERY, cold_start_batch
    from detector_al.serving.service import PredictionService, ServiceConfig
    from detector_al.state.registry import ModelRegistry
    from detector_al.state.store import Store

    detector = Detector.load("yolov8n.yaml", imgsz=128)  # a new project's model before any training: cold
    store = Store(tmp_path / "store.sqlite3")
    service = PredictionService(detector, store, ServiceConfig(local_files_root=sample_data))
    budget = 3
    retrainer = Retrainer(
        service, ModelRegistry(tmp_path / "models"), store, None, None, tmp_path, RetrainConfig(budget=budget)
    )
    names = sorted(p.name for p in (sample_data / "images" / "pool").glob("*.jpg"))[:15]

    def task(i, name):
        return SimpleNamespace(id=i, data={"image": f"/data/local-files/?d=images/pool/{name}"})

    unlabeled = [task(i, n) for i, n in enumerate(names)]
    labeled = [task(100 + i, n) for i, n in enumerate(names[:6:2])]  # copies of three pool images: covered
    for t in labeled:
        t.annotations = [{"id": t.id, "result": []}]
    skipped = task(200, names[1])  # a skip is no label: the task is re-scored
    skipped.annotations = [{"id": 200, "result": [], "was_cancelled": True}]
    unlabeled.append(skipped)
    mapping = {"0": "circle", "1": "square", "2": "star"}  # an 80-class head: map three of its classes
    target = parse_label_config((sample_data / "label_config.xml").read_text(), detector.names, mapping)
    client = _LabelStudioWrites(unlabeled + labeled)

    scored, queue, rows = retrainer._rescore(client, 1, target, detector, 1)
    publish_version(client.ls, store, 1, detector.version, rows)
    retrainer._record(client, 1, scored, queue, 1)

    assert set(client.created) == {t.id for t in unlabeled}
    assert client.project == {"model_version": detector.version}  # switched once every prediction was written
    rows = {r["task_id"]: r for r in store.predictions(1)}
    assert set(rows) == {t.id for t in unlabeled}
    queued = [r["task_id"] for r in store.predictions(1) if r["decision"] == QUERY]  # in queue order
    preds = list(detector.predict([str(sample_data / "images" / "pool" / n) for n in [*names, names[1]]]))
    emb = np.stack([p.embedding for p in preds])
    top = np.array([rows[t.id]["max_confidence"] for t in unlabeled])
    accepted = np.zeros(len(unlabeled), bool)
    expected = [unlabeled[i].id for i in cold_start_batch(top, accepted, emb, budget, emb[:6:2])]
    uncovered = [unlabeled[i].id for i in cold_start_batch(top, accepted, emb, budget, None)]
    assert expected != uncovered, "the test needs labeled images that change the cold batch"
    assert queued == expected
