"""Likely errors in human labels: where a trained model, confident, disagrees with the annotation.

Per labeled image, the model's boxes (``predicted``, confidence >= ``min_confidence``) are compared with the human
boxes (``labeled``), matched one to one greedily by IoU whatever the class (:func:`~detector_al.model.geometry.match_boxes`,
IoU >= ``located_iou`` for a match). Three kinds of likely error:

- ``overlooked``: a confident predicted box that matches no human box at IoU >= ``loose_iou`` (an object nobody
  boxed);
- ``swapped``: a matched pair whose classes differ (the model is confident of another class);
- ``located``: a confident predicted box whose best human box of its class overlaps it only loosely
  (``loose_iou <= IoU < located_iou``): a box drawn off the object.

The task's **error score** is the sum of the flagged boxes' confidences (0: nothing suspicious); reviewers see the
highest first. A flag on an image the model was trained on (``in_sample``) is weaker evidence: the model has seen
that label.

Example:
    >>> import numpy as np
    >>> human = Detections(np.array([[0, 0, 10, 10]]), np.ones(1), np.array([0]))
    >>> model = Detections(np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0.9, 0.8]), np.array([1, 0]))
    >>> e = find_label_errors(model, human)
    >>> (e.overlooked, e.swapped, e.located, round(e.score, 2))
    (1, 1, 0, 1.7)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector_al.model.geometry import box_iou, match_boxes
from detector_al.model.predictions import Detections


@dataclass(frozen=True)
class LabelErrors:
    overlooked: int = 0
    swapped: int = 0
    located: int = 0
    score: float = 0.0

    @property
    def kinds(self) -> dict[str, int]:
        return {"overlooked": self.overlooked, "swapped": self.swapped, "located": self.located}


def find_label_errors(
    predicted: Detections,
    labeled: Detections,
    min_confidence: float = 0.5,
    located_iou: float = 0.5,
    loose_iou: float = 0.1,
) -> LabelErrors:
    """The likely errors of one image's human boxes (the module docstring)."""
    confident = predicted[predicted.confidence >= min_confidence]
    if len(confident) == 0:
        return LabelErrors()
    pairs = match_boxes(confident.xyxy, labeled.xyxy, located_iou)
    matched = {i for i, _ in pairs}
    swapped = [i for i, j in pairs if confident.class_id[i] != labeled.class_id[j]]
    iou = box_iou(confident.xyxy, labeled.xyxy) if len(labeled) else np.zeros((len(confident), 0))
    overlooked, located = [], []
    for i in range(len(confident)):
        if i in matched:
            continue
        same = iou[i][labeled.class_id == confident.class_id[i]] if iou.shape[1] else np.zeros(0)
        if iou.shape[1] == 0 or iou[i].max() < loose_iou:
            overlooked.append(i)
        elif len(same) and same.max() >= loose_iou:
            located.append(i)
    flagged = overlooked + swapped + located
    return LabelErrors(len(overlooked), len(swapped), len(located), float(confident.confidence[flagged].sum()))
