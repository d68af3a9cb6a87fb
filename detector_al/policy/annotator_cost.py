"""What an annotator pays, in seconds: the actions that turn a pre-annotation into the truth, and their cost.

A pre-annotation's boxes are matched one to one to the true boxes, greedily by descending IoU (at least
``match_iou``, whatever the class; :func:`~detector_al.model.geometry.match_boxes`). Then, per image:

- ``draw``     = true boxes with no match (drawn from scratch),
- ``delete``   = shown boxes with no match,
- ``relabel``  = matched pairs whose classes differ (the class is changed),
- ``adjust``   = matched pairs with IoU below ``tight_iou`` (an edge or two dragged into place),
- ``verify``   = matched pairs of the right class at IoU >= ``tight_iou`` (looked at, left alone),
- ``images``   = 1 (every image is opened, looked over and submitted).

Without pre-annotations (plain Label Studio, the ``scratch`` arm) every true box is drawn: ``draw = len(truth)``.
An auto-accepted (CEAL) image that someone reviews costs ``review_image + verify * boxes``; unreviewed, nothing.

``seconds = images * look_image + draw * draw_box + adjust * adjust_box + delete * delete_box
+ relabel * change_class + verify * verify_box`` (:meth:`CostModel.seconds`).

The default seconds and where they come from (docs/annotator_time.md has the table):

- ``draw_box = 25.5``: drawing one tight box, the drawing step alone (Su, Deng and Fei-Fei 2012, as reported by
  Papadopoulos et al. 2017, "Extreme clicking"); their protocol adds 9.0 s + 7.8 s of quality and coverage checks
  (42.4 s in all), which we leave out: the conservative choice for a claim of savings;
- ``adjust_box = 7.0``: re-placing an existing box is taken as costly as a box from extreme clicking (7.0 s,
  Papadopoulos et al. 2017), a new box from four clicks: an upper bound for dragging edges;
- ``verify_box = 1.6``: a yes/no check of a machine box (Papadopoulos et al. 2016, "We don't need no
  bounding-boxes": about 1.6 s per verification; quoted, not re-checked against the paper here);
- ``delete_box = 2.0`` and ``change_class = 3.0``: a verification plus a click or a key (assumptions, no source);
- ``look_image = 3.0`` and ``review_image = 3.0``: opening, looking over and submitting one image (assumption).

Example:
    >>> import numpy as np
    >>> from detector_al.model.predictions import Detections
    >>> truth = Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.ones(2), np.array([0, 1]))
    >>> shown = Detections(np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.ones(2), np.array([0, 0]))
    >>> annotator_actions(shown, truth)
    Actions(images=1, draw=1, adjust=0, delete=1, relabel=0, verify=1)
    >>> round(CostModel().seconds(annotator_actions(shown, truth)), 1)
    32.1
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from detector_al.model.geometry import box_iou, match_boxes
from detector_al.model.predictions import Detections


@dataclass(frozen=True)
class Actions:
    """Counts of annotator actions over one or more images (they add up: ``a + b``)."""

    images: int = 0
    draw: int = 0
    adjust: int = 0
    delete: int = 0
    relabel: int = 0
    verify: int = 0

    def __add__(self, other: Actions) -> Actions:
        return Actions(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


ACTION_SECONDS = (
    ("images", "look_image"),
    ("draw", "draw_box"),
    ("adjust", "adjust_box"),
    ("delete", "delete_box"),
    ("relabel", "change_class"),
    ("verify", "verify_box"),
)
"""Each :class:`Actions` count and the :class:`CostModel` seconds it is priced at (the pairs of :meth:`CostModel.seconds`)."""


@dataclass(frozen=True)
class CostModel:
    """Seconds per annotator action (the module docstring gives each default's source)."""

    draw_box: float = 25.5
    adjust_box: float = 7.0
    delete_box: float = 2.0
    change_class: float = 3.0
    verify_box: float = 1.6
    look_image: float = 3.0
    review_image: float = 3.0

    def seconds(self, a: Actions) -> float:
        """``images * look_image + draw * draw_box + adjust * adjust_box + delete * delete_box + relabel *
        change_class + verify * verify_box``."""
        return (
            a.images * self.look_image
            + a.draw * self.draw_box
            + a.adjust * self.adjust_box
            + a.delete * self.delete_box
            + a.relabel * self.change_class
            + a.verify * self.verify_box
        )

    def review_seconds(self, images: int, boxes: int) -> float:
        """Reviewing auto-accepted images: ``images * review_image + boxes * verify_box``."""
        return images * self.review_image + boxes * self.verify_box

    @classmethod
    def from_file(cls, path: Path) -> CostModel:
        """A cost model from a JSON object of seconds (``{"draw_box": 35}``); unnamed actions keep their default.

        The file the backend exports (``detector-al cost-model``: :func:`~detector_al.signals.annotator_time.export`)
        holds them under ``"seconds"``, beside what they were fitted on: then only ``"seconds"`` is read.

        Raises:
            ValueError: an unknown action, or a value that is not a non-negative number.
        """
        raw = json.loads(Path(path).read_text())
        if isinstance(raw, dict) and isinstance(raw.get("seconds"), dict):
            raw = raw["seconds"]
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a JSON object of seconds per action is expected")
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown actions {sorted(unknown)}; known: {sorted(known)}")
        bad = {k: v for k, v in raw.items() if not isinstance(v, int | float) or isinstance(v, bool) or v < 0}
        if bad:
            raise ValueError(f"{path}: seconds must be non-negative numbers, got {bad}")
        return cls(**{k: float(v) for k, v in raw.items()})

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def annotator_actions(shown: Detections, truth: Detections, match_iou: float = 0.5, tight_iou: float = 0.7) -> Actions:
    """The actions that turn ``shown`` (a pre-annotation) into ``truth`` on one image (the module docstring)."""
    pairs = match_boxes(shown.xyxy, truth.xyxy, match_iou)
    iou = box_iou(shown.xyxy, truth.xyxy) if pairs else None
    relabel = adjust = verify = 0
    for i, j in pairs:
        wrong_class = shown.class_id[i] != truth.class_id[j]
        loose = iou[i, j] < tight_iou
        relabel += int(wrong_class)
        adjust += int(loose)
        verify += int(not wrong_class and not loose)
    return Actions(1, len(truth) - len(pairs), adjust, len(shown) - len(pairs), relabel, verify)


def scratch_actions(truth: Detections) -> Actions:
    """Labeling an image with no pre-annotation: every true box drawn."""
    return Actions(images=1, draw=len(truth))
