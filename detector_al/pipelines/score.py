"""Scoring a pool of image files into a ranked annotation queue, and writing it out: what ``detector-al score``
and the offline demo do (:mod:`detector_al.queue.ranking` holds the records and the queue order)."""

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
from detector_al.policy.decision import DecisionPolicy
from detector_al.policy.settings import POLICY
from detector_al.progress import track
from detector_al.queue.build import QUERY
from detector_al.queue.ranking import ScoredImage, assign_queue, scored_image
from detector_al.scoring.executor import scored_files_on

if TYPE_CHECKING:
    from detector_al.scoring.ray_stream import RayOptions


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
) -> list[ScoredImage]:
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
    records = [scored_image(f.decision) for f in files]
    return assign_queue(records, budget, labeled_class_counts=counts, **queue_options)


def write_queue_file(out: Path, records: list[ScoredImage], names: tuple[str, ...]) -> None:
    """The records as JSON Lines, or as CSV (one row per image, its labels joined) when ``out`` ends in .csv."""
    if out.suffix.lower() == ".csv":
        _write_csv(out, records, names)
        return
    with atomic_write(out) as f:
        for r in records:
            f.write(json.dumps(r.to_json(names)) + "\n")


def _write_csv(out: Path, records: list[ScoredImage], names: tuple[str, ...]) -> None:
    import csv

    with atomic_write(out) as f:
        w = csv.writer(f)
        w.writerow(["image", "score", "decision", "rank", "n_detections", "labels", "error"])
        for r in records:
            labels = ";".join(sorted({names[int(c)] for c in r.detections.class_id}))
            w.writerow(
                [
                    r.source,
                    "" if r.score is None else f"{r.score:.6g}",
                    r.decision,
                    "" if r.rank is None else r.rank,
                    len(r.detections),
                    labels,
                    r.error or "",
                ]
            )


def plot_queue_scores(records: list[ScoredImage], ceal: CealConfig, round_index: int, path: Path, title: str) -> Path:
    """A histogram of the scores with the round's auto-accept threshold and the lowest queried score marked."""
    from detector_al.plots import score_histogram

    query = [r.score for r in records if r.decision == QUERY]
    return score_histogram(
        np.array([r.score for r in records if r.score is not None]),
        path,
        {
            f"auto-accept delta_{round_index}": ceal.threshold(round_index),
            "lowest queried": min(query) if query else None,
        },
        title=title,
    )
