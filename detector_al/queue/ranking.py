"""From predictions to an annotation queue: score, auto-accept, select, rank.

This module wires the pure parts together: the adapter's records in, one
:class:`~detector_al.policy.decision.Decision` per image (:func:`score_predictions`), and its
:class:`~detector_al.queue.build.QueueEntry` out (:func:`assign_queue`); :func:`queue_record` is the pair as the
CLI writes it. Only what the queue needs per image is kept (score, boxes, embedding), so a pool of any size streams
through in constant memory per image.

Queue order (``rank`` 1, 2, ...): :func:`detector_al.queue.build.build_queue`'s (the batch, then the rest by
descending score, then the auto-accepted ones). Unreadable images get ``decision="error"``, no entry and no rank.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from detector_al.model.predictions import ImagePredictions
from detector_al.policy.ceal import CealConfig
from detector_al.policy.decision import Decision, decide
from detector_al.policy.settings import DIVERSITY
from detector_al.policy.strategies import Strategy
from detector_al.policy.thresholds import SCORE_THRESHOLD
from detector_al.queue.build import AUTO_ACCEPT, ERROR, QUERY, REST, QueueEntry, build_queue
from detector_al.queue.selection import class_balance_weights, select_batch, use_cold_start
from detector_al.queue.selection import cold_start as diversity_order


def queue_record(d: Decision, entry: QueueEntry | None, names: tuple[str, ...] | list[str]) -> dict:
    """One image's line of the CLI's queue file: its decision and its place (``rank`` = position + 1)."""
    out = {
        "image": d.source,
        "score": d.score,
        "decision": d.status if entry is None else entry.status,
        "rank": None if entry is None else entry.position + 1,
    }
    if d.error:
        out["error"] = d.error
    else:
        out.update(width=d.width, height=d.height, reason=d.reason, detections=d.shown.to_records(names))
    return out


def score_predictions(
    preds: Iterable[ImagePredictions],
    strategy: Strategy,
    round_index: int = 0,
    ceal: CealConfig | None = None,
    min_confidence: float = SCORE_THRESHOLD,
) -> Iterator[Decision]:
    """Score each record and apply the CEAL auto-accept test; keep boxes at ``conf >= min_confidence``."""
    for p in preds:
        yield decide(p, strategy, round_index, ceal, min_confidence)


def assign_queue(
    images: list[Decision],
    budget: int,
    diversity: bool = DIVERSITY,
    cold: bool = False,
    seed: int = 0,
    labeled_emb: np.ndarray | None = None,
    labeled_class_counts: np.ndarray | None = None,
    cold_start: bool = False,
) -> list[QueueEntry | None]:
    """Choose the query batch among the non-accepted images and place the whole queue: each image's
    :class:`~detector_al.queue.build.QueueEntry` (None for an unreadable one), in ``images``' order.

    The order is :func:`~detector_al.queue.build.build_queue`'s (``rank = position + 1``). With
    ``labeled_class_counts`` (boxes per class in the labeled set), the selection favours images whose
    predicted classes are rare there: scores are multiplied by
    :func:`~detector_al.queue.selection.class_balance_weights` before choosing (the stored scores stay raw).
    ``cold``: order by diversity alone, whatever the model. ``cold_start``: while the model is cold (by the
    images' highest shown box confidence), the batch is TypiClust's (away from ``labeled_emb``), and the
    uncertainty options above apply once it is warm.
    """
    out: list[QueueEntry | None] = [None] * len(images)
    scored = [i for i, d in enumerate(images) if d.status != ERROR]
    if not scored:
        return out
    pending = [j for j, i in enumerate(scored) if not images[i].accepted]
    top = None  # of the shown boxes (cut at the score threshold, 0.25 by default)
    if cold_start and not cold:
        top = np.array([images[i].max_confidence for i in scored])
    batch = None
    warm = top is None or not use_cold_start(top)  # cold: build_queue picks the TypiClust batch
    if warm and pending and (cold or labeled_class_counts is not None or labeled_emb is not None or not diversity):
        scores = np.array([images[scored[j]].score for j in pending], np.float64)
        if labeled_class_counts is not None:
            scores = scores * class_balance_weights(
                [np.unique(images[scored[j]].shown.class_id) for j in pending], labeled_class_counts
            )
        emb = np.stack([images[scored[j]].embedding for j in pending])
        if cold:
            picked = diversity_order(emb, budget, seed, labeled_emb)
        else:
            picked = select_batch(scores, emb, budget, labeled_emb=labeled_emb, diversity=diversity)
        batch = np.asarray([pending[k] for k in picked], np.int64)
    entries = build_queue(
        np.array([images[i].score for i in scored], np.float64),
        np.array([images[i].accepted for i in scored]),
        np.stack([images[i].embedding for i in scored]),
        budget,
        batch=batch,
        max_confidence=top,
        labeled_embeddings=labeled_emb,
    )
    for i, e in zip(scored, entries, strict=True):
        out[i] = e
    return out


def summary(images: list[Decision], entries: list[QueueEntry | None]) -> dict:
    """Counts per queue band and score quantiles, for printing."""
    bands = [d.status if e is None else e.status for d, e in zip(images, entries, strict=True)]
    counts = {b: bands.count(b) for b in (QUERY, REST, AUTO_ACCEPT, ERROR)}
    scores = np.array([d.score for d in images if d.score is not None])
    q = {}
    if scores.size:
        q = {f"p{int(k * 100)}": float(np.quantile(scores, k)) for k in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)}
    return {"counts": counts, "quantiles": q}
