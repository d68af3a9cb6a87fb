"""A retraining's dataset and its rules: which tasks validate, when a candidate may be judged and promoted, how many
pseudo-labels join, labels per class, and the YOLO files the training reads.

**The promotion rule.** A candidate is judged only on human labels it was not trained on: the validation split
(:func:`in_validation`, about one labeled task in five, chosen by task id, so a task never moves between splits).
Until that split holds ``min_val_images`` images there is nothing fair to judge on: the job stops before training,
saying how many more labels it needs, and the serving model stays (:func:`check_splits`: the job ends ``waiting``,
not failed). There is always a serving model (the backend starts from weights), so a project's first candidate is
held to the same rule. Once judged, the candidate is promoted if it is not worse than the serving model on the same
images, within the noise of a small split (:func:`should_promote`).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from pathlib import Path

import numpy as np

from detector_al.io.files import atomic_write
from detector_al.io.yolo_format import yolo_lines
from detector_al.label_studio.regions import from_label_studio_regions
from detector_al.pipelines.job_control import JobWaiting

VALIDATION_SHARE = 5
"""One task in ``VALIDATION_SHARE`` (by the hash of its id) validates."""


def in_validation(task_id: int) -> bool:
    """``sha256(str(task_id)) mod 5 == 0``: about 20 % of tasks, fixed for ever."""
    return int(hashlib.sha256(str(task_id).encode()).hexdigest(), 16) % VALIDATION_SHARE == 0


def should_promote(new: dict, serving: dict, n_images: int, tolerance: float = 0.005) -> bool:
    """``new["map50_95"] >= serving["map50_95"] - (tolerance + 0.05 / sqrt(max(n_images, 1)))``."""
    margin = tolerance + 0.05 / math.sqrt(max(n_images, 1))
    return new["map50_95"] >= serving["map50_95"] - margin


def promotion_rule(min_val_images: int = 3, tolerance: float = 0.005) -> str:
    """The promotion rule in one sentence, as the dashboard and each job's result state it."""
    return (
        "A candidate is judged only on the human validation split (about 1 labeled task in 5, chosen by task id, "
        f"never trained on), against the serving model on the same n images: promoted if its mAP50-95 >= the "
        f"serving model's - ({tolerance:g} + 0.05 / sqrt(n)). Until that split holds {min_val_images} images, "
        "Start Training says how many more labels it needs and the serving model stays."
    )


class TooFewLabels(JobWaiting, ValueError):
    """The project has too few labels, or too few in one split, to train a candidate and judge it fairly yet."""


def check_splits(n_labeled: int, n_train: int, n_val: int, min_labeled: int, min_val_images: int, project: int) -> None:
    """Refuse a training that could not be judged fairly, saying what to label (see the module docstring).

    Raises:
        TooFewLabels: too few labels, too few of them in the validation split, or none in the training split.
    """
    if n_labeled < min_labeled:
        raise TooFewLabels(
            f"only {n_labeled} labeled tasks in project {project}; label at least {min_labeled} before training"
        )
    if n_val < min_val_images:
        more = (min_val_images - n_val) * VALIDATION_SHARE
        raise TooFewLabels(
            f"Label about {more} more tasks in project {project}, then train again (Start Training, or the next "
            f"TRAIN_EVERY annotations): {n_val} of its {n_labeled} labeled tasks are in the validation split, and a "
            f"new model is judged only on labels it was not trained on: {min_val_images} are needed there (about 1 "
            f"labeled task in {VALIDATION_SHARE} goes there, by task id). The serving model stays meanwhile"
        )
    if n_train == 0:
        raise TooFewLabels(
            f"project {project}: every labeled task is in the validation split, so there is nothing to train on "
            "that the judgement would not use; label a few more tasks"
        )


def pseudo_label_cap(ratio: float | None, n_train: int) -> int | None:
    """How many CEAL pseudo-labelled images join a round: ``floor(ratio x n_train)`` (``n_train``: the human
    training images), None for no cap (``ratio`` None or negative)."""
    if ratio is None or ratio < 0:
        return None
    return math.floor(ratio * n_train)


def class_counts(labeled, target, n_classes: int) -> list[int]:
    """Human boxes per model class over the labeled tasks (``(task, result)`` pairs or objects with ``result``;
    a rare class that is missing shows as 0)."""
    counts = np.zeros(n_classes, np.int64)
    for item in labeled:
        result = item.result if hasattr(item, "result") else item[1]
        _, classes = from_label_studio_regions(result, target)
        np.add.at(counts, np.asarray(classes, np.int64), 1)
    return counts.tolist()


def place_file(src: Path, dst: Path, own: bool = False) -> None:
    """Put ``src`` at ``dst``: a symbolic link, or with ``own`` a file of the dataset's own (a hard link, else a copy),
    for an image of the bounded image cache, which may evict ``src`` while the training still reads ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        if own:
            os.link(src, dst)
        else:
            os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_labels(path: Path, boxes: np.ndarray, classes: np.ndarray) -> None:
    """YOLO label file from normalised ``xyxy`` boxes."""
    lines = yolo_lines(boxes, classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))
