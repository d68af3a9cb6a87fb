"""Per-box uncertainty formulas: entropy, least confidence and margin of an image's post-NMS boxes.

Each maps the boxes' arrays (confidences, or the class scores of their anchors) to one float, higher meaning more
uncertain; :mod:`detector_al.policy.strategies` registers them as strategies. ``H`` is the binary entropy in nats.

Example:
    >>> import numpy as np
    >>> round(box_entropy(np.array([0.5, 0.9]), "sum"), 3)  # H(0.5) + H(0.9)
    1.018
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """``H(p) = -p ln p - (1 - p) ln(1 - p)`` elementwise (in nats, 0 at p in {0, 1}, max ln 2 at 0.5)."""
    p = np.clip(p, EPS, 1 - EPS)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def reduce(values: np.ndarray, how: str) -> float:
    """Aggregate per-box values to an image score: ``sum``, ``mean`` or ``max`` (0 for an image with no box)."""
    if values.size == 0:
        return 0.0
    return float({"sum": np.sum, "mean": np.mean, "max": np.max}[how](values))


def box_entropy(confidence: np.ndarray, how: str) -> float:
    """Box entropy (Brust et al. 2019): ``reduce_b H(conf_b)`` over the post-NMS boxes."""
    return reduce(binary_entropy(confidence), how)


def least_confidence(confidence: np.ndarray) -> float:
    """``max_b (1 - conf_b)`` over the post-NMS boxes: the least confident box decides."""
    return reduce(1.0 - confidence, "max")


def box_margin(class_probs: np.ndarray) -> float:
    """Margin (Brust et al. 2019): ``max_b (1 - (q_b1 - q_b2))^2`` with ``q_b1 >= q_b2`` the two highest class
    probabilities of box ``b``'s anchor (``class_probs`` is (N, C); one class gives ``q_b2 = 0``)."""
    if class_probs.shape[0] == 0:
        return 0.0
    q = -np.sort(-class_probs, axis=1)
    second = q[:, 1] if q.shape[1] > 1 else np.zeros(len(q))
    return reduce((1.0 - (q[:, 0] - second)) ** 2, "max")
