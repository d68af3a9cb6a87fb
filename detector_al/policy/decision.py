"""The active-learning decision for one image: score it once, apply CEAL, choose the boxes people see.

This is the one policy that the backend (``/predict``), ``ingest``, the retrainer's re-scoring, the CLI's
``score`` and the simulation all run; :mod:`detector_al.queue.build` then orders a pool of decisions.

- ``score``: the strategy's uncertainty ``u`` (higher = less sure); ``confidence = strategy.confidence(u)``.
- CEAL (:func:`~detector_al.policy.ceal.auto_accept`) tests the image's boxes (and, with its ``flip_test``, the
  flip consistency; with the ``mi_aod`` strategy that *is* the score, so it is computed once).
- :func:`views_needed`: the views the adapter must run for a strategy and CEAL (1 for the default path).
- ``status``: :data:`~detector_al.queue.build.AUTO_ACCEPT` when CEAL accepts, else :data:`~detector_al.queue.build.REST`
  (the batch is chosen over the pool, by :func:`~detector_al.queue.build.build_queue`); unreadable images get
  :data:`~detector_al.queue.build.ERROR`.
- ``shown``: the detections at ``confidence >= score_threshold`` (the pre-annotation); ``pseudo_labels``:
  CEAL's boxes when accepted, else empty (never a human label).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detector_al.model.predictions import Detections, ImagePredictions
from detector_al.policy.ceal import CealConfig, auto_accept, consistency
from detector_al.policy.strategies import Strategy
from detector_al.policy.thresholds import SCORE_THRESHOLD
from detector_al.queue.build import AUTO_ACCEPT, ERROR, REST


@dataclass(frozen=True)
class Decision:
    """One image's decision (see the module docstring); ``embedding`` is kept for the batch's diversity."""

    source: str
    status: str
    score: float | None = None
    confidence: float | None = None
    shown: Detections = field(default_factory=Detections.empty)
    pseudo_labels: Detections = field(default_factory=Detections.empty)
    embedding: np.ndarray | None = None
    width: int = 0
    height: int = 0
    reason: str = ""
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == AUTO_ACCEPT

    @property
    def max_confidence(self) -> float:
        """The highest confidence among the ``shown`` boxes, 0.0 with none: the input of the cold-start rule
        (:func:`~detector_al.queue.selection.use_cold_start`, through :func:`~detector_al.queue.build.build_queue`).

        ``shown`` is cut at the score threshold (0.25 by default), below the rule's 0.5
        (:data:`~detector_al.queue.selection.COLD_START_CONF`): no box the rule counts is cut, so this is exact for the
        rule (a score threshold above 0.5 would hide boxes from it).
        """
        return float(self.shown.confidence.max(initial=0.0))


def views_needed(strategy: Strategy, ceal: CealConfig | None = None) -> int:
    """``2`` when the strategy reads the flipped view (``strategy.views``) or CEAL's flip test is on, else ``1``: the
    one rule for how many views :meth:`Detector.predict <detector_al.model.detector.Detector.predict>` runs."""
    return 2 if strategy.views == 2 or (ceal is not None and ceal.enabled and ceal.flip_test) else 1


def decide(
    pred: ImagePredictions,
    strategy: Strategy,
    round_index: int = 0,
    ceal: CealConfig | None = None,
    score_threshold: float = SCORE_THRESHOLD,
) -> Decision:
    """The :class:`Decision` for one image's predictions (one strategy score, one CEAL test)."""
    if not pred.ok:
        return Decision(pred.source, ERROR, error=pred.error)
    score = float(strategy.score(pred))
    ceal = ceal or CealConfig()
    flip_consistency = float("nan")  # not read without the flip test
    if ceal.enabled and ceal.flip_test:
        flip_consistency = score if strategy.name == "mi_aod" else consistency(pred)
    verdict = auto_accept(pred, flip_consistency, round_index, ceal)
    return Decision(
        source=pred.source,
        status=AUTO_ACCEPT if verdict.accepted else REST,
        score=score,
        confidence=float(strategy.confidence(score)),
        shown=pred.detections[pred.detections.confidence >= score_threshold],
        pseudo_labels=verdict.pseudo_labels if verdict.accepted else Detections.empty(),
        embedding=pred.embedding,
        width=pred.width,
        height=pred.height,
        reason=verdict.reason,
    )


@dataclass(frozen=True)
class DecisionPolicy:
    """The settings of :func:`decide` as one picklable object (what a scoring worker on another machine needs).

    Calling it is ``decide(pred, serving_strategy(strategy), round_index, ceal, score_threshold)``.
    """

    strategy: str
    round_index: int = 0
    ceal: CealConfig | None = None
    score_threshold: float = SCORE_THRESHOLD

    def __call__(self, pred: ImagePredictions) -> Decision:
        from detector_al.policy.strategies import serving_strategy

        return decide(pred, serving_strategy(self.strategy), self.round_index, self.ceal, self.score_threshold)

    @property
    def views(self) -> int:
        """:func:`views_needed` for this policy."""
        from detector_al.policy.strategies import serving_strategy

        return views_needed(serving_strategy(self.strategy), self.ceal or CealConfig())
