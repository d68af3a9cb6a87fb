"""Per-class weights of box entropy: class rarity in the labeled set, class difficulty over the pool.

The math behind the round-weighted strategies of :mod:`detector_al.policy.strategies`: ``entropy_balanced`` weighs a
box's entropy by :func:`rarity_weights` of the labeled set's class counts, ``entropy_ppal`` by PPAL's
:func:`difficulty_weights` of the pool's :func:`class_difficulty`; :func:`class_weighted_entropy` is the
weighted sum both use.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from detector_al.model.predictions import ImagePredictions
from detector_al.policy.formulas.box_uncertainty import binary_entropy

DEFAULT_RARITY_POWER = 0.5
DEFAULT_PPAL_UPPER = 0.2  # PPAL's class_weight_ub
DEFAULT_PPAL_ALPHA = 0.3  # PPAL's class_weight_alpha


def class_weighted_entropy(confidence: np.ndarray, class_id: np.ndarray, class_weights: np.ndarray) -> float:
    """``score = sum_b w_{c_b} H(conf_b)`` over the post-NMS boxes (0 with no box).

    Example:
        >>> round(class_weighted_entropy(np.array([0.5, 0.5]), np.array([0, 1]), np.array([1.0, 2.0])), 3)
        2.079
    """
    if len(confidence) == 0:
        return 0.0
    return float(np.sum(np.asarray(class_weights, np.float64)[class_id] * binary_entropy(confidence)))


def rarity_weights(labeled_counts: np.ndarray, power: float = DEFAULT_RARITY_POWER) -> np.ndarray:
    """Class weights from the labeled set: ``w_c = ((max_c' n_c' + 1) / (n_c + 1)) ^ power``.

    ``n_c`` is the number of labeled boxes of class ``c``. The most frequent class weighs 1 (so the scale stays
    that of ``entropy_sum``), a class with no labeled box ``(max n + 1) ^ power``; equal counts give all 1.
    ``power = 1`` is the plain inverse-frequency form (Brust et al.); the default 0.5 tempers it so that one
    box of a class with 0 labels does not outweigh a whole image (1 against 200: ~14x, not 201x).

    Example:
        >>> rarity_weights(np.array([99, 24, 0])).round(2).tolist()
        [1.0, 2.0, 10.0]
    """
    n = np.asarray(labeled_counts, np.float64)
    return ((n.max(initial=0.0) + 1.0) / (n + 1.0)) ** power


def class_difficulty(confidence: np.ndarray, class_id: np.ndarray, n_classes: int) -> np.ndarray:
    """A per-class difficulty from the pool's predictions alone: ``d_c = 1 - mean_{b : c_b = c} conf_b``.

    ``confidence`` and ``class_id`` hold every post-NMS box of the pool (all images concatenated). A class the
    model never predicts gets ``d_c = 1`` (hardest). PPAL's difficulty is ``1 - q_c`` with ``q_c`` an EMA of
    the class's detection quality (score x IoU of matched positives) during training; without labels the mean
    confidence is the observable stand-in (a class the model detects confidently is one it has learned).

    Example:
        >>> class_difficulty(np.array([0.9, 0.7, 0.2]), np.array([0, 0, 1]), 3).round(2).tolist()
        [0.2, 0.8, 1.0]
    """
    c = np.asarray(class_id, np.int64)
    total = np.bincount(c, weights=np.asarray(confidence, np.float64), minlength=n_classes)[:n_classes]
    count = np.bincount(c, minlength=n_classes)[:n_classes]
    return 1.0 - np.divide(total, count, out=np.zeros(n_classes), where=count > 0)


def difficulty_weights(
    difficulty: np.ndarray, upper: float = DEFAULT_PPAL_UPPER, alpha: float = DEFAULT_PPAL_ALPHA
) -> np.ndarray:
    """PPAL's difficulty-calibrated class weights (``DCUSSampler._get_classwise_weight``), in [1, 1 + upper].

    ``w_c = 1 + alpha * upper * ln(b * d_c + 1)`` with ``b = e^{1 / alpha} - 1`` (so ``d_c = 0 -> 1`` and
    ``d_c = 1 -> 1 + upper``; a small ``alpha`` rises fast for easy-ish classes). Defaults: PPAL's VOC config.

    Example:
        >>> difficulty_weights(np.array([0.0, 1.0])).round(3).tolist()
        [1.0, 1.2]
    """
    b = np.exp(1.0 / alpha) - 1.0
    return 1.0 + alpha * np.log(b * np.clip(np.asarray(difficulty, np.float64), 0.0, 1.0) + 1.0) * upper


def pool_difficulty(preds: Iterable[ImagePredictions], n_classes: int) -> np.ndarray:
    """:func:`class_difficulty` over every post-NMS box of the readable records of a pool."""
    ok = [p for p in preds if p.ok]
    conf = np.concatenate([p.detections.confidence for p in ok] or [np.zeros(0, np.float32)])
    cls = np.concatenate([p.detections.class_id for p in ok] or [np.zeros(0, np.int64)])
    return class_difficulty(conf, cls, n_classes)
