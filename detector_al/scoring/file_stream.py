"""Files in, one :class:`~detector_al.policy.decision.Decision` per file out: the stream that ``score`` and ``ingest``
consume, on this process (:func:`scored_files`) or on Ray (:mod:`detector_al.scoring.ray_stream`, which runs this
same function inside each worker, so both paths give the same records).

Each file is hashed (SHA-256 of its bytes, the identity that makes ``ingest`` idempotent); a file whose hash is in
``skip`` (ingested before) or was met earlier in the stream (the same bytes twice) is passed through unscored
(``decision=None``), a file that cannot be read gets an error decision and no hash, the others are predicted in batches and decided. The output keeps the input order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from detector_al.io.files import file_sha256
from detector_al.model.detector import BATCH_SIZE, Detector
from detector_al.policy.decision import Decision, DecisionPolicy
from detector_al.queue.build import ERROR


@dataclass(frozen=True)
class ScoredFile:
    """One file of the stream: its content hash (None when not hashed) and its decision (None: not scored, its
    hash was known)."""

    path: str
    content_hash: str | None
    decision: Decision | None


def scored_files(
    det: Detector,
    paths: Iterable[str | Path],
    policy: DecisionPolicy,
    *,
    batch_size: int = BATCH_SIZE,
    skip: Collection[str] = frozenset(),
    hash_files: bool = True,
) -> Iterator[ScoredFile]:
    """Hash, predict and decide every file, in input order (see the module docstring).

    Decoding and hashing run ahead of inference by at most one batch (:meth:`Detector.predict`), so memory is
    bounded by the batch size, whatever the number of files.

    Args:
        skip: content hashes not to score (ingested before).
        hash_files: False: no hashing and no skipping (``score``, which keeps no state).
    """
    order: deque[ScoredFile | tuple[str, str | None]] = deque()  # input order: done, or (path, hash) predicting
    seen: set[str] = set()

    def to_predict() -> Iterator[str]:
        for p in paths:
            path = str(p)
            try:
                h = file_sha256(p) if hash_files else None
            except OSError as exc:  # unreadable bytes: this file fails alone
                order.append(ScoredFile(path, None, Decision(path, ERROR, error=f"cannot read the file: {exc}")))
                continue
            if h is not None and (h in skip or h in seen):
                order.append(ScoredFile(path, h, None))
                continue
            if h is not None:
                seen.add(h)
            order.append((path, h))
            yield path

    def done() -> Iterator[ScoredFile]:
        while order and isinstance(order[0], ScoredFile):
            yield order.popleft()

    for pred in det.predict(to_predict(), batch_size=batch_size, views=policy.views):
        yield from done()
        path, h = order.popleft()
        yield ScoredFile(path, h, policy(pred))
    yield from done()
