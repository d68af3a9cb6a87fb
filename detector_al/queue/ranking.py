"""From predictions to an annotation queue: score, auto-accept, select, rank.

This module wires the pure parts together (the adapter's records in, :class:`ScoredImage` records out)
and keeps only what the queue needs per image (score, boxes, embedding), so a pool of any size streams
through in constant memory per image.

Queue order (``rank`` 1, 2, ...): :func:`detector_al.queue.build.build_queue`'s (the batch, then the rest by
descending score, then the auto-accepted ones). Unreadable images get ``decision="error"`` and no rank.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from detector_al.model.predictions import Detections, ImagePredictions
from detector_al.policy.ceal import CealConfig
from detector_al.policy.decision import Decision, decide
from detector_al.policy.settings import DIVERSITY
from detector_al.policy.strategies import Strategy
from detector_al.policy.thresholds import SCORE_THRESHOLD
from detector_al.queue.build import AUTO_ACCEPT, ERROR, QUERY, REST, build_queue
from detector_al.queue.selection import class_balance_weights, select_batch, use_cold_start
from detector_al.queue.selection import cold_start as diversity_order


@dataclass
class ScoredImage:
    """One image's place in the queue."""

    source: str
    width: int = 0
    height: int = 0
    score: float | None = None
    decision: str = REST
    rank: int | None = None
    detections: Detections = field(default_factory=Detections.empty)
    pseudo_labels: Detections = field(default_factory=Detections.empty)
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    reason: str = ""
    error: str | None = None

    def to_json(self, names: tuple[str, ...] | list[str]) -> dict:
        out = {"image": self.source, "score": self.score, "decision": self.decision, "rank": self.rank}
        if self.error:
            out["error"] = self.error
        else:
            out.update(
                width=self.width, height=self.height, reason=self.reason, detections=self.detections.to_records(names)
            )
        return out


def score_predictions(
    preds: Iterable[ImagePredictions],
    strategy: Strategy,
    round_index: int = 0,
    ceal: CealConfig | None = None,
    min_confidence: float = SCORE_THRESHOLD,
) -> Iterator[ScoredImage]:
    """Score each record and apply the CEAL auto-accept test; keep boxes at ``conf >= min_confidence``."""
    for p in preds:
        yield scored_image(decide(p, strategy, round_index, ceal, min_confidence))


def scored_image(d: Decision) -> ScoredImage:
    """One image's record from its decision (not yet placed in the queue)."""
    if d.error:
        return ScoredImage(source=d.source, decision=ERROR, error=d.error)
    return ScoredImage(
        source=d.source,
        width=d.width,
        height=d.height,
        score=d.score,
        decision=d.status,
        detections=d.shown,
        pseudo_labels=d.pseudo_labels,
        embedding=d.embedding,
        reason=d.reason,
    )


def assign_queue(
    images: list[ScoredImage],
    budget: int,
    diversity: bool = DIVERSITY,
    cold: bool = False,
    seed: int = 0,
    labeled_emb: np.ndarray | None = None,
    labeled_class_counts: np.ndarray | None = None,
    cold_start: bool = False,
) -> list[ScoredImage]:
    """Choose the query batch among the non-accepted images and number the whole queue (in place).

    The order is :func:`~detector_al.queue.build.build_queue`'s (``rank = position + 1``). With
    ``labeled_class_counts`` (boxes per class in the labeled set), the selection favours images whose
    predicted classes are rare there: scores are multiplied by
    :func:`~detector_al.queue.selection.class_balance_weights` before choosing (the stored scores stay raw).
    ``cold``: order by diversity alone, whatever the model. ``cold_start``: while the model is cold (by the
    images' highest shown box confidence), the batch is TypiClust's (away from ``labeled_emb``), and the
    uncertainty options above apply once it is warm.
    """
    scored = [i for i, s in enumerate(images) if s.decision != ERROR]
    if not scored:
        return images
    for i in scored:
        if images[i].decision == QUERY:
            images[i].decision = REST
    pending = [j for j, i in enumerate(scored) if images[i].decision == REST]
    top = None  # detections are the shown boxes (cut at the score threshold, 0.25 by default)
    if cold_start and not cold:
        top = np.array([float(images[i].detections.confidence.max(initial=0.0)) for i in scored])
    batch = None
    warm = top is None or not use_cold_start(top)  # cold: build_queue picks the TypiClust batch
    if warm and pending and (cold or labeled_class_counts is not None or labeled_emb is not None or not diversity):
        scores = np.array([images[scored[j]].score for j in pending], np.float64)
        if labeled_class_counts is not None:
            scores = scores * class_balance_weights(
                [np.unique(images[scored[j]].detections.class_id) for j in pending], labeled_class_counts
            )
        emb = np.stack([images[scored[j]].embedding for j in pending])
        if cold:
            picked = diversity_order(emb, budget, seed, labeled_emb)
        else:
            picked = select_batch(scores, emb, budget, labeled_emb=labeled_emb, diversity=diversity)
        batch = np.asarray([pending[k] for k in picked], np.int64)
    entries = build_queue(
        np.array([images[i].score for i in scored], np.float64),
        np.array([images[i].decision == AUTO_ACCEPT for i in scored]),
        np.stack([images[i].embedding for i in scored]),
        budget,
        batch=batch,
        max_confidence=top,
        labeled_embeddings=labeled_emb,
    )
    for i, e in zip(scored, entries, strict=True):
        images[i].decision, images[i].rank = e.status, e.position + 1
    return images


def summary(images: list[ScoredImage]) -> dict:
    """Counts per decision and score quantiles, for printing."""
    counts = {d: sum(s.decision == d for s in images) for d in (QUERY, REST, AUTO_ACCEPT, ERROR)}
    scores = np.array([s.score for s in images if s.score is not None])
    q = {}
    if scores.size:
        q = {f"p{int(k * 100)}": float(np.quantile(scores, k)) for k in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)}
    return {"counts": counts, "quantiles": q}
