"""Image uncertainty strategies: short pure functions of the adapter's arrays behind one name registry.

Every strategy maps one :class:`~detector_al.model.predictions.ImagePredictions` to a float where **higher means
more uncertain** (more worth a human's time). The math lives in array functions with the formula in
their docstrings exactly as computed; the registry entries only pick the arrays out of the record. This module
holds the registry and the per-anchor math of MI-AOD (two views' discrepancy); the per-box formulas (entropy,
least confidence, margin) are in :mod:`detector_al.policy.formulas.box_uncertainty`, the box-set consistency scores (ENMS, CALD)
in :mod:`detector_al.policy.formulas.box_consistency`, the class weights of box entropy in :mod:`detector_al.policy.formulas.class_weights`.

Most strategies depend on the image alone. Two are weighted by the round: ``entropy_balanced`` (class rarity in
the labeled set) and ``entropy_ppal`` (class difficulty over the pool); the registry holds them unweighted (equal
to ``entropy_sum``) and :func:`build_strategy` builds the round's version from its data.

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
from pathlib import Path

import numpy as np

from detector_al.model.predictions import ImagePredictions
from detector_al.policy.annotator_cost import CostModel
from detector_al.policy.formulas.box_consistency import cald_score, enms_entropy
from detector_al.policy.formulas.box_uncertainty import box_entropy, box_margin, least_confidence
from detector_al.policy.formulas.class_weights import (
    DEFAULT_RARITY_POWER,
    class_weighted_entropy,
    difficulty_weights,
    pool_difficulty,
    rarity_weights,
)
from detector_al.policy.formulas.cost_aware import attended_entropy, return_on_investment

DEFAULT_TEMPERATURE = 0.02


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
    views: int = 1  # 2: the score reads the flipped view too (the adapter then runs both)

    def confidence(self, score: float) -> float:
        """Label Studio's task score, a confidence in (0, 1] (1 = certain): ``1 / (1 + score / scale)``.

        Monotone decreasing in the uncertainty, so Label Studio's lowest-score-first order serves the most
        uncertain images first.
        """
        return 1.0 / (1.0 + max(score, 0.0) / self.scale)


def _anchor_probs(p: ImagePredictions, flip: bool = False) -> np.ndarray:
    """(N, C) class scores of the anchors behind the image's boxes (or the flip view's, in its aligned array);
    a box with no known anchor (``-1``) gets zeros."""
    dets, probs = (p.detections_flip, p.probs_flip) if flip else (p.detections, p.probs)
    anchors = dets.anchor
    out = np.zeros((len(anchors), probs.shape[1]), np.float32)
    known = anchors >= 0
    out[known] = probs[anchors[known]]
    return out


def _enms(p: ImagePredictions) -> float:
    d = p.detections
    feats = np.zeros((len(d), 2 * p.probs.shape[1]), np.float32)
    known = d.anchor >= 0
    feats[known] = np.concatenate([p.probs[d.anchor[known]], p.probs_flip[d.anchor[known]]], axis=1)
    return enms_entropy(d.confidence, d.class_id, feats)


def _cald(p: ImagePredictions) -> float:
    d, f = p.detections, p.detections_flip
    return cald_score(d.xyxy, d.confidence, _anchor_probs(p), f.xyxy, f.confidence, _anchor_probs(p, flip=True))


def weighted_entropy(class_weights: np.ndarray | None, name: str, description: str) -> Strategy:
    """A box-entropy strategy with per-class weights: :func:`~detector_al.policy.formulas.class_weights.class_weighted_entropy`
    (``None``: all 1, which is ``entropy_sum``). A class id beyond the weights gets weight 1."""
    if class_weights is None:
        return Strategy(name, lambda p: box_entropy(p.detections.confidence, "sum"), description)
    w = np.asarray(class_weights, np.float64)

    def score(p: ImagePredictions) -> float:
        c = p.detections.class_id
        known = c < len(w)
        extra = box_entropy(p.detections.confidence[~known], "sum")
        return class_weighted_entropy(p.detections.confidence[known], c[known], w) + extra

    return Strategy(name, score, description)


def class_balanced_entropy(labeled_counts: np.ndarray | None = None, power: float = DEFAULT_RARITY_POWER) -> Strategy:
    """``entropy_balanced``: box entropy summed with the labeled set's class rarity weights.

    Build one per round: the weights are :func:`~detector_al.policy.formulas.class_weights.rarity_weights` of ``labeled_counts``,
    ``labeled_counts[c]`` = labeled boxes of class ``c`` (human labels only, not pseudo-labels). ``None`` (or all
    counts equal) gives ``entropy_sum``.

    Example:
        >>> class_balanced_entropy(np.array([99, 24, 0])).name
        'entropy_balanced'
    """
    weights = None if labeled_counts is None else rarity_weights(labeled_counts, power)
    return weighted_entropy(weights, "entropy_balanced", "box entropy x class rarity in the labeled set, summed")


def difficulty_calibrated_entropy(difficulty: np.ndarray | None = None) -> Strategy:
    """``entropy_ppal``: box entropy summed with PPAL's class difficulty weights (``w_c`` in [1, 1.2]).

    Build one per round from the pool's predictions: the weights are
    :func:`~detector_al.policy.formulas.class_weights.difficulty_weights` of ``difficulty = class_difficulty(conf, cls, C)`` over
    every box of the pool (see :func:`~detector_al.policy.formulas.class_weights.pool_difficulty`). ``None`` gives ``entropy_sum``.
    """
    weights = None if difficulty is None else difficulty_weights(difficulty)
    return weighted_entropy(weights, "entropy_ppal", "box entropy x PPAL class difficulty (pool confidence), summed")


ROI_FILE_PREFIX = "entropy_roi:"
"""``entropy_roi:<file>``: ``entropy_roi`` priced by a cost-model file (e.g. the one the backend fits to a project's
annotators: ``detector-al cost-model``), wherever a strategy is named (``STRATEGY``, ``--strategy``, ``--variants``)."""


def cost_aware_entropy(cost: CostModel | None = None, name: str = "entropy_roi") -> Strategy:
    """``entropy_roi``: box entropy summed per expected annotator second,
    :func:`~detector_al.policy.formulas.cost_aware.return_on_investment` with ``cost``'s seconds (None: the
    literature's defaults, :class:`~detector_al.policy.annotator_cost.CostModel`)."""
    cost = cost or CostModel()
    return Strategy(
        name,
        lambda p: return_on_investment(box_entropy(p.detections.confidence, "sum"), p.detections.confidence, cost=cost),
        "box entropy summed, per expected annotator second (value / E[seconds] from the model's boxes)",
        0.05,
    )


def roi_from_file(name: str) -> Strategy:
    """The strategy ``entropy_roi:<file>`` names (:data:`ROI_FILE_PREFIX`).

    Raises:
        ValueError: the file cannot be read or is not a cost model (the message names it).
    """
    path = name[len(ROI_FILE_PREFIX) :]
    try:
        return cost_aware_entropy(CostModel.from_file(Path(path)), name)
    except OSError as exc:
        raise ValueError(f"strategy {name!r}: cannot read the cost-model file {path!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"strategy {name!r}: {exc}") from None


_STRATEGIES = [
    Strategy(
        "mi_aod",
        lambda p: mi_aod_score(p.probs, p.probs_flip, p.level),
        "flip-view discrepancy, MI-AOD re-weighted by class score per level",
        0.01,
        views=2,
    ),
    Strategy(
        "mi_aod_unweighted",
        lambda p: unweighted_discrepancy(p.probs, p.probs_flip),
        "flip-view discrepancy, plain mean over anchors (ablation)",
        0.001,
        views=2,
    ),
    Strategy("entropy_sum", lambda p: box_entropy(p.detections.confidence, "sum"), "box entropy, summed (default)"),
    Strategy("entropy_mean", lambda p: box_entropy(p.detections.confidence, "mean"), "box entropy, mean", 0.3),
    Strategy("entropy_max", lambda p: box_entropy(p.detections.confidence, "max"), "box entropy, max", 0.3),
    Strategy("least_confidence", lambda p: least_confidence(p.detections.confidence), "1 - confidence, max", 0.3),
    Strategy("margin", lambda p: box_margin(_anchor_probs(p)), "(1 - top-2 margin)^2, max", 0.3),
    Strategy(
        "entropy_mil",
        lambda p: attended_entropy(p.detections.confidence),
        "box entropy under MI-AOD's instance attention: sum_b softmax_b(conf_b / 0.1) H(conf_b)",
        0.3,
    ),
    cost_aware_entropy(),
    Strategy("entropy_enms", _enms, "box entropy summed over non-redundant boxes (ENMS)", views=2),
    Strategy("cald", _cald, "CALD flip consistency: 1 - min(1, min_box |IoU + agreement - 1.3|)", 0.5, views=2),
    class_balanced_entropy(),
    difficulty_calibrated_entropy(),
    Strategy("random", lambda p: random_score(p.source), "uniform, seeded by the image name", 0.5),
]
STRATEGIES: dict[str, Strategy] = {s.name: s for s in _STRATEGIES}
DEFAULT_STRATEGY = "entropy_sum"  # the measurements behind the choice: README "Strategies", docs/benchmarks.md


ROUND_WEIGHTED = ("entropy_balanced", "entropy_ppal")
"""Strategies whose weights are rebuilt each round from data the serving path does not hold (the labeled boxes per
class; the whole pool's confidences): :func:`build_strategy` builds them in ``simulate``. Refused elsewhere."""
SERVING_STRATEGIES = tuple(n for n in STRATEGIES if n not in ROUND_WEIGHTED)
"""The names the backend, ``ingest`` and ``score`` accept (:func:`serving_strategy`)."""


def serving_strategy(name: str) -> Strategy:
    """A strategy the backend, ``ingest`` and ``score`` can run image by image; the error says what to use instead.

    Raises:
        ValueError: an unknown name, or one of :data:`ROUND_WEIGHTED` (it would silently run ``entropy_sum``).
    """
    if name.startswith(ROI_FILE_PREFIX):
        return roi_from_file(name)
    if name in ROUND_WEIGHTED:
        raise ValueError(
            f"strategy {name!r} is rebuilt each round from the labeled set and the whole pool, which only "
            f"`detector-al simulate` holds; here choose one of: {', '.join(SERVING_STRATEGIES)}"
        )
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(SERVING_STRATEGIES)}")
    return STRATEGIES[name]


def get_strategy(name: str) -> Strategy:
    """Look a strategy up by name (or build ``entropy_roi:<file>``); the error lists the valid names."""
    if name.startswith(ROI_FILE_PREFIX):
        return roi_from_file(name)
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}") from None


def build_strategy(
    name: str, labeled_counts: np.ndarray | None = None, pool: list[ImagePredictions] | None = None
) -> Strategy:
    """The strategy for one round: the registry's, or for the class-weighted ones, built from the round's data.

    ``entropy_balanced`` uses ``labeled_counts`` (boxes per class in the labeled set), ``entropy_ppal`` the
    pool's predictions (``pool``; the number of classes is the width of their ``probs``). Every other name,
    and these two without their data, is the registry entry (for these two: ``entropy_sum``).

    Example:
        >>> build_strategy("entropy_balanced", labeled_counts=np.array([10, 1])).name
        'entropy_balanced'
    """
    strategy = get_strategy(name)
    if name == "entropy_balanced" and labeled_counts is not None:
        return class_balanced_entropy(labeled_counts)
    if name == "entropy_ppal" and pool:
        ok = [p for p in pool if p.ok]
        if ok:
            return difficulty_calibrated_entropy(pool_difficulty(ok, ok[0].probs.shape[1]))
    return strategy
