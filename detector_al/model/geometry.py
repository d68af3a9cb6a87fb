"""Box geometry shared by the policy, the strategies and the experiment: the one IoU, the one box matching."""

from __future__ import annotations

import numpy as np

from detector_al.model.predictions import Detections


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of ``xyxy`` boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_boxes(a: np.ndarray, b: np.ndarray, iou: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one pairs ``(i, j)`` of ``xyxy`` boxes ``a[i]``, ``b[j]``, greedy by descending IoU >= ``iou``."""
    if len(a) == 0 or len(b) == 0:
        return []
    m = box_iou(np.asarray(a, np.float64), np.asarray(b, np.float64))
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-m, axis=None, kind="stable"):
        i, j = divmod(int(flat), m.shape[1])
        if m[i, j] < iou:
            break
        if i in used_a or j in used_b:
            continue
        pairs.append((i, j))
        used_a.add(i)
        used_b.add(j)
    return pairs


def same_class_matches(boxes: Detections, truth: Detections, iou: float = 0.5) -> int:
    """How many of ``boxes`` are right: matched one to one (:func:`match_boxes`) to a true box of their class."""
    return sum(int(boxes.class_id[i] == truth.class_id[j]) for i, j in match_boxes(boxes.xyxy, truth.xyxy, iou))
