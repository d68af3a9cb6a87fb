"""Per-image formulas that weigh uncertainty by what the image is made of: MI-AOD's instance attention over the
boxes, and the value per expected annotator second (return on investment).

``attended_entropy``: MI-AOD (Yuan et al. 2021) re-weights instance uncertainties by a multiple-instance attention,
a softmax over the instances of their class scores, so that the instances that are objects decide, not the many
that are background. Over the post-NMS boxes: ``w_b = softmax_b(conf_b / T)``, score ``= sum_b w_b H(conf_b)``.

``expected_seconds``: what correcting the image's pre-annotation should cost, from the model's own boxes and a
:class:`~detector_al.policy.annotator_cost.CostModel`: a shown box (``conf >= shown``) is right with probability ``conf``
(a verification) and wrong otherwise (a deletion and a box drawn); a box below the cut (``conf < shown``) is a
missed object with probability ``conf`` (a box drawn):
``E[s] = look_image + sum_{shown} (c verify + (1 - c)(delete + draw)) + sum_{below} c draw``.
``return_on_investment``: ``value / E[s]`` (Haertel et al. 2008; Settles et al. 2008).
"""

from __future__ import annotations

import numpy as np

from detector_al.policy.annotator_cost import CostModel
from detector_al.policy.formulas.box_uncertainty import binary_entropy
from detector_al.policy.thresholds import SCORE_THRESHOLD

ATTENTION_T = 0.1


def attended_entropy(confidence: np.ndarray, temperature: float = ATTENTION_T) -> float:
    """``sum_b w_b H(conf_b)``, ``w_b = softmax_b(conf_b / T)`` (0 without boxes)."""
    c = np.asarray(confidence, np.float64)
    if c.size == 0:
        return 0.0
    z = c / temperature
    w = np.exp(z - z.max())
    w /= w.sum()
    return float((w * binary_entropy(c)).sum())


def expected_seconds(confidence: np.ndarray, shown: float = SCORE_THRESHOLD, cost: CostModel = CostModel()) -> float:
    """``E[s]`` of the module docstring."""
    c = np.asarray(confidence, np.float64)
    up, low = c[c >= shown], c[c < shown]
    right = up * cost.verify_box + (1.0 - up) * (cost.delete_box + cost.draw_box)
    return float(cost.look_image + right.sum() + (low * cost.draw_box).sum())


def return_on_investment(
    value: float, confidence: np.ndarray, shown: float = SCORE_THRESHOLD, cost: CostModel = CostModel()
) -> float:
    """``value / E[s]``: uncertainty bought per expected annotator second (``E[s]`` priced by ``cost``)."""
    return value / expected_seconds(confidence, shown, cost)
