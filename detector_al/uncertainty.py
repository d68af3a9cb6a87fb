"""Image uncertainty strategies: short pure functions of the adapter's arrays behind one name registry.

Every strategy maps one :class:`~detector_al.types.ImagePredictions` to a float where **higher means
more uncertain** (more worth a human's time). The math lives in array functions with the formula in
their docstrings exactly as computed; the registry entries only pick the arrays out of the record.

Notation: ``p1, p2`` are the (A, C) per-anchor class probabilities of the image and of its aligned
horizontal flip, ``l(i)`` the pyramid level of anchor ``i``, ``L`` the number of levels, ``T`` the
temperature.

Example:
    >>> import numpy as np
    >>> p1 = np.array([[0.9, 0.0], [0.01, 0.0]]); p2 = np.array([[0.5, 0.0], [0.01, 0.0]])
    >>> round(float(anchor_discrepancy(p1, p2)[0]), 3)
    0.08
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detector_al.types import ImagePredictions

DEFAULT_TEMPERATURE = 0.02
EPS = 1e-12


def anchor_discrepancy(p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """MI-AOD instance uncertainty of every anchor: ``u_i = mean_c (p1_ic - p2_ic)^2``.

    Returns:
        (A,) array in [0, 1].
    """
    return np.mean((p1 - p2) ** 2, axis=1)


def _level_blocks(level: np.ndarray) -> tuple[np.ndarray | slice, np.ndarray]:
    """An order that groups the anchors by level (stable; the adapter's anchors come grouped, and then the
    order is a no-op slice) and the start of each level's block in that order."""
    order = slice(None) if np.all(level[1:] >= level[:-1]) else np.argsort(level, kind="stable")
    lv = level[order]
    return order, np.flatnonzero(np.r_[True, lv[1:] != lv[:-1]])


def mil_weights(
    p1: np.ndarray, p2: np.ndarray, level: np.ndarray, temperature: float = DEFAULT_TEMPERATURE
) -> np.ndarray:
    """MI-AOD-style re-weighting: a softmax over the anchors of each pyramid level of their class score.

    ``s_i = max_c (p1_ic + p2_ic) / 2`` and ``w_i = exp(s_i / T) / sum_{j : l(j) = l(i)} exp(s_j / T)``,
    so the weights of every level sum to 1 and a handful of anchors on objects outweigh thousands of
    background anchors (at ``T = 0.02`` an anchor scoring 0.5 weighs ``e^{24.5} ~ 4e10`` times one at 0.01).

    Returns:
        (A,) non-negative weights, summing to 1 within each level.
    """
    order, starts = _level_blocks(level)
    w = np.empty(len(level), np.float64)
    w[order] = _softmax_blocks(np.max(p1 + p2, axis=1)[order] / 2.0 / temperature, starts)
    return w


def _softmax_blocks(z: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Softmax of ``z`` within each block (blocks start at ``starts``), in float64."""
    z = z.astype(np.float64)
    sizes = np.diff(np.r_[starts, len(z)])
    e = np.exp(z - np.repeat(np.maximum.reduceat(z, starts), sizes))
    return e / np.repeat(np.add.reduceat(e, starts), sizes)


def mi_aod_score(p1: np.ndarray, p2: np.ndarray, level: np.ndarray, temperature: float = DEFAULT_TEMPERATURE) -> float:
    """Re-weighted discrepancy of the two views: a weighted mean within each level, levels weighted by their
    strongest anchor.

    ``score = sum_l lambda_l * sum_{i : l(i) = l} w_i * u_i`` with ``u_i`` from :func:`anchor_discrepancy`, ``w_i``
    from :func:`mil_weights`, and ``lambda_l = exp(m_l / T) / sum_l' exp(m_l' / T)``, ``m_l = max_{i : l(i) = l} s_i``.
    Every level contributes a weighted *mean*, so the score does not grow with the number of anchors (image
    size, padding, background area) and lies in [0, 1]; a level that holds only background gets a
    negligible ``lambda_l`` when another level holds an object, so its noise does not leak in.
    """
    order, starts = _level_blocks(level)
    p1, p2 = p1[order], p2[order]
    u = anchor_discrepancy(p1, p2)
    z = np.max(p1 + p2, axis=1) / 2.0 / temperature
    w = _softmax_blocks(z, starts)
    per_level = np.add.reduceat(w * u, starts)
    m = np.maximum.reduceat(z, starts).astype(np.float64)
    lam = np.exp(m - m.max())
    lam /= lam.sum()
    return float(np.sum(lam * per_level))


def unweighted_discrepancy(p1: np.ndarray, p2: np.ndarray) -> float:
    """The ablation without re-weighting: ``score = mean_i u_i`` over all anchors."""
    return float(np.mean(anchor_discrepancy(p1, p2)))


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


def random_score(source: str, seed: int = 0) -> float:
    """Uniform in [0, 1), a pure function of ``(seed, source)``: ``sha256(f"{seed}:{source}") / 2^256``."""
    digest = hashlib.sha256(f"{seed}:{source}".encode()).digest()
    return int.from_bytes(digest, "big") / 2**256


@dataclass(frozen=True)
class Strategy:
    """A named image scorer: higher scores are queried first."""

    name: str
    score: Callable[[ImagePredictions], float]
    description: str
    scale: float = 1.0  # a typical score: confidence(scale) = 0.5

    def confidence(self, score: float) -> float:
        """Label Studio's task score, a confidence in (0, 1] (1 = certain): ``1 / (1 + score / scale)``.

        Monotone decreasing in the uncertainty, so Label Studio's lowest-score-first order serves the most
        uncertain images first.
        """
        return 1.0 / (1.0 + max(score, 0.0) / self.scale)


def _anchor_probs(p: ImagePredictions) -> np.ndarray:
    anchors = p.detections.anchor
    return p.probs[anchors] if len(anchors) else np.zeros((0, p.probs.shape[1]), np.float32)


_STRATEGIES = [
    Strategy(
        "mi_aod",
        lambda p: mi_aod_score(p.probs, p.probs_flip, p.level),
        "flip-view discrepancy, MI-AOD re-weighted by class score per level (default)",
        0.01,
    ),
    Strategy(
        "mi_aod_unweighted",
        lambda p: unweighted_discrepancy(p.probs, p.probs_flip),
        "flip-view discrepancy, plain mean over anchors (ablation)",
        0.001,
    ),
    Strategy("entropy_sum", lambda p: box_entropy(p.detections.confidence, "sum"), "box entropy, summed"),
    Strategy("entropy_mean", lambda p: box_entropy(p.detections.confidence, "mean"), "box entropy, mean", 0.3),
    Strategy("entropy_max", lambda p: box_entropy(p.detections.confidence, "max"), "box entropy, max", 0.3),
    Strategy("least_confidence", lambda p: least_confidence(p.detections.confidence), "1 - confidence, max", 0.3),
    Strategy("margin", lambda p: box_margin(_anchor_probs(p)), "(1 - top-2 margin)^2, max", 0.3),
    Strategy("random", lambda p: random_score(p.source), "uniform, seeded by the image name", 0.5),
]
STRATEGIES: dict[str, Strategy] = {s.name: s for s in _STRATEGIES}
DEFAULT_STRATEGY = "mi_aod"


def get_strategy(name: str) -> Strategy:
    """Look a strategy up by name; the error lists the valid names."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}") from None
