"""Bulk pre-annotation of an image folder into a prioritised Label Studio queue (or an import file).

The folder is streamed in batches: each batch is hashed, predicted, scored and auto-accepted, its tasks
are created in Label Studio (with pre-annotations and the priority fields ``al_priority``,
``al_uncertainty``, ``al_status``, ``al_hash``) and only then recorded in the SQLite store, so memory
stays flat whatever the folder size, and a run killed at any point resumes: the content hash decides
(Label Studio's ``al_hash`` fields are read back at start, so even a lost store creates no duplicate).

Once every image is scored, the query batch is chosen over the whole project (diverse, by uncertainty)
and only the tasks whose status changed are updated. The "Active learning queue" tab lists the uncertain
tasks by descending ``al_priority``; "Auto-accepted (review)" lists the CEAL pseudo-labelled ones.

The queue (:func:`detector_al.queue.build.build_queue`) reaches annotators through Label Studio's "Uncertainty
sampling", which ingest sets on the project: each task's prediction ``score`` is its queue band's score
(:func:`detector_al.queue.build.label_studio_score`), and ``al_priority = 1 - score`` orders the tabs the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from detector_al.io.images import iter_images
from detector_al.label_studio.config import RectangleTarget
from detector_al.label_studio.project_queue import plan_project_queue, refresh_queue, stored_place
from detector_al.label_studio.publish import configure_project
from detector_al.label_studio.task_sink import LabelStudioSink
from detector_al.model.detector import Detector
from detector_al.pipelines.ingest_export import OFFLINE_PROJECT
from detector_al.pipelines.ingest_setup import IngestConfig
from detector_al.pipelines.ingest_writer import BackgroundWriter, BatchWriter, IngestReport
from detector_al.policy.decision import DecisionPolicy
from detector_al.policy.strategies import serving_strategy
from detector_al.progress import track
from detector_al.queue.build import AUTO_ACCEPT, QueueEntry
from detector_al.scoring.executor import scored_files_on
from detector_al.scoring.file_stream import ScoredFile
from detector_al.state.pool_table import pool_row
from detector_al.state.store import PoolRow, Store

if TYPE_CHECKING:
    from detector_al.scoring.ray_stream import RayOptions

log = logging.getLogger(__name__)

__all__ = ["OFFLINE_PROJECT", "IngestConfig", "IngestReport", "ingest", "plan_queue"]


def walk_images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder``, recursively, streamed (:func:`detector_al.io.images.iter_images`)."""
    return iter_images(folder)


def count_images(folder: Path) -> int:
    return sum(1 for _ in walk_images(folder))


def plan_queue(
    store: Store, project: int, budget: int, confidence, labeled: set[int] = frozenset(), cold_start: bool = False
) -> list[tuple[PoolRow, QueueEntry]]:
    """Every scored, not yet labeled image of the project with its queue entry (``labeled``: task ids that have an
    annotation), planned as the end of ingest plans it (:func:`~detector_al.label_studio.project_queue.plan_project_queue`
    over every model version; entries outside the batch have position -1). A listing, for people and tests; the end
    of ingest streams instead."""
    plan = plan_project_queue(store, project, None, budget, confidence, cold_start, labeled)
    rows = store.iter_queue(project, None, columns="*")
    return [(pool_row(r), plan.entry(stored_place(r))) for r in rows if r["task_id"] not in labeled]


def ingest(
    folder: Path,
    det: Detector,
    store: Store,
    target: RectangleTarget,
    cfg: IngestConfig,
    sink: LabelStudioSink | None = None,
    project: int = OFFLINE_PROJECT,
    ray: RayOptions | None = None,
) -> IngestReport:
    """Score every image under ``folder`` into ``store`` (and Label Studio when ``sink`` is given); with ``ray``,
    the scoring runs on a Ray actor pool (:mod:`detector_al.scoring.ray_stream`) and this process writes."""
    start = time.perf_counter()
    report = IngestReport()
    if sink is not None:  # the tabs first: a project watched during a long run shows its queue filling
        sink.ensure_tabs()
    known_ls = sink.known_hashes() if sink else {}
    stored = store.image_hashes(project)
    if sink is not None:  # tasks deleted in Label Studio since: forgotten, so their files make new tasks
        gone = {t for t in stored.values() if t is not None} - sink.task_ids
        if gone:
            store.forget_tasks(project, gone)
            report.deleted_tasks = len(gone)
            stored = store.image_hashes(project)
    policy = DecisionPolicy(cfg.policy.strategy, cfg.round_index, cfg.policy.ceal, cfg.policy.score_threshold)
    files = scored_files_on(ray, det, walk_images(folder), policy, batch_size=cfg.batch_size, skip=stored.keys())
    writer = BatchWriter(det, store, target, cfg, sink, project, report)
    with BackgroundWriter(writer.write) as write:  # Label Studio and the store are written while the next batch scores
        pending: list[tuple[ScoredFile, int | None]] = []
        total = count_images(folder)
        for item in _new_files(track(files, total, "ingest"), known_ls, report):
            pending.append(item)
            if len(pending) >= request_size(cfg.tasks_per_request, total - report.scanned):
                write(pending)
                pending = []
        write(pending)
    report.elapsed_s = time.perf_counter() - start
    report.write_s, report.write_cpu_s, report.waited_s = write.busy_s, write.busy_cpu_s, write.waited_s
    listed = set(report.failed)  # the run's own failures, then the stored ones not listed yet (once each)
    for row in store.iter_pool(project, "error IS NOT NULL AND task_id IS NULL"):  # unreadable files: no task
        if (row.path, row.error) not in listed:
            listed.add((row.path, row.error))
            report.failed.append((row.path, row.error))
    queue_start = time.perf_counter()
    _refresh_queue(store, project, det.version, cfg, sink, report)
    report.queue_s = time.perf_counter() - queue_start
    return report


TAIL_TASKS_PER_REQUEST = 64
"""Tasks per import request once fewer than a full request's images are left to score: what is still to write when
the scoring ends (and the run waits for it) is at most this many tasks."""


def request_size(full: int, left: int) -> int:
    """Tasks per import request with ``left`` images still to score: ``full``, or at most
    :data:`TAIL_TASKS_PER_REQUEST` for the last ones (``left < full``)."""
    return full if left >= full else min(full, TAIL_TASKS_PER_REQUEST)


def _new_files(
    files: Iterable[ScoredFile], known_ls: dict[str, int], report: IngestReport
) -> Iterator[tuple[ScoredFile, int | None]]:
    """The scored files not ingested before, with their task id in Label Studio when a task exists (counted)."""
    seen: set[str] = set()
    for f in files:
        report.scanned += 1
        if f.content_hash is None:  # its bytes could not be read: it fails alone, retried by the next run
            report.failed.append((f.path, f.decision.error))
            continue
        if f.decision is None or f.content_hash in seen:  # ingested before, or the same bytes twice
            report.already_known += 1
            continue
        seen.add(f.content_hash)
        if f.content_hash in known_ls:  # a task exists (a run killed before it could record it): create nothing
            report.already_known += 1
        else:
            report.new += 1
        yield f, known_ls.get(f.content_hash)


def _refresh_queue(
    store: Store,
    project: int,
    model_version: str,
    cfg: IngestConfig,
    sink: LabelStudioSink | None,
    report: IngestReport,
) -> None:
    """Choose the query batch over the whole project and write the places that changed: Label Studio first, the store
    after, so a failed update is retried by the next run. In Label Studio the project's one queue
    (:func:`~detector_al.label_studio.project_queue.refresh_queue`: the tasks ingest made and those the backend
    predicted, one batch); offline, the ingested images by content hash."""
    confidence = serving_strategy(cfg.policy.strategy).confidence
    budget, cold_start = cfg.policy.budget, cfg.policy.cold_start
    if sink is not None:
        done = refresh_queue(store, sink.ls, project, model_version, budget, confidence, cold_start, sink.labeled)
        configure_project(sink.ls, store, project, model_version)
    else:
        done = refresh_queue(store, None, project, None, budget, confidence, cold_start)
    report.queried = done.batch
    report.auto_accepted = store.count_pool(project, f"decision = '{AUTO_ACCEPT}'")
