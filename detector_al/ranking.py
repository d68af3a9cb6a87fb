"""From predictions to an annotation queue: score, auto-accept, select, rank.

This module wires the pure parts together (the adapter's records in, :class:`ScoredImage` records out)
and keeps only what the queue needs per image (score, boxes, embedding), so a pool of any size streams
through in constant memory per image.

Queue order (``rank`` 1, 2, ...): the selected batch (``decision="query"``) in selection order, then the
other uncertain images (``"rest"``) by descending score, then the auto-accepted ones. Unreadable images
get ``decision="error"`` and no rank.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from detector_al.pseudo_labels import CealConfig, auto_accept, consistency
from detector_al.selection import class_balance_weights, cold_start, select_batch
from detector_al.types import Detections, ImagePredictions
from detector_al.uncertainty import Strategy

QUERY, AUTO_ACCEPT, REST, ERROR = "query", "auto_accept", "rest", "error"


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
    min_confidence: float = 0.25,
) -> Iterator[ScoredImage]:
    """Score each record and apply the CEAL auto-accept test; keep boxes at ``conf >= min_confidence``."""
    ceal = ceal or CealConfig()
    for p in preds:
        if not p.ok:
            yield ScoredImage(source=p.source, decision=ERROR, error=p.error)
            continue
        score = float(strategy.score(p))
        verdict = auto_accept(p, consistency(p), round_index, ceal)
        shown = p.detections[p.detections.confidence >= min_confidence]
        yield ScoredImage(
            source=p.source,
            width=p.width,
            height=p.height,
            score=score,
            decision=AUTO_ACCEPT if verdict.accepted else REST,
            detections=shown,
            pseudo_labels=verdict.pseudo_labels if verdict.accepted else Detections.empty(),
            embedding=p.embedding,
            reason=verdict.reason,
        )


def assign_queue(
    images: list[ScoredImage],
    budget: int,
    diversity: bool = True,
    cold: bool = False,
    seed: int = 0,
    labeled_emb: np.ndarray | None = None,
    labeled_class_counts: np.ndarray | None = None,
) -> list[ScoredImage]:
    """Choose the query batch among the non-accepted images and number the whole queue (in place).

    With ``labeled_class_counts`` (boxes per class in the labeled set), the selection favours images whose
    predicted classes are rare there: scores are multiplied by
    :func:`~detector_al.selection.class_balance_weights` before choosing (the stored scores stay raw).
    """
    pending = [i for i, s in enumerate(images) if s.decision == REST]
    if pending:
        scores = np.array([images[i].score for i in pending], np.float64)
        if labeled_class_counts is not None:
            scores = scores * class_balance_weights(
                [np.unique(images[i].detections.class_id) for i in pending], labeled_class_counts
            )
        emb = np.stack([images[i].embedding for i in pending])
        if cold:
            picked = cold_start(emb, budget, seed, labeled_emb)
        else:
            picked = select_batch(scores, emb, budget, labeled_emb=labeled_emb, diversity=diversity)
        chosen = [pending[j] for j in picked]
    else:
        chosen = []
    for i in chosen:
        images[i].decision = QUERY
    rest = sorted((i for i in pending if images[i].decision == REST), key=lambda i: -images[i].score)
    accepted = sorted((i for i, s in enumerate(images) if s.decision == AUTO_ACCEPT), key=lambda i: images[i].score)
    for rank, i in enumerate([*chosen, *rest, *accepted], 1):
        images[i].rank = rank
    return images


def summary(images: list[ScoredImage]) -> dict:
    """Counts per decision and score quantiles, for printing."""
    counts = {d: sum(s.decision == d for s in images) for d in (QUERY, REST, AUTO_ACCEPT, ERROR)}
    scores = np.array([s.score for s in images if s.score is not None])
    q = {}
    if scores.size:
        q = {f"p{int(k * 100)}": float(np.quantile(scores, k)) for k in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)}
    return {"counts": counts, "quantiles": q}
