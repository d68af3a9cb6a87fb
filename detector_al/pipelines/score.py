"""Scoring a pool of image files into a ranked annotation queue, and writing it out: what ``detector-al score``
and the offline demo do (:mod:`detector_al.queue.ranking` holds the queue order). The queue is a list of
:data:`Ranked` pairs: each image's :class:`~detector_al.policy.decision.Decision` and its
:class:`~detector_al.queue.build.QueueEntry` (None: unreadable)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detector_al.io.files import atomic_write
from detector_al.io.yolo_format import class_counts
from detector_al.model.detector import BATCH_SIZE, Detector
from detector_al.policy.ceal import CealConfig
from detector_al.policy.decision import Decision, DecisionPolicy
from detector_al.policy.settings import POLICY
from detector_al.progress import track
from detector_al.queue.build import QUERY, QueueEntry
from detector_al.queue.ranking import assign_queue, queue_record
from detector_al.scoring.executor import scored_files_on

if TYPE_CHECKING:
    from detector_al.scoring.ray_stream import RayOptions

Ranked = tuple[Decision, QueueEntry | None]
"""One image of a scored pool: its decision and its place in the queue (None: unreadable)."""


def score_files(
    det: Detector,
    sources: Sequence[Path],
    strategy: str,
    budget: int,
    *,
    round_index: int = 0,
    ceal: CealConfig | None = None,
    score_threshold: float = POLICY.score_threshold,
    batch_size: int = BATCH_SIZE,
    balance_classes: Path | None = None,
    progress: str | None = None,
    ray: RayOptions | None = None,
    **queue_options,
) -> list[Ranked]:
    """Predict, decide and rank ``sources``: :func:`~detector_al.scoring.file_stream.scored_files` (on Ray with
    ``ray``: :func:`~detector_al.scoring.ray_stream.ray_scored_files`, the same records), then
    :func:`~detector_al.queue.ranking.assign_queue`.

    Args:
        balance_classes: a folder of the labeled set's YOLO label files: the batch favours images of the classes
            rare there.
        progress: the label of a progress display, or None for none.
        queue_options: diversity, cold, cold_start, seed (:func:`~detector_al.queue.ranking.assign_queue`).

    Raises:
        NotADirectoryError: ``balance_classes`` is not a folder (checked before predicting).
    """
    counts = None
    if balance_classes is not None:
        if not balance_classes.is_dir():
            raise NotADirectoryError(f"not a folder of YOLO label files: {balance_classes}")
        counts = class_counts(balance_classes, len(det.names))
    policy = DecisionPolicy(strategy, round_index, ceal, score_threshold)
    files = scored_files_on(ray, det, sources, policy, batch_size=batch_size, hash_files=False)
    if progress is not None:
        files = track(files, len(sources), progress)
    decisions = [f.decision for f in files]
    entries = assign_queue(decisions, budget, labeled_class_counts=counts, **queue_options)
    return list(zip(decisions, entries, strict=True))


def write_queue_file(out: Path, records: list[Ranked], names: tuple[str, ...]) -> None:
    """The records as JSON Lines, or as CSV (one row per image, its labels joined) when ``out`` ends in .csv."""
    if out.suffix.lower() == ".csv":
        _write_csv(out, records, names)
        return
    with atomic_write(out) as f:
        for r in records:
            f.write(json.dumps(queue_record(*r, names)) + "\n")


def _write_csv(out: Path, records: list[Ranked], names: tuple[str, ...]) -> None:
    import csv

    with atomic_write(out) as f:
        w = csv.writer(f)
        w.writerow(["image", "score", "decision", "rank", "n_detections", "labels", "error"])
        for d, e in records:
            r = queue_record(d, e, names)
            labels = ";".join(sorted({names[int(c)] for c in d.shown.class_id}))
            w.writerow(
                [
                    d.source,
                    "" if d.score is None else f"{d.score:.6g}",
                    r["decision"],
                    "" if r["rank"] is None else r["rank"],
                    len(d.shown),
                    labels,
                    d.error or "",
                ]
            )


def plot_queue_scores(records: list[Ranked], ceal: CealConfig, round_index: int, path: Path, title: str) -> Path:
    """A histogram of the scores with the round's auto-accept threshold and the lowest queried score marked."""
    from detector_al.plots import score_histogram

    query = [d.score for d, e in records if e is not None and e.status == QUERY]
    return score_histogram(
        np.array([d.score for d, _ in records if d.score is not None]),
        path,
        {
            f"auto-accept delta_{round_index}": ceal.threshold(round_index),
            "lowest queried": min(query) if query else None,
        },
        title=title,
    )
