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

import json
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detector_al.io.files import atomic_write
from detector_al.io.images import iter_images
from detector_al.io.yolo_format import yolo_lines
from detector_al.label_studio.config import RectangleTarget
from detector_al.label_studio.publish import TaskQueueUpdate
from detector_al.label_studio.regions import to_label_studio_regions
from detector_al.label_studio.task_sink import LabelStudioSink, local_files_url
from detector_al.model.detector import Detector
from detector_al.policy.ceal import CealConfig
from detector_al.policy.decision import Decision, DecisionPolicy
from detector_al.policy.settings import COLD_START, POLICY, TASKS_PER_REQUEST
from detector_al.policy.strategies import DEFAULT_STRATEGY, serving_strategy
from detector_al.progress import track
from detector_al.queue.build import AUTO_ACCEPT, QueueEntry, embedding_matrix, label_studio_score, priority
from detector_al.queue.plan import QueuePlan, StoredPlace, plan_stored_queue
from detector_al.scoring.executor import scored_files_on
from detector_al.scoring.file_stream import ScoredFile
from detector_al.state.store import ImageRow, Store

if TYPE_CHECKING:
    from detector_al.scoring.ray_stream import RayOptions

log = logging.getLogger(__name__)

OFFLINE_PROJECT = 0


@dataclass
class IngestConfig:
    strategy: str = DEFAULT_STRATEGY
    round_index: int = 0
    budget: int = POLICY.budget
    ceal: CealConfig = field(default_factory=CealConfig)
    score_threshold: float = POLICY.score_threshold
    batch_size: int = 16
    tasks_per_request: int = TASKS_PER_REQUEST  # images scored, then created in Label Studio by one import request
    files_root: Path | None = None  # Label Studio's LOCAL_FILES_DOCUMENT_ROOT, when the folder is under it
    cold_start: bool = COLD_START  # a TypiClust batch while the model is cold (detector_al.queue.build)


@dataclass
class IngestReport:
    scanned: int = 0
    new: int = 0
    already_known: int = 0
    created_tasks: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why): unreadable or not uploaded
    not_uploaded: int = 0  # of ``failed``: readable, but Label Studio refused the file (retried by the next run)
    converted: int = 0  # files uploaded as a web copy (TIFF, HEIC, 16-bit...)
    auto_accepted: int = 0
    queried: int = 0
    elapsed_s: float = 0.0  # hashing, scoring and writing the tasks (the rate's clock)
    write_s: float = 0.0  # of which the writer thread spent creating tasks and storing rows (overlapped with scoring)
    write_cpu_s: float = 0.0  # of write_s, the writer thread's own CPU (the rest: waiting for Label Studio)
    waited_s: float = 0.0  # of elapsed_s, the scoring waited for the writer (what the writes really cost)
    queue_s: float = 0.0  # choosing the batch over the project and writing the changed priorities, after elapsed_s

    def summary(self) -> str:
        rate = self.new / self.elapsed_s if self.elapsed_s else 0.0
        unreadable = len(self.failed) - self.not_uploaded
        lines = [
            f"{self.scanned} files: {self.new} new ({rate:.1f} img/s), {self.already_known} already ingested, "
            f"{len(self.failed)} failed ({unreadable} unreadable, {self.not_uploaded} refused by Label Studio); "
            f"{self.created_tasks} tasks created ({self.converted} uploaded as web copies); "
            f"queue: {self.queried} to label, {self.auto_accepted} auto-accepted"
        ]
        lines.append(
            f"time: {self.elapsed_s:.1f} s scoring and writing (the writes took {self.write_s:.1f} s beside the "
            f"scoring, {self.write_cpu_s:.1f} s of it this process's CPU; the scoring waited {self.waited_s:.1f} s for "
            f"them), then {self.queue_s:.1f} s the queue"
        )
        lines += [f"  failed: {p}: {e}" for p, e in self.failed]
        return "\n".join(lines)


def walk_images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder``, recursively, streamed (:func:`detector_al.io.images.iter_images`)."""
    return iter_images(folder)


def _must_upload(row: ImageRow) -> bool:
    """A new task's image goes through upload: it has no Label Studio URL yet, or it lies under the shared
    local-files root but a browser cannot show it raw (TIFF, HEIC, 16-bit...), so its web copy is uploaded."""
    from detector_al.io.images import needs_web_copy

    return row.url is None or needs_web_copy(row.path)


def count_images(folder: Path) -> int:
    return sum(1 for _ in walk_images(folder))


def task_data(row: ImageRow) -> dict:
    return {
        "image": row.url,
        "al_hash": row.content_hash,
        "al_priority": round(row.priority or 0.0, 6),
        "al_uncertainty": None if row.score is None else round(row.score, 8),
        "al_status": row.decision,
    }


def label_studio_score_of(row: ImageRow) -> float:
    """The prediction score Label Studio serves by: ``1 - al_priority`` (see :mod:`detector_al.queue.build`)."""
    return 1.0 - (row.priority or 0.0)


def task_payload(row: ImageRow, model_version: str) -> dict:
    return {
        "data": task_data(row),
        "predictions": [
            {
                "result": json.loads(row.regions or "[]"),
                "score": label_studio_score_of(row),
                "model_version": model_version,
            }
        ],
    }


def image_row(d: Decision, content_hash: str, target: RectangleTarget, round_index: int, version: str) -> ImageRow:
    """The stored row of one file's decision (its Label Studio URL and task id are the writer's to add)."""
    if d.error:
        return ImageRow(content_hash, d.source, error=d.error, decision="error", model_version=version)
    pseudo = None
    if d.accepted:
        pl = d.pseudo_labels
        pseudo = json.dumps(
            {
                "xyxy": pl.xyxy.round(2).tolist(),
                "class_id": pl.class_id.tolist(),
                "confidence": pl.confidence.round(4).tolist(),
            }
        )
    return ImageRow(
        content_hash,
        d.source,
        width=d.width,
        height=d.height,
        score=d.score,
        confidence=round(d.confidence, 6),
        decision=d.status,
        priority=priority(label_studio_score(d.status, d.confidence)),
        round=round_index,
        model_version=version,
        regions=json.dumps(to_label_studio_regions(d.shown, d.width, d.height, target)),
        pseudo_labels=pseudo,
        embedding=d.embedding.astype(np.float32).tobytes(),
        max_confidence=d.max_confidence,
    )


def plan_queue(
    store: Store, project: int, budget: int, confidence, labeled: set[int] = frozenset(), cold_start: bool = False
) -> list[tuple[ImageRow, QueueEntry]]:
    """Every scored, not yet labeled image of the project with its queue entry (``labeled``: task ids that have an
    annotation), planned by :func:`plan_ingested_queue` (entries outside the batch have position -1). A listing,
    for people and tests; the end of ingest streams instead."""
    plan = plan_ingested_queue(store, project, budget, confidence, labeled, cold_start)
    rows = [r for r in store.iter_images(project, "error IS NULL") if r.task_id not in labeled]
    return [(r, plan.entry(_place(r))) for r in rows]


def plan_ingested_queue(
    store: Store, project: int, budget: int, confidence, labeled: set[int] = frozenset(), cold_start: bool = False
) -> QueuePlan:
    """The batch over the project's ingested images not labeled yet, in bounded memory
    (:func:`~detector_al.queue.plan.plan_stored_queue`). With ``cold_start``, a cold model's batch is TypiClust's,
    away from the labeled images' clusters."""

    def places() -> Iterator[StoredPlace]:
        return (_place(r) for r in store.iter_images(project, "error IS NULL") if r.task_id not in labeled)

    def labeled_embeddings(dim: int) -> np.ndarray | None:
        rows = store.iter_images(project, "error IS NULL AND task_id IS NOT NULL")
        return embedding_matrix((r.embedding for r in rows if r.task_id in labeled), dim)

    return plan_stored_queue(places, budget, confidence, cold_start=cold_start, labeled_embeddings=labeled_embeddings)


def _place(row: ImageRow) -> StoredPlace:
    # rows ingested before the column existed have no max_confidence: then no cold start
    return StoredPlace(row.content_hash, row.score, row.decision == AUTO_ACCEPT, row.max_confidence, row.embedding)


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
    policy = DecisionPolicy(cfg.strategy, cfg.round_index, cfg.ceal, cfg.score_threshold)
    files = scored_files_on(ray, det, walk_images(folder), policy, batch_size=cfg.batch_size, skip=stored.keys())
    writer = _BatchWriter(det, store, target, cfg, sink, project, report)
    with _Background(writer.write) as write:  # Label Studio and the store are written while the next batch scores
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
    for row in store.images(project, "error IS NOT NULL"):
        if (row.path, row.error) not in report.failed:
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


class _Background:
    """One writer thread fed in order, at most ``depth`` batches behind the caller (memory stays bounded); its first
    error is raised in the caller, at the next call or on leaving the ``with`` block."""

    def __init__(self, fn, depth: int = 2) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.fn, self.depth = fn, depth
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector-al-ingest-writer")
        self.pending: list = []
        self.busy_s = self.busy_cpu_s = self.waited_s = 0.0  # the writer's time and CPU; the caller's wait for it

    def _timed(self, batch) -> None:
        t, cpu = time.perf_counter(), time.thread_time()
        try:
            self.fn(batch)
        finally:
            self.busy_s += time.perf_counter() - t
            self.busy_cpu_s += time.thread_time() - cpu

    def __enter__(self):
        return self

    def __call__(self, batch) -> None:
        t = time.perf_counter()
        while len(self.pending) >= self.depth:
            self.pending.pop(0).result()
        self.waited_s += time.perf_counter() - t
        self.pending.append(self.pool.submit(self._timed, batch))

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                t = time.perf_counter()
                for f in self.pending:
                    f.result()
                self.waited_s += time.perf_counter() - t
        finally:
            for f in self.pending:
                f.cancel()
            self.pool.shutdown(wait=True)


@dataclass
class _BatchWriter:
    """Writes batches of scored files: tasks in Label Studio first (when there is a sink), then the store, so a
    file Label Studio did not take is not stored and the next run retries it."""

    det: Detector
    store: Store
    target: RectangleTarget
    cfg: IngestConfig
    sink: LabelStudioSink | None
    project: int
    report: IngestReport

    def url_of(self, path: Path) -> str | None:
        if self.sink is not None:
            return self.sink.url_for(path)
        return local_files_url(path, self.cfg.files_root) or path.resolve().as_uri()

    def write(self, pending: list[tuple[ScoredFile, int | None]]) -> None:
        if not pending:
            return
        rows = [
            image_row(f.decision, f.content_hash, self.target, self.cfg.round_index, self.det.version)
            for f, _ in pending
        ]
        good = [
            _replace(r, url=self.url_of(Path(r.path)), task_id=task)
            for r, (_, task) in zip(rows, pending, strict=True)
            if r.error is None
        ]
        refused = self._create_tasks(good) if self.sink is not None else set()
        good = [r for i, r in enumerate(good) if i not in refused]
        self.store.record_images(self.project, good + [r for r in rows if r.error is not None])
        self.report.failed += [(r.path, r.error) for r in rows if r.error is not None]

    def _create_tasks(self, good: list[ImageRow]) -> set[int]:
        """Create the tasks of the rows that have none (``good`` updated in place with their task ids and upload
        URLs); returns the indices of the readable files Label Studio refused."""
        new = [i for i, r in enumerate(good) if r.task_id is None]
        refused: set[int] = set()
        if not new:
            return refused
        need_upload = [i for i in new if _must_upload(good[i])]
        if need_upload:
            refused = self._upload(good, need_upload)
            new = [i for i in new if i not in refused]
        ids = self.sink.create([task_payload(good[i], self.det.version) for i in new]) if new else []
        for i, t in zip(new, ids, strict=True):
            good[i] = _replace(good[i], task_id=t)
        self.report.created_tasks += len(ids)
        return refused

    def _upload(self, good: list[ImageRow], indices: list[int]) -> set[int]:
        """Upload these rows' files (``good`` updated in place with their URLs); returns the refused indices."""
        refused: set[int] = set()
        done = self.sink.upload([Path(good[i].path) for i in indices])
        for i, up in zip(indices, done, strict=True):
            if up.url is None:
                refused.add(i)
                self.report.failed.append((good[i].path, up.error or "not uploaded"))
                self.report.not_uploaded += 1
            else:
                good[i] = _replace(good[i], url=up.url)
                self.report.converted += up.converted
        return refused


def _refresh_queue(
    store: Store,
    project: int,
    model_version: str,
    cfg: IngestConfig,
    sink: LabelStudioSink | None,
    report: IngestReport,
) -> None:
    """Choose the query batch over the whole project and write the statuses that changed: Label Studio first,
    the store after, so a failed update is retried by the next run."""
    labeled = getattr(sink, "labeled", set()) if sink else set()  # labeled tasks leave the queue
    confidence = serving_strategy(cfg.strategy).confidence
    plan = plan_ingested_queue(store, project, cfg.budget, confidence, labeled, cfg.cold_start)
    changed = []
    for row in store.iter_images(project, "error IS NULL"):
        if row.task_id in labeled:
            continue
        e = plan.entry(_place(row))
        if row.decision != e.status or abs((row.priority or 0.0) - e.priority) > 1e-12:
            changed.append((row, e))
    failed: set[int] = set()
    if sink is not None:
        updates = [
            TaskQueueUpdate(row.task_id, e.score, task_data(_replace(row, decision=e.status, priority=e.priority)))
            for row, e in changed
            if row.task_id
        ]
        failed = {t for t, _ in sink.publish(store, model_version, updates)}
    store.set_image_queue(
        project, [(row.content_hash, e.status, e.priority) for row, e in changed if row.task_id not in failed]
    )
    report.queried = len(plan.batch)
    report.auto_accepted = store.count_images(project, "decision = 'auto_accept'")


def _replace(row: ImageRow, **kw) -> ImageRow:
    from dataclasses import replace

    return replace(row, **kw)


def write_tasks_json(store: Store, out: Path, model_version: str, project: int = OFFLINE_PROJECT) -> int:
    """A Label Studio import file (a JSON list of tasks with predictions and priority fields), streamed."""
    n = 0
    with atomic_write(out) as f:
        f.write("[\n")
        for row in store.images(project, "error IS NULL", order="priority DESC"):
            f.write((",\n" if n else "") + json.dumps(task_payload(row, model_version)))
            n += 1
        f.write("\n]\n")
    return n


def export_pseudo_labels(store: Store, out: Path, names: tuple[str, ...], project: int = OFFLINE_PROJECT) -> int:
    """The auto-accepted images as a YOLO dataset (images copied, labels from the pseudo-labels, data.yaml).

    The folder is marked as machine-made (``PSEUDO_LABELS.txt``): these are not human annotations.
    """
    img_dir, lbl_dir = out / "images", out / "labels"
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for row in store.images(project, "decision = 'auto_accept' AND pseudo_labels IS NOT NULL"):
        pl = json.loads(row.pseudo_labels)
        stem = f"{Path(row.path).stem}-{row.content_hash[:8]}"
        src = Path(row.path)
        shutil.copyfile(src, img_dir / f"{stem}{src.suffix.lower()}")
        lines = yolo_lines(pl["xyxy"], pl["class_id"], row.width, row.height)
        with atomic_write(lbl_dir / f"{stem}.txt") as f:
            f.write("\n".join(lines) + "\n")
        n += 1
    names_yaml = "\n".join(f"  {i}: {nm}" for i, nm in enumerate(names))
    with atomic_write(out / "data.yaml") as f:
        f.write(
            f"# CEAL pseudo-labels made by detector-al: model predictions, NOT human annotations\n"
            f"train: images\nval: images\nnames:\n{names_yaml}\n"
        )
    with atomic_write(out / "PSEUDO_LABELS.txt") as f:
        f.write("These labels were produced by a model (CEAL auto-accept), not by annotators.\n")
    return n
