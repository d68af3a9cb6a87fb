"""Retraining decisions that need no server: the stable split, the latest annotation, promotion."""

from __future__ import annotations

import pytest

from detector_al.retraining import in_validation, latest_annotation, should_promote


def test_split_is_stable_and_about_a_fifth():
    share = sum(in_validation(t) for t in range(5000)) / 5000
    assert 0.17 < share < 0.23
    assert [in_validation(t) for t in range(50)] == [in_validation(t) for t in range(50)]


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
    from detector_al.training import TrainConfig, train_in_subprocess

    bad = tmp_path / "data.yaml"
    bad.write_text("train: nowhere\nval: nowhere\nnames:\n  0: a\n")
    with pytest.raises(RuntimeError, match="training failed"):
        train_in_subprocess(bad, tmp_path / "run", TrainConfig(epochs=1, imgsz=64))
