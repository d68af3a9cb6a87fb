"""Conversions between detections and Label Studio rectangle regions; the percent math lives only here.

Label Studio stores a rectangle as ``x, y, width, height`` in percent of the image size (top-left corner).

Example:
    >>> xyxy_to_percent([10, 20, 60, 70], 200, 100)
    (5.0, 20.0, 25.0, 50.0)
"""

from __future__ import annotations

import numpy as np

from detector_al.label_studio.config import RectangleTarget
from detector_al.model.predictions import Detections


def xyxy_to_percent(xyxy, width: int, height: int) -> tuple[float, float, float, float]:
    """Pixel corners -> ``(x, y, w, h)`` in percent: ``x = 100 x1 / W``, ``w = 100 (x2 - x1) / W``, same for y."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return (100.0 * x1 / width, 100.0 * y1 / height, 100.0 * (x2 - x1) / width, 100.0 * (y2 - y1) / height)


def percent_to_xyxy(x: float, y: float, w: float, h: float, width: int, height: int) -> np.ndarray:
    """Inverse of :func:`xyxy_to_percent`."""
    return np.array([x * width / 100.0, y * height / 100.0, (x + w) * width / 100.0, (y + h) * height / 100.0])


def to_label_studio_regions(dets: Detections, width: int, height: int, target: RectangleTarget) -> list[dict]:
    """Detections -> ``rectanglelabels`` regions (classes without a label are dropped)."""
    regions = []
    for i, (box, conf, cls) in enumerate(zip(dets.xyxy, dets.confidence, dets.class_id, strict=True)):
        label = target.class_to_label.get(int(cls))
        if label is None:
            continue
        x, y, w, h = xyxy_to_percent(box, width, height)
        regions.append(
            {
                "id": f"p{i}",
                "from_name": target.from_name,
                "to_name": target.to_name,
                "type": "rectanglelabels",
                "original_width": int(width),
                "original_height": int(height),
                "image_rotation": 0,
                "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]},
                "score": round(float(conf), 4),
            }
        )
    return regions


def from_label_studio_regions(result: list[dict], target: RectangleTarget) -> tuple[np.ndarray, np.ndarray]:
    """Annotation result -> (N, 4) boxes in *normalised* ``xyxy`` (0..1) and (N,) class ids.

    A rotated rectangle becomes the axis-aligned box around its four corners (Label Studio rotates about the
    top-left corner ``(x, y)``, in pixels, so the image size is needed; without it the region is skipped).
    Regions of other controls and labels with no model class are skipped.
    """
    l2c = target.label_to_class
    boxes, classes = [], []
    for r in result:
        if r.get("type") != "rectanglelabels" or r.get("from_name") != target.from_name:
            continue
        v = r.get("value", {})
        labels = v.get("rectanglelabels") or []
        if not labels or labels[0] not in l2c:
            continue
        box = percent_to_xyxy(v["x"], v["y"], v["width"], v["height"], 1, 1)
        angle = float(v.get("rotation") or 0.0)
        if angle:
            box = _rotated_bounds(v, angle, r.get("original_width"), r.get("original_height"))
            if box is None:
                continue
        boxes.append(np.clip(box, 0.0, 1.0))
        classes.append(l2c[labels[0]])
    return np.array(boxes, np.float64).reshape(-1, 4), np.array(classes, np.int64)


def _rotated_bounds(v: dict, angle_deg: float, width, height) -> np.ndarray | None:
    """Normalised ``xyxy`` bounds of a rectangle rotated by ``angle_deg`` (clockwise) about its top-left corner."""
    if not width or not height:
        return None
    x0, y0 = v["x"] * width / 100.0, v["y"] * height / 100.0
    w, h = v["width"] * width / 100.0, v["height"] * height / 100.0
    a = np.deg2rad(angle_deg)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = corners @ rot.T + [x0, y0]
    return np.array(
        [pts[:, 0].min() / width, pts[:, 1].min() / height, pts[:, 0].max() / width, pts[:, 1].max() / height]
    )
