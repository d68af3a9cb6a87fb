"""YOLO label files: ``class cx cy w h`` per line, normalised to the image size. The one place for the math.

Example:
    >>> yolo_lines([[10, 20, 30, 60]], [2], 100, 200)
    ['2 0.200000 0.200000 0.200000 0.200000']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detector_al.model.predictions import Detections


def yolo_lines(xyxy, class_id, width: float = 1.0, height: float = 1.0) -> list[str]:
    """One line per box of pixel ``xyxy`` corners in a ``width`` x ``height`` image (1 x 1: already normalised).

    ``cx = (x1 + x2) / 2 / width``, ``cy = (y1 + y2) / 2 / height``, ``w = (x2 - x1) / width``,
    ``h = (y2 - y1) / height``; boxes of zero or negative size are dropped.
    """
    out = []
    for (x1, y1, x2, y2), c in zip(np.asarray(xyxy, np.float64).reshape(-1, 4), class_id, strict=True):
        if x2 > x1 and y2 > y1:
            out.append(
                f"{int(c)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"
            )
    return out


def read_yolo_labels(path: Path, width: int, height: int) -> Detections:
    """A YOLO label file as :class:`Detections` in pixels (confidence 1; empty when the file is absent)."""
    return parse_yolo_lines(path.read_text().splitlines() if path.is_file() else [], width, height)


def parse_yolo_lines(lines: list[str], width: int, height: int) -> Detections:
    """YOLO label lines as :class:`Detections` in pixels of a ``width`` x ``height`` image (confidence 1)."""
    rows = [line.split() for line in lines if line.strip()]
    if not rows:
        return Detections.empty()
    a = np.array([[float(x) for x in r[1:5]] for r in rows], np.float64)
    cx, cy, w, h = a[:, 0] * width, a[:, 1] * height, a[:, 2] * width, a[:, 3] * height
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    return Detections(xyxy, np.ones(len(rows)), np.array([int(r[0]) for r in rows]))


def class_counts(folder: Path, n_classes: int) -> np.ndarray:
    """Boxes per class in the YOLO label files under ``folder`` (lines with an unknown class are skipped)."""
    counts = np.zeros(n_classes)
    for f in folder.rglob("*.txt"):
        for line in f.read_text().splitlines():
            head = line.split()[:1]
            if head and head[0].isdigit() and int(head[0]) < n_classes:
                counts[int(head[0])] += 1
    return counts
