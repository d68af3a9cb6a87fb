"""When to stop labeling: stabilizing predictions (Bloodgood and Vijay-Shanker 2009) carried to detection.

A fixed, seeded **stop set** of the project's images is predicted by every promoted model. The **agreement** of two
consecutive models is the box-level F1 of their detections on it:
``F1 = 2 * matched / (boxes_a + boxes_b)`` summed over the stop set, ``matched`` = pairs of the same class at IoU
>= 0.5 (:func:`~detector_al.model.geometry.same_class_matches`); images where neither model sees a box agree and add
nothing (1.0 when no image holds a box). The signal **fires** when the agreement has stayed at or above
``threshold`` for the last ``patience`` promotions: more labels of this kind are unlikely to change the model much.

Example:
    >>> stopping_state([0.62, 0.91, 0.95], threshold=0.9, patience=2)["stop"]
    True
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Sequence

from detector_al.model.geometry import same_class_matches
from detector_al.model.predictions import Detections

STOP_SET_SIZE = 50
DEFAULT_THRESHOLD = 0.85
"""Chosen on val (``benchmarks/bench_stopping.py`` over BCCD's 15 simulated runs, 40 -> 100 labels): with patience 2
it fired in 12 of 15 runs, about one round after the val curve reached 95 % of its final value, losing
+0.006 [-0.003, +0.015] val mAP50; 0.9 fired in 1 of 15 (docs/benchmarks.md, "The stopping signal")."""
DEFAULT_PATIENCE = 2


def stop_set(project: int, task_ids: Iterable[int], size: int = STOP_SET_SIZE) -> list[int]:
    """The project's stop set: the ``size`` task ids with the smallest ``sha256("<project>:<task id>")``; fixed for a
    given pool, and stable as tasks are added (a new task enters only if its hash is smaller)."""
    key = lambda t: hashlib.sha256(f"{project}:{t}".encode()).hexdigest()  # noqa: E731
    kept: list[tuple[str, int]] = []  # the ``size`` smallest hashes so far, as a max-heap (negated): bounded memory
    members: set[int] = set()
    for t in task_ids:
        if t in members:
            continue
        k = key(t)
        if len(kept) < size:
            heapq.heappush(kept, (_Desc(k), t))
            members.add(t)
        elif k < kept[0][0].key:
            members.discard(heapq.heapreplace(kept, (_Desc(k), t))[1])
            members.add(t)
    return [t for _, t in sorted(kept, key=lambda kt: kt[0].key)]


class _Desc:
    """A hash ordered backwards, so that :mod:`heapq`'s min-heap keeps the largest of the smallest on top."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __lt__(self, other: _Desc) -> bool:
        return self.key > other.key


def agreement(a: Sequence[Detections], b: Sequence[Detections]) -> float:
    """Box-level F1 between two models' detections on the same images (the module docstring)."""
    matched = total = 0
    for x, y in zip(a, b, strict=True):
        matched += same_class_matches(x, y)
        total += len(x) + len(y)
    return 1.0 if total == 0 else 2.0 * matched / total


def stopping_state(
    agreements: Sequence[float], threshold: float = DEFAULT_THRESHOLD, patience: int = DEFAULT_PATIENCE
) -> dict:
    """``{"stop": bool, "streak": n, "threshold", "patience", "last": agreement or None, "rounds": n}``: ``stop``
    when the last ``patience`` agreements are all >= ``threshold``."""
    streak = 0
    for value in reversed(agreements):
        if value < threshold:
            break
        streak += 1
    return {
        "stop": streak >= patience,
        "streak": streak,
        "threshold": threshold,
        "patience": patience,
        "last": agreements[-1] if agreements else None,
        "rounds": len(agreements),
    }
