"""The one predictions structure every part of detector-al speaks.

An :class:`ImagePredictions` holds, for one input image, everything the adapter produces: the post-NMS
detections of the image (and of its horizontal flip, mapped back), the per-anchor class probabilities
of both views aligned anchor by anchor, the pyramid level of every anchor, and an image embedding.
Arrays are validated on construction, so a shape mistake fails where it is made, not three modules
later. Unreadable inputs yield a record with ``error`` set and empty arrays.

Example:
    >>> import numpy as np
    >>> d = Detections(xyxy=np.array([[1, 2, 11, 12]], np.float32), confidence=np.array([0.9], np.float32),
    ...                class_id=np.array([0]))
    >>> len(d)
    1
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _check(name: str, arr: np.ndarray, ndim: int, dtype, shape0: int | None = None, shape1: int | None = None):
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {arr.shape}")
    if shape0 is not None and arr.shape[0] != shape0:
        raise ValueError(f"{name}: expected {shape0} rows, got shape {arr.shape}")
    if shape1 is not None and arr.shape[1] != shape1:
        raise ValueError(f"{name}: expected {shape1} columns, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=dtype)


@dataclass
class Detections:
    """Post-NMS boxes of one image, in pixels of the original (EXIF-upright) image.

    Attributes:
        xyxy: (N, 4) float32 corners ``x1, y1, x2, y2``.
        confidence: (N,) float32 class score of each box.
        class_id: (N,) int64 model class index of each box.
        anchor: (N,) int64 index of the anchor that produced each box (into the per-anchor arrays), or -1.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    anchor: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.xyxy = _check("xyxy", np.asarray(self.xyxy).reshape(-1, 4), 2, np.float32, shape1=4)
        n = len(self.xyxy)
        self.confidence = _check("confidence", np.asarray(self.confidence), 1, np.float32, n)
        self.class_id = _check("class_id", np.asarray(self.class_id), 1, np.int64, n)
        anchor = np.full(n, -1) if self.anchor is None else np.asarray(self.anchor)
        self.anchor = _check("anchor", anchor, 1, np.int64, n)

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> Detections:
        """Select boxes with a boolean mask, an index array or a slice."""
        return Detections(self.xyxy[index], self.confidence[index], self.class_id[index], self.anchor[index])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def to_records(self, names: tuple[str, ...] | list[str]) -> list[dict]:
        """JSON-ready list of ``{"xyxy", "confidence", "class_id", "label"}`` dicts."""
        return [
            {
                "xyxy": [round(float(v), 2) for v in box],
                "confidence": round(float(c), 4),
                "class_id": int(k),
                "label": names[int(k)] if 0 <= int(k) < len(names) else str(int(k)),
            }
            for box, c, k in zip(self.xyxy, self.confidence, self.class_id, strict=True)
        ]


@dataclass
class ImagePredictions:
    """Everything the adapter knows about one image.

    Attributes:
        source: file path (as given) or a caller's name for an in-memory array.
        width: original image width in pixels (after EXIF rotation).
        height: original image height in pixels (after EXIF rotation).
        detections: post-NMS boxes of the image.
        detections_flip: post-NMS boxes of the horizontally flipped image, mapped back onto the image; None when only
            the image itself was run (one view: :attr:`has_flip` is False).
        probs: (A, C) per-anchor class probabilities (sigmoid scores) of the image, before NMS.
        probs_flip: (A, C) the same for the flipped image, re-indexed so that row i is anchor i's place; None with
            one view.
        level: (A,) pyramid level (0 = finest stride) of every anchor.
        anchor_boxes: (A, 4) every anchor's predicted box (``xyxy``, original pixels) in the image's own view.
        embedding: (D,) L2-normalised image embedding (global-average-pooled neck features of the image itself).
        error: why the image could not be processed; when set, every array is empty.
    """

    source: str
    width: int = 0
    height: int = 0
    detections: Detections = field(default_factory=Detections.empty)
    detections_flip: Detections | None = field(default_factory=Detections.empty)
    probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    probs_flip: np.ndarray | None = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    level: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    anchor_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    error: str | None = None

    def __post_init__(self) -> None:
        self.probs = _check("probs", np.asarray(self.probs), 2, np.float32)
        a, c = self.probs.shape
        if (self.probs_flip is None) != (self.detections_flip is None):
            raise ValueError("a one-view prediction has neither probs_flip nor detections_flip")
        if self.probs_flip is not None:
            self.probs_flip = _check("probs_flip", np.asarray(self.probs_flip), 2, np.float32, a, c)
        self.level = _check("level", np.asarray(self.level), 1, np.int64, a)
        self.anchor_boxes = _check("anchor_boxes", np.asarray(self.anchor_boxes), 2, np.float32, a, 4)
        self.embedding = _check("embedding", np.asarray(self.embedding), 1, np.float32)
        if self.error is None and a == 0:
            raise ValueError("ImagePredictions without an error needs per-anchor probabilities")

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def has_flip(self) -> bool:
        """Whether the flipped view was run (strategies with ``views = 2`` and CEAL's flip test need it)."""
        return self.probs_flip is not None

    @classmethod
    def failed(cls, source: str, error: str) -> ImagePredictions:
        """The record of an image that could not be read or predicted."""
        return cls(source=source, error=error)

    def to_json(self, names: tuple[str, ...] | list[str]) -> dict:
        """JSON-ready summary (no per-anchor arrays): the form of one ``predict`` output line."""
        if not self.ok:
            return {"image": self.source, "error": self.error, "detections": []}
        return {
            "image": self.source,
            "width": self.width,
            "height": self.height,
            "detections": self.detections.to_records(names),
        }
