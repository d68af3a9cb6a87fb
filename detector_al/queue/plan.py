"""The queue of a stored pool, planned in bounded memory: what the end of ``ingest`` and the backend's queue
refresh run over projects of any size.

:func:`~detector_al.queue.build.build_queue` holds the whole pool (every embedding) in memory. For a stored pool only the
batch depends on other images: an image outside it gets its band's score from its own uncertainty
(:func:`~detector_al.queue.build.label_studio_score`). So :func:`plan_stored_queue` streams the pool twice:

1. once to keep the ``K`` most uncertain images not auto-accepted (``K = CANDIDATES_PER_SLOT x budget``, at least
   ``MIN_CANDIDATES``), with the cold start on a seeded uniform sample of ``COLD_SAMPLE`` of them (reservoir
   sampling), and every image's
   highest box confidence (8 bytes an image, for the one cold-start rule); then it chooses the batch as
   ``build_queue`` does: :func:`~detector_al.queue.selection.select_batch` over the candidates while the model is warm
   (the same batch as over the whole pool, since that batch is drawn from the top ``4 x budget`` distinct
   images; should near-duplicates leave fewer than that among ``K``, ``K`` grows and the pass is repeated),
   TypiClust over the sample while it is cold (exactly ``build_queue``'s batch up to ``COLD_SAMPLE`` images);
2. once more to give each image its entry (:meth:`QueuePlan.entry`), so a caller writes only what changed.

Memory: ``K + COLD_SAMPLE`` embeddings, whatever the pool's size.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

import numpy as np

from detector_al.policy.settings import DIVERSITY
from detector_al.queue.build import AUTO_ACCEPT, QUERY, REST, QueueEntry, label_studio_score
from detector_al.queue.selection import DEFAULT_CANDIDATE_FACTOR, select_batch, typiclust, use_cold_start
from detector_al.queue.selection import candidates as distinct_top

CANDIDATES_PER_SLOT = 10
MIN_CANDIDATES = 256
COLD_SAMPLE = 4096


@dataclass(frozen=True)
class StoredPlace:
    """One scored, unlabeled image of a stored pool as the queue sees it.

    Attributes:
        key: its id in the store (task id or content hash).
        uncertainty: the strategy's score. accepted: CEAL auto-accepted.
        max_confidence: its highest shown box confidence; None when stored before the column existed.
        embedding: float32 bytes.
    """

    key: Hashable
    uncertainty: float
    accepted: bool
    max_confidence: float | None
    embedding: bytes


@dataclass(frozen=True)
class QueuePlan:
    """The batch (key -> place) and the strategy's confidence map: enough to give any image of the pool its entry."""

    batch: dict
    confidence: Callable[[float], float]
    cold: bool

    def entry(self, place: StoredPlace) -> QueueEntry:
        """The image's :class:`~detector_al.queue.build.QueueEntry`: its batch place, else its band's score (``position``
        -1: outside the batch the order is the score's)."""
        pos = self.batch.get(place.key)
        if pos is not None:
            return QueueEntry(QUERY, pos, label_studio_score(QUERY, 0.0, pos, len(self.batch)))
        status = AUTO_ACCEPT if place.accepted else REST
        return QueueEntry(status, -1, label_studio_score(status, self.confidence(place.uncertainty)))


def plan_stored_queue(
    places: Callable[[], Iterable[StoredPlace]],
    budget: int,
    confidence: Callable[[float], float],
    *,
    cold_start: bool = False,
    labeled_embeddings: Callable[[int], np.ndarray | None] | None = None,
    diversity: bool = DIVERSITY,
    top_k: int | None = None,
    seed: int = 0,
    cold: bool | None = None,
) -> QueuePlan:
    """Choose the batch of a stored pool in bounded memory (see the module docstring).

    Args:
        places: a function that streams the pool (called once per pass; the same order each time).
        cold_start: use the cold-start rule (off, or any image without ``max_confidence``: the uncertainty batch).
        labeled_embeddings: a function of the embedding size D giving the labeled images' (M, D) embeddings
            (called only when the model is cold): the clusters a cold batch leaves alone.
        cold: the cold-start rule's answer when the caller already knows it (with ``cold_start``): a warm pool's
            scan then keeps no sample (``COLD_SAMPLE`` embeddings fewer).
    """
    k = top_k or max(MIN_CANDIDATES, CANDIDATES_PER_SLOT * budget)
    while True:
        scan = _scan(places(), k, COLD_SAMPLE if cold_start and cold is not False else 0, seed)
        if budget <= 0 or scan.pending == 0:
            return QueuePlan({}, confidence, False)
        if cold is not None:
            cold = cold_start and cold
        else:
            cold = cold_start and scan.max_confidence is not None and use_cold_start(scan.max_confidence)
        if cold:
            keys, emb = scan.sample
            covered = labeled_embeddings(emb.shape[1]) if labeled_embeddings is not None else None
            picked = typiclust(emb, min(budget, len(keys)), covered, seed)
            return QueuePlan({keys[int(i)]: pos for pos, i in enumerate(picked)}, confidence, True)
        keys, u, emb = scan.top
        need = budget * (DEFAULT_CANDIDATE_FACTOR if diversity else 1)  # the distinct images select_batch reads
        if len(keys) >= scan.pending or len(distinct_top(u, emb, need)) >= need:
            picked = select_batch(u, emb, budget, diversity=diversity)
            return QueuePlan({keys[int(i)]: pos for pos, i in enumerate(picked)}, confidence, False)
        k *= 4  # near-duplicates filled the candidates: look further down the pool


@dataclass
class _Scan:
    pending: int
    top: tuple[list, np.ndarray, np.ndarray]  # keys, uncertainties, embeddings of the K most uncertain, best first
    sample: tuple[list, np.ndarray]  # keys and embeddings of a uniform sample of the pending images, stream order
    max_confidence: np.ndarray | None  # of every image (None if any lacks it)


def _scan(places: Iterable[StoredPlace], k: int, sample_size: int, seed: int) -> _Scan:
    rng = np.random.default_rng(seed)
    heap: list[tuple[float, int, Hashable, bytes]] = []  # min-heap on (u, -order): the K largest by (u, then order)
    sample: list[tuple[int, Hashable, bytes]] = []
    max_conf = array("d")  # 8 bytes an image (a list of floats takes 32)
    missing = False
    pending = 0
    for order, p in enumerate(places):
        if p.max_confidence is None:
            missing = True
        else:
            max_conf.append(p.max_confidence)
        if p.accepted:
            continue
        pending += 1
        item = (float(p.uncertainty), -order, p.key, p.embedding)
        if len(heap) < k:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)
        if len(sample) < sample_size:  # reservoir sampling (Algorithm R)
            sample.append((order, p.key, p.embedding))
        elif sample_size:
            j = int(rng.integers(0, pending))
            if j < sample_size:
                sample[j] = (order, p.key, p.embedding)
    best = sorted(heap, key=lambda t: (-t[0], -t[1]))  # descending uncertainty, stream order among ties
    sample.sort(key=lambda t: t[0])
    return _Scan(
        pending,
        ([t[2] for t in best], np.array([t[0] for t in best], np.float64), _matrix([t[3] for t in best])),
        ([t[1] for t in sample], _matrix([t[2] for t in sample])),
        None if missing else np.asarray(max_conf, np.float64),
    )


def _matrix(blobs: list[bytes]) -> np.ndarray:
    return np.stack([np.frombuffer(b, np.float32) for b in blobs]) if blobs else np.zeros((0, 0), np.float32)
