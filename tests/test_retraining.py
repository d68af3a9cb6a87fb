"""Retraining decisions that need no server: the stable split, the latest annotation, promotion."""

from __future__ import annotations

import numpy as np
import pytest

from detector_al.jobs.retraining import in_validation, latest_annotation, should_promote

VALIDATION_TASKS_UNDER_40 = [0, 1, 14, 18, 24, 31, 39]  # sha256(str(t)) mod 5 == 0


def test_split_is_stable_and_about_a_fifth():
    share = sum(in_validation(t) for t in range(5000)) / 5000
    assert 0.17 < share < 0.23
    # fixed for ever: the first validation tasks, computed once (a changed rule would move tasks between splits)
    assert [t for t in range(40) if in_validation(t)] == VALIDATION_TASKS_UNDER_40


def test_every_labeled_task_in_validation_still_gives_a_training_split(tmp_path):
    """It crashed: the copy went into a labels/train folder that nothing created."""
    from detector_al.jobs.retraining import _write_labels, fill_empty_train_split

    for t in VALIDATION_TASKS_UNDER_40[:3]:
        (tmp_path / "images" / "val").mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / "val" / f"task{t}.jpg").write_bytes(b"jpg")
        _write_labels(tmp_path / "labels" / "val" / f"task{t}.txt", np.array([[0.1, 0.1, 0.5, 0.5]]), np.array([1]))
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
    assert latest_annotation(Task(anns)) == ["new"]
    assert latest_annotation(Task([anns[1]])) is None
    assert latest_annotation(Task([])) is None


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
    from detector_al.jobs.training import TrainConfig, train_in_subprocess

    bad = tmp_path / "data.yaml"
    bad.write_text("train: nowhere\nval: nowhere\nnames:\n  0: a\n")
    with pytest.raises(RuntimeError, match="training failed"):
        train_in_subprocess(bad, tmp_path / "run", TrainConfig(epochs=1, imgsz=64))
