"""Where the file stream runs: on this process, or on Ray. The one place that chooses (``score`` and ``ingest`` call
it), so that neither stream knows of the other."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from detector_al.model.detector import BATCH_SIZE, Detector
from detector_al.policy.decision import DecisionPolicy
from detector_al.scoring.file_stream import ScoredFile, scored_files

if TYPE_CHECKING:
    from detector_al.scoring.ray_stream import RayOptions


def scored_files_on(
    ray: RayOptions | None,
    det: Detector,
    paths: Iterable[str | Path],
    policy: DecisionPolicy,
    *,
    batch_size: int = BATCH_SIZE,
    skip: Collection[str] = frozenset(),
    hash_files: bool = True,
) -> Iterator[ScoredFile]:
    """:func:`scored_files` here (``ray`` None) or on Ray (:func:`~detector_al.scoring.ray_stream.ray_scored_files`,
    with ``ray``'s own batch size): the one place that chooses."""
    if ray is None:
        return scored_files(det, paths, policy, batch_size=batch_size, skip=skip, hash_files=hash_files)
    from detector_al.scoring.ray_stream import ModelSpec, ray_scored_files

    return ray_scored_files(paths, ModelSpec.of(det), policy, ray, skip=skip, hash_files=hash_files)
