"""The annotation queue: the order in which annotators get images, and the numbers that tell Label Studio.

Queue order (position 0, 1, ...): the batch, in the order picked, then the other uncertain images by
descending uncertainty, then the auto-accepted (CEAL) images by descending uncertainty. Unreadable images are
not in the queue. Once the model is warm the batch is its most uncertain images
(:func:`~detector_al.queue.selection.select_batch`: near-duplicates skipped; spread by k-center with ``diversity``).
While it is cold its uncertainty means little, and the batch is TypiClust's instead (typical images of the
embedding clusters the labeled images do not cover, :func:`cold_start_batch`): cold is
:func:`~detector_al.queue.selection.use_cold_start`, fewer than half of the pool's images holding a box at confidence
>= 0.5. The switch is automatic, made anew at every build from the pool's ``max_confidence``
(:attr:`~detector_al.policy.decision.Decision.max_confidence`); a caller that gives none (the cold start turned off,
:data:`~detector_al.policy.settings.COLD_START`) always gets the uncertainty batch.

What an annotator gets from "Label All Tasks" is decided by the project's sampling. With
``"Uncertainty sampling"`` (:data:`UNCERTAINTY_SAMPLING`, set by the backend and by ingest), Label Studio
serves the tasks whose prediction carries the project's ``model_version``, lowest prediction ``score``
first. So the prediction score is a strictly increasing function of the queue position, in three bands:

- the batch, place ``i`` of ``B``:   ``score = 0.1 * (i + 1) / (B + 1)``           in (0, 0.1)
- the other uncertain images:      ``score = 0.1 + 0.4 * c``                     in (0.1, 0.5]
- auto-accepted images:            ``score = 0.5 + 0.5 * c``                     in (0.5, 1]

with ``c = 1 / (1 + u / scale)`` the strategy's confidence for uncertainty ``u``
(:meth:`~detector_al.policy.strategies.Strategy.confidence`), decreasing in ``u``. An image scored alone (the
backend's per-task ``/predict``) gets the score of its band without knowing the batch, and that score is
already in queue order against every other task of its band. The Data Manager tabs sort by
``al_priority = 1 - score`` (descending: the same order).

Label Studio's sampling also rotates annotators over the prediction ``cluster`` (least-labeled cluster
first, *before* the score). That rule is lexicographic: a cluster with nothing labeled yet would jump
ahead of every other, so an auto-accepted image in such a cluster would be served before queued ones.
Predictions therefore carry no cluster: the batch is already spread over the embedding space by
k-center greedy, and the stream serves it in exactly this order.

Example:
    >>> import numpy as np
    >>> q = build_queue(np.array([0.9, 0.1, 0.5, 0.2]), np.array([False, False, False, True]),
    ...                 np.eye(4, dtype=np.float32), budget=1)
    >>> [e.status for e in q], [e.position for e in q]
    (['query', 'rest', 'rest', 'auto_accept'], [0, 2, 1, 3])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from detector_al.policy.settings import DIVERSITY
from detector_al.queue.selection import select_batch, typiclust, use_cold_start

QUERY, REST, AUTO_ACCEPT, ERROR = "query", "rest", "auto_accept", "error"
UNCERTAINTY_SAMPLING = "Uncertainty sampling"
BATCH_TOP, REST_TOP = 0.1, 0.5
"""The bands' upper ends: the batch in ``(0, BATCH_TOP)``, the rest in ``[BATCH_TOP, REST_TOP]``, auto-accepted above."""


def default_confidence(u: float) -> float:
    """``1 / (1 + u)``: the confidence of a strategy whose typical score is 1."""
    return 1.0 / (1.0 + max(float(u), 0.0))


def label_studio_score(
    status: str, confidence: float, batch_position: int | None = None, batch_size: int | None = None
) -> float:
    """The prediction score Label Studio serves by (lowest first): see the module docstring for the bands.

    Args:
        status: :data:`QUERY`, :data:`REST` or :data:`AUTO_ACCEPT`.
        confidence: the strategy's confidence in (0, 1] (used for rest and auto-accepted images).
        batch_position, batch_size: the place ``i`` in the batch of ``B`` (for :data:`QUERY`).

    Example:
        >>> label_studio_score("query", 0.3, 0, 4), label_studio_score("rest", 1.0), label_studio_score("auto_accept", 0.2)
        (0.02, 0.5, 0.6)
    """
    if status == QUERY:
        if batch_position is None or not batch_size:
            raise ValueError("a queried image needs its batch position and the batch size")
        return BATCH_TOP * (batch_position + 1) / (batch_size + 1)
    c = min(max(float(confidence), 0.0), 1.0)
    if status == REST:
        return BATCH_TOP + (REST_TOP - BATCH_TOP) * c
    if status == AUTO_ACCEPT:
        return REST_TOP + (1.0 - REST_TOP) * c
    raise ValueError(f"no queue score for status {status!r}")


def queue_band(ls_score: float | None) -> str | None:
    """The band a prediction score was served in, the inverse of :func:`label_studio_score`'s bands: :data:`QUERY`
    below ``BATCH_TOP``, :data:`REST` up to ``REST_TOP``, :data:`AUTO_ACCEPT` above; None without a score.

    Example:
        >>> [queue_band(label_studio_score(s, 0.3, 0, 4)) for s in (QUERY, REST, AUTO_ACCEPT)]
        ['query', 'rest', 'auto_accept']
    """
    if ls_score is None:
        return None
    return QUERY if ls_score < BATCH_TOP else REST if ls_score <= REST_TOP else AUTO_ACCEPT


def priority(ls_score: float) -> float:
    """``al_priority = 1 - score``: the tabs' descending order is the queue order."""
    return 1.0 - ls_score


@dataclass(frozen=True)
class QueueEntry:
    """One image's place: its status, position (0 = first served) and the score Label Studio serves by."""

    status: str
    position: int
    score: float

    @property
    def priority(self) -> float:
        return priority(self.score)


def build_queue(
    uncertainty: np.ndarray,
    accepted: np.ndarray,
    embeddings: np.ndarray,
    budget: int,
    confidence: Callable[[float], float] = default_confidence,
    batch: np.ndarray | None = None,
    diversity: bool = DIVERSITY,
    max_confidence: np.ndarray | None = None,
    labeled_embeddings: np.ndarray | None = None,
) -> list[QueueEntry]:
    """The queue over a pool: one :class:`QueueEntry` per image, in input order.

    Args:
        uncertainty: (N,) strategy scores (higher = more uncertain).
        accepted: (N,) CEAL decisions (True = auto-accepted, never in the batch).
        embeddings: (N, D) image embeddings, for the batch's diversity.
        budget: batch size ``B`` (at most the number of non-accepted images).
        confidence: the strategy's ``u -> c`` map (:meth:`Strategy.confidence`).
        batch: indices of the batch already chosen (e.g. class balance); default: :func:`cold_start_batch` while
            the model is cold (with ``max_confidence``), else :func:`~detector_al.queue.selection.select_batch` over the
            non-accepted images.
        diversity: with False (:data:`~detector_al.policy.settings.DIVERSITY`), the uncertainty batch is the
            top-``budget`` by uncertainty, near-duplicates skipped; with True, k-center over ``4 x budget``.
        max_confidence: (N,) each image's highest box confidence (0 with no box), for the cold-start rule;
            None: always the uncertainty batch.
        labeled_embeddings: (M, D) embeddings of the labeled images: the clusters a cold batch leaves alone.
    """
    u = np.asarray(uncertainty, np.float64)
    acc = np.asarray(accepted, bool)
    pending = np.flatnonzero(~acc)
    if batch is None and max_confidence is not None:
        batch = cold_start_batch(max_confidence, acc, embeddings, budget, labeled_embeddings)  # None when warm
    if batch is None:
        picked = select_batch(
            u[pending], np.asarray(embeddings)[pending], min(budget, len(pending)), diversity=diversity
        )
        batch = pending[picked]
    batch = [int(i) for i in batch]
    in_batch = set(batch)
    rest = sorted((int(i) for i in pending if int(i) not in in_batch), key=lambda i: (-u[i], i))
    auto = sorted((int(i) for i in np.flatnonzero(acc)), key=lambda i: (-u[i], i))
    out: list[QueueEntry | None] = [None] * len(u)
    for pos, i in enumerate(batch):
        out[i] = QueueEntry(QUERY, pos, label_studio_score(QUERY, 0.0, pos, len(batch)))
    for pos, i in enumerate(rest, len(batch)):
        out[i] = QueueEntry(REST, pos, label_studio_score(REST, confidence(u[i])))
    for pos, i in enumerate(auto, len(batch) + len(rest)):
        out[i] = QueueEntry(AUTO_ACCEPT, pos, label_studio_score(AUTO_ACCEPT, confidence(u[i])))
    return out  # type: ignore[return-value]


def cold_start_batch(
    max_confidence: np.ndarray,
    accepted: np.ndarray,
    embeddings: np.ndarray,
    budget: int,
    labeled_embeddings: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray | None:
    """The batch to pass to :func:`build_queue` while the model is cold, else ``None`` (choose by uncertainty).

    Cold is :func:`~detector_al.queue.selection.use_cold_start` over every image's highest box confidence; then the
    batch is :func:`~detector_al.queue.selection.typiclust` over the images not auto-accepted, with the labeled
    images' embeddings as the clusters already covered.
    """
    if not use_cold_start(max_confidence):
        return None
    pending = np.flatnonzero(~np.asarray(accepted, bool))
    emb = np.asarray(embeddings)
    return pending[typiclust(emb[pending], min(budget, len(pending)), labeled_embeddings, seed)]


def pool_max_confidence(stored: Iterable[float | None]) -> np.ndarray | None:
    """The pool's ``max_confidence`` for :func:`build_queue` from stored rows, or None when any row lacks it.

    A row written by an older version (before the column existed) holds NULL. Counting it as 0.0 ("no box")
    would call a warm model cold and swap the uncertainty batch for a TypiClust one until that row is scored
    again; so a pool with any such row gets today's uncertainty batch (None), and the switch starts working once
    every row has been scored by this version.
    """
    values = list(stored)
    if any(v is None for v in values):
        return None
    return np.asarray(values, np.float64)


def embedding_matrix(stored: Iterable[bytes | None], dim: int) -> np.ndarray | None:
    """(M, dim) float32 embeddings from stored blobs (the others' size is another model's: left out); None if none."""
    rows = [np.frombuffer(b, np.float32) for b in stored if b is not None and len(b) == 4 * dim]
    return np.stack(rows) if rows else None
