"""A retraining's dataset and its rules: which tasks validate, when a candidate is promoted, labels per class, and
the YOLO files the training reads."""

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


def in_validation(task_id: int) -> bool:
    """``sha256(str(task_id)) mod 5 == 0``: about 20 % of tasks, fixed for ever."""
    return int(hashlib.sha256(str(task_id).encode()).hexdigest(), 16) % 5 == 0


def should_promote(new: dict, serving: dict, n_images: int, tolerance: float = 0.005) -> bool:
    """``new["map50_95"] >= serving["map50_95"] - (tolerance + 0.05 / sqrt(max(n_images, 1)))``."""
    margin = tolerance + 0.05 / math.sqrt(max(n_images, 1))
    return new["map50_95"] >= serving["map50_95"] - margin


def class_counts(labeled, target, n_classes: int) -> list[int]:
    """Human boxes per model class over the labeled tasks (a rare class that is missing shows as 0)."""
    counts = np.zeros(n_classes, np.int64)
    for _, result in labeled:
        _, classes = from_label_studio_regions(result, target)
        np.add.at(counts, np.asarray(classes, np.int64), 1)
    return counts.tolist()


def link_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


def fill_empty_train_split(root: Path) -> int:
    """ultralytics needs a training image: when every labeled task fell in validation, train on those too.

    Returns how many images were added to ``images/train`` (with their ``labels/train`` files)."""
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    n = 0
    for p in sorted((root / "images" / "val").glob("*")):
        link_file(p, root / "images" / "train" / p.name)
        shutil.copyfile(root / "labels" / "val" / f"{p.stem}.txt", root / "labels" / "train" / f"{p.stem}.txt")
        n += 1
    return n


def write_labels(path: Path, boxes: np.ndarray, classes: np.ndarray) -> None:
    """YOLO label file from normalised ``xyxy`` boxes."""
    lines = yolo_lines(boxes, classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))
