"""Hand-built predictions with known answers."""

from __future__ import annotations

import numpy as np

from detector_al.model.predictions import Detections, ImagePredictions

GRID = [(16, 16), (8, 8), (4, 4)]  # a 128 px input at strides 8, 16, 32


def levels(grid=GRID) -> np.ndarray:
    return np.concatenate([np.full(h * w, i) for i, (h, w) in enumerate(grid)])


def background(n_classes: int = 3, grid=GRID, level_p: float = 0.01, seed: int = 0, noise: float = 0.0):
    """(A, C) probabilities of an empty scene, optionally with small random jitter."""
    rng = np.random.default_rng(seed)
    a = sum(h * w for h, w in grid)
    p = np.full((a, n_classes), level_p)
    if noise:
        p = np.clip(p + rng.uniform(-noise, noise, p.shape), 0.0, 1.0)
    return p


def pred(p1, p2, lvl=None, dets: Detections | None = None, boxes=None, source="img") -> ImagePredictions:
    lvl = levels() if lvl is None else lvl
    a = len(p1)
    return ImagePredictions(
        source=source,
        width=128,
        height=128,
        detections=dets or Detections.empty(),
        probs=p1,
        probs_flip=p2,
        level=lvl,
        anchor_boxes=np.zeros((a, 4), np.float32) if boxes is None else boxes,
        embedding=np.ones(4, np.float32) / 2,
    )
