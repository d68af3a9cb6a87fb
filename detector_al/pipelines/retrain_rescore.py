"""Re-scoring the unlabeled pool with a promoted candidate, in bounded memory: the pool streams from Label Studio a
page at a time, each batch of images is fetched, pinned, predicted and written to a table on disk
(:class:`RescoreTable`, SQLite in the job's folder), and every later step streams that table:

1. the queue is planned over it (:func:`~detector_al.queue.plan.plan_stored_queue`: two passes, ``K`` embeddings);
2. the predictions are imported a chunk at a time and the project switches to the candidate
   (:func:`~detector_al.label_studio.publish.publish_version`, the rows streamed by :meth:`RescoreTable.predictions`);
3. after the switch the store's pool records the new queue a page at a time, the ``al_*`` fields of ingested tasks follow,
   and the tasks' older predictions go in bulk (:func:`~detector_al.label_studio.publish.drop_other_versions`).

Memory: a page of tasks, a batch of images, the plan's ``K`` embeddings: the same at 1,000 tasks as at 50,000
(``benchmarks/bench_retrain_memory.py``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from detector_al.label_studio.publish import WRITERS
from detector_al.pipelines.job_control import JobControl
from detector_al.pipelines.retrain_pool import TaskImages, batched, predict_unlabeled
from detector_al.queue.plan import QueuePlan, StoredPlace
from detector_al.queue.selection import use_cold_start
from detector_al.state.schema import PoolRow

log = logging.getLogger(__name__)

PAGE = 1000
"""Rows of the table read (and of the store written) at a time."""
QUEUE_FIELDS = ("al_priority", "al_uncertainty", "al_status")

SCHEMA = """
CREATE TABLE IF NOT EXISTS rescored (
    task_id INTEGER PRIMARY KEY, source TEXT, url TEXT, score REAL, confidence REAL, accepted INTEGER,
    max_confidence REAL, embedding BLOB, regions TEXT, n_boxes INTEGER, data TEXT, other_versions INTEGER
)"""


class RescoreTable:
    """The candidate's decisions on the unlabeled pool, on disk, by task id (one job's; the file is the job's)."""

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.conn = sqlite3.connect(path)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute(SCHEMA)

    def add(self, task, url: str | None, x) -> None:
        """Record one task's :class:`~detector_al.serving.service.ImageSummary` (``x``) by the candidate."""
        d = x.decision
        data = dict(task.data or {})
        self.conn.execute(
            "INSERT OR REPLACE INTO rescored VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                int(task.id),
                d.source,
                url,
                d.score,
                d.confidence,
                int(d.accepted),
                d.max_confidence,
                None if d.embedding is None else d.embedding.astype("float32").tobytes(),
                json.dumps(x.regions),
                len(x.regions),
                json.dumps(data) if "al_priority" in data else None,  # only tasks made by ingest carry the fields
                int(_holds_predictions(task)),
            ),
        )

    def commit(self) -> None:
        self.conn.commit()

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM rescored").fetchone()[0])

    def rows(self, columns: str = "*") -> Iterator[sqlite3.Row]:
        """Every row, by task id, :data:`PAGE` at a time."""
        after = -1
        while True:
            page = self.conn.execute(
                f"SELECT {columns} FROM rescored WHERE task_id > ? ORDER BY task_id LIMIT ?", (after, PAGE)
            ).fetchall()
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1]["task_id"]

    def cold(self) -> bool:
        """The cold-start rule (:func:`~detector_al.queue.selection.use_cold_start`) over the pool's highest box
        confidences (8 bytes an image), so that planning a warm pool keeps no cold-start sample."""
        rows = self.conn.execute(
            "SELECT max_confidence FROM rescored WHERE embedding IS NOT NULL AND score IS NOT NULL"
        )
        values = np.fromiter((r[0] for r in rows), np.float64)
        return bool(len(values)) and bool(use_cold_start(values))

    def places(self) -> Iterator[StoredPlace]:
        """The pool as :func:`~detector_al.queue.plan.plan_stored_queue` reads it."""
        for r in self.rows("task_id, score, accepted, max_confidence, embedding"):
            if r["embedding"] is not None and r["score"] is not None:
                yield _place(r)

    def predictions(self, plan: QueuePlan) -> Iterator[dict]:
        """The rows to import (``{"task", "result", "score"}``), the queue score from ``plan``."""
        for r in self.rows():
            yield {"task": r["task_id"], "result": json.loads(r["regions"]), "score": _entry(plan, r).score}

    def rewrites(self, plan: QueuePlan, size: int) -> Iterator[list[dict]]:
        """Chunks of the rows of tasks that held predictions of other versions when listed (what
        :func:`~detector_al.label_studio.publish.drop_other_versions` rewrites)."""
        chunk = []
        for r in self.rows():
            if r["other_versions"]:
                chunk.append({"task": r["task_id"], "result": json.loads(r["regions"]), "score": _entry(plan, r).score})
                if len(chunk) == size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def url(self, task_id: int) -> str | None:
        r = self.conn.execute("SELECT url FROM rescored WHERE task_id = ?", (task_id,)).fetchone()
        return None if r is None else r["url"]

    def ids(self) -> Iterator[int]:
        for r in self.rows("task_id"):
            yield int(r["task_id"])

    def close(self) -> None:
        self.conn.close()


def _holds_predictions(task) -> bool:
    """Whether the task held a prediction when it was listed (before the candidate's: of another version). Label
    Studio's ``task_only`` listing counts them (``total_predictions``); a full listing carries them."""
    n = task.get("total_predictions") if isinstance(task, dict) else getattr(task, "total_predictions", None)
    if n is None:
        n = len((task.get("predictions") if isinstance(task, dict) else getattr(task, "predictions", None)) or [])
    return bool(n)


def _place(r: sqlite3.Row) -> StoredPlace:
    return StoredPlace(r["task_id"], r["score"], bool(r["accepted"]), r["max_confidence"], r["embedding"])


def _entry(plan: QueuePlan, r: sqlite3.Row):
    return plan.entry(_place(r))


def rescore_pool(
    service,
    ls,
    project: int,
    images: TaskImages,
    candidate,
    round_index: int,
    table: RescoreTable,
    control: JobControl,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Score the project's unlabeled tasks with ``candidate`` into ``table``, a batch of
    :func:`~detector_al.pipelines.retrain_pool.predict_unlabeled` at a time (labels made meanwhile count: a task
    labeled by then is not listed). Returns the rows written."""
    target = images.target
    n = 0
    for batch in predict_unlabeled(service, ls, project, images, round_index, control, candidate):
        for task, _, x in batch:
            table.add(task, (task.data or {}).get(target.value_key), x)
        n += len(batch)
        table.commit()
        if progress is not None:
            progress(n)
    return n


def record_rescored(store, project: int, table: RescoreTable, plan: QueuePlan, version: str, round_index: int) -> None:
    """After the switch: the store's pool rows of the tasks (the ingested images' among them) follow the new queue, a
    page of :data:`PAGE` rows at a time."""
    for page in batched(table.rows(), PAGE):
        rows = []
        for r in page:
            e = _entry(plan, r)
            rows.append(
                PoolRow(
                    task_id=r["task_id"],
                    path=r["source"],
                    model_version=version,
                    round=round_index,
                    score=r["score"],
                    confidence=e.score,
                    decision=e.status,
                    n_boxes=r["n_boxes"],
                    embedding=r["embedding"],
                    max_confidence=r["max_confidence"],
                )
            )
        store.record_predictions(project, rows)


def publish_queue_fields(ls, table: RescoreTable, plan: QueuePlan) -> int:
    """Write the new ``al_priority``/``al_uncertainty``/``al_status`` into the tasks ``ingest`` made (their data as
    listed, the queue's fields replaced: Label Studio replaces a task's whole data), :data:`WRITERS` at a time. Best
    effort: a failure is logged. Returns how many were written."""

    def write(r: sqlite3.Row) -> bool:
        e = _entry(plan, r)
        data = {**json.loads(r["data"]), "al_priority": e.priority, "al_uncertainty": round(r["score"], 8)}
        data["al_status"] = e.status
        try:
            ls.tasks.update(id=r["task_id"], data=data)
            return True
        except Exception as exc:
            log.warning("task %s: queue fields not updated: %s", r["task_id"], exc)
            return False

    done = 0
    with ThreadPoolExecutor(WRITERS, thread_name_prefix="detector-al-fields") as pool:
        for page in batched((r for r in table.rows() if r["data"] is not None), PAGE):
            done += sum(pool.map(write, page))
    return done
