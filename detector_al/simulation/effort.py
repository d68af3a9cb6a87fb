"""What an annotator must fix in a pre-annotation: model errors against the truth (an oracle, in experiments).

A pre-annotation's boxes are matched one to one to the true boxes, greedily by descending IoU (at least
``iou``), whatever the class. Then

- ``missed``    = true boxes with no match (the annotator draws them),
- ``spurious``  = shown boxes with no match (the annotator deletes them),
- ``relabeled`` = matched pairs whose classes differ (the annotator changes the label),
- ``errors``    = ``missed + spurious + relabeled``: the corrections the image needs,
- ``drawn``     = the number of true boxes (the effort without any pre-annotation).

Example:
    >>> import numpy as np
    >>> truth = Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.ones(2), np.array([0, 1]))
    >>> shown = Detections(np.array([[0, 0, 10, 11], [50, 50, 60, 60]]), np.ones(2), np.array([1, 0]))
    >>> corrections(shown, truth)
    Corrections(missed=1, spurious=1, relabeled=1, drawn=2)
"""

from __future__ import annotations

from dataclasses import dataclass

from detector_al.model.geometry import match_boxes
from detector_al.model.predictions import Detections


@dataclass(frozen=True)
class Corrections:
    missed: int
    spurious: int
    relabeled: int
    drawn: int

    @property
    def errors(self) -> int:
        return self.missed + self.spurious + self.relabeled


def corrections(shown: Detections, truth: Detections, iou: float = 0.5) -> Corrections:
    """The corrections that turn ``shown`` into ``truth`` (see the module docstring)."""
    pairs = match_boxes(shown.xyxy, truth.xyxy, iou)
    relabeled = sum(int(shown.class_id[i] != truth.class_id[j]) for i, j in pairs)
    return Corrections(len(truth) - len(pairs), len(shown) - len(pairs), relabeled, len(truth))
