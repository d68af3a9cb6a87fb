"""Writing an ingest run's batches: tasks in Label Studio first (uploading files where needed), then the store, on one
writer thread beside the scoring; and the run's report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from detector_al.label_studio.config import RectangleTarget
from detector_al.label_studio.task_sink import LabelStudioSink, local_files_url
from detector_al.model.detector import Detector
from detector_al.pipelines.ingest_rows import image_row, must_upload, replace_row, task_payload
from detector_al.pipelines.ingest_setup import IngestConfig
from detector_al.scoring.file_stream import ScoredFile
from detector_al.state.store import PoolRow, Store


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
    deleted_tasks: int = 0  # tasks of earlier runs deleted in Label Studio since: their files made new tasks
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
        if self.deleted_tasks:
            lines.append(
                f"{self.deleted_tasks} tasks deleted in Label Studio since the last run: their images (if still "
                "here) got new tasks"
            )
        lines.append(
            f"time: {self.elapsed_s:.1f} s scoring and writing (the writes took {self.write_s:.1f} s beside the "
            f"scoring, {self.write_cpu_s:.1f} s of it this process's CPU; the scoring waited {self.waited_s:.1f} s for "
            f"them), then {self.queue_s:.1f} s the queue"
        )
        lines += [f"  failed: {p}: {e}" for p, e in self.failed]
        return "\n".join(lines)


class BackgroundWriter:
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
class BatchWriter:
    """Writes batches of scored files: tasks in Label Studio first (when there is a sink), then the store, so a
    file Label Studio did not take is not stored and the next run retries it."""

    det: Detector
    store: Store
    target: RectangleTarget
    cfg: IngestConfig
    sink: LabelStudioSink | None
    project: int
    report: IngestReport

    def url_of(self, path: Path, task: int | None = None) -> str | None:
        """The image URL of a row: the one Label Studio holds for its task when a run before created it (an upload's
        URL cannot be made again), else the shared folder's (None: it will be uploaded), else a file URL offline."""
        if self.sink is not None:
            return (self.sink.image_of(task) if task is not None else None) or self.sink.url_for(path)
        return local_files_url(path, self.cfg.files_root) or path.resolve().as_uri()

    def write(self, pending: list[tuple[ScoredFile, int | None]]) -> None:
        if not pending:
            return
        rows = [
            image_row(f.decision, f.content_hash, self.target, self.cfg.round_index, self.det.version)
            for f, _ in pending
        ]
        good = [
            replace_row(r, url=self.url_of(Path(r.path), task), task_id=task)
            for r, (_, task) in zip(rows, pending, strict=True)
            if r.error is None
        ]
        refused = self._create_tasks(good) if self.sink is not None else set()
        good = [r for i, r in enumerate(good) if i not in refused]
        self.store.record_ingested(self.project, good + [r for r in rows if r.error is not None])
        self.report.failed += [(r.path, r.error) for r in rows if r.error is not None]

    def _create_tasks(self, good: list[PoolRow]) -> set[int]:
        """Create the tasks of the rows that have none (``good`` updated in place with their task ids and upload
        URLs); returns the indices of the readable files Label Studio refused."""
        new = [i for i, r in enumerate(good) if r.task_id is None]
        refused: set[int] = set()
        if not new:
            return refused
        need_upload = [i for i in new if must_upload(good[i])]
        if need_upload:
            refused = self._upload(good, need_upload)
            new = [i for i in new if i not in refused]
        ids = self.sink.create([task_payload(good[i], self.det.version) for i in new]) if new else []
        for i, t in zip(new, ids, strict=True):
            good[i] = replace_row(good[i], task_id=t)
        self.report.created_tasks += len(ids)
        return refused

    def _upload(self, good: list[PoolRow], indices: list[int]) -> set[int]:
        """Upload these rows' files (``good`` updated in place with their URLs); returns the refused indices."""
        refused: set[int] = set()
        done = self.sink.upload([Path(good[i].path) for i in indices])
        for i, up in zip(indices, done, strict=True):
            if up.url is None:
                refused.add(i)
                self.report.failed.append((good[i].path, up.error or "not uploaded"))
                self.report.not_uploaded += 1
            else:
                good[i] = replace_row(good[i], url=up.url)
                self.report.converted += up.converted
        return refused
