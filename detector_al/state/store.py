"""The backend's state in one SQLite file: predictions and their queue ranks, webhook events, training jobs.

One connection per thread, WAL journaling, and every write in a transaction, so a crash mid-run leaves
the file consistent and readers never see half a batch. Id spaces are kept apart by name: ``project``
(Label Studio project id), ``task_id`` (Label Studio task id), ``content_hash`` (image bytes), ``job_id``.

Example:
    >>> s = Store(":memory:")
    >>> s.enqueue_training(1, "START_TRAINING")
    (1, True)
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from detector_al.state.schema import (
    CANCELLED,
    DONE,
    FAILED,
    IMAGE_COLUMNS,
    QUEUED,
    RUNNING,
    ImageRow,
    PredictionRow,
    create_schema,
)

__all__ = ["CANCELLED", "DONE", "FAILED", "QUEUED", "RUNNING", "STORE_FILE_NAME", "ImageRow", "PredictionRow", "Store"]

STORE_FILE_NAME = "detector_al.sqlite3"
"""The store's file in a backend's model folder (``MODEL_DIR``): one store for the backend, ingest and the demo."""


LABELED_TASKS = (
    "SELECT task_id FROM annotations WHERE project = ? AND task_id IS NOT NULL AND NOT cancelled AND NOT deleted"
)
"""The project's labeled tasks as the webhooks told them (one bound value: the project): a task with an annotation
neither skipped (cancelled) nor deleted, the rule of :mod:`detector_al.label_studio.annotations`."""

ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
MAX_EVENTS = 10_000
"""The webhook events kept (a log for /status and debugging; what they say of labels lives in ``annotations``)."""


class Store:
    """Thread-safe access to the SQLite state file (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.RLock()
        self._shared = (
            sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            if self.path == ":memory:"
            else None
        )
        with self._lock:
            create_schema(self._conn())

    def _conn(self) -> sqlite3.Connection:
        if self._shared is not None:
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    class _Tx:
        def __init__(self, store: Store) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            try:
                self.conn = self.store._conn()
                self.conn.row_factory = sqlite3.Row
                self.conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.store._lock.release()  # a failed BEGIN (locked database, full disk) must not keep the lock
                raise
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                if exc_type is None:
                    try:
                        self.conn.execute("COMMIT")
                    except BaseException:
                        self.conn.execute("ROLLBACK")  # never leave a transaction open on this connection
                        raise
                else:
                    self.conn.execute("ROLLBACK")
            finally:
                self.store._lock.release()

    def _tx(self) -> _Tx:
        return Store._Tx(self)

    def _query(self, sql: str, args: Iterable = ()) -> list[sqlite3.Row]:
        with self._lock:
            conn = self._conn()
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, tuple(args)).fetchall()

    # ---- projects ------------------------------------------------------------------------------------

    def project(self, project: int) -> dict:
        """The project's round, model version and annotation counter (defaults for an unseen project)."""
        rows = self._query("SELECT * FROM projects WHERE project = ?", (project,))
        if rows:
            return dict(rows[0])
        return {
            "project": project,
            "round": 0,
            "model_version": None,
            "annotations_since_training": 0,
            "sampling_configured": 0,
            "sampling_warning": None,
        }

    def projects(self) -> list[dict]:
        """Every project the backend has state for (round, model version, sampling status)."""
        return [dict(r) for r in self._query("SELECT * FROM projects ORDER BY project")]

    def take_annotation_count(self, project: int, at_least: int) -> int:
        """If ``at_least`` new or updated annotations are counted, take them (subtract, atomically) and return how
        many were taken; else 0. Events that arrive meanwhile stay counted."""
        with self._tx() as c:
            row = c.execute("SELECT annotations_since_training FROM projects WHERE project = ?", (project,)).fetchone()
            n = row[0] if row else 0
            if n < at_least:
                return 0
            c.execute(
                "UPDATE projects SET annotations_since_training = annotations_since_training - ? WHERE project = ?",
                (n, project),
            )
            return n

    def set_project(self, project: int, **fields) -> None:
        allowed = {"round", "model_version", "annotations_since_training", "sampling_configured", "sampling_warning"}
        if not set(fields) <= allowed:
            raise ValueError(f"unknown project fields: {set(fields) - allowed}")
        with self._tx() as c:
            c.execute("INSERT OR IGNORE INTO projects (project, updated_at) VALUES (?, ?)", (project, time.time()))
            for k, v in fields.items():
                c.execute(f"UPDATE projects SET {k} = ?, updated_at = ? WHERE project = ?", (v, time.time(), project))

    # ---- predictions ---------------------------------------------------------------------------------

    def record_predictions(self, project: int, rows: list[PredictionRow]) -> None:
        """Upsert the rows in one transaction. ``confidence`` is the score Label Studio serves by (queue order)."""
        now = time.time()
        with self._tx() as c:
            c.executemany(
                "INSERT INTO predictions (project, task_id, image, model_version, score, confidence, decision, round,"
                " n_boxes, error, embedding, max_confidence, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(project, task_id) DO UPDATE SET image=excluded.image,"
                " model_version=excluded.model_version, score=excluded.score, confidence=excluded.confidence,"
                " decision=excluded.decision, round=excluded.round, n_boxes=excluded.n_boxes, error=excluded.error,"
                " embedding=excluded.embedding, max_confidence=excluded.max_confidence, updated_at=excluded.updated_at",
                [
                    (
                        project,
                        r.task_id,
                        r.image,
                        r.model_version,
                        r.score,
                        r.confidence,
                        r.decision,
                        r.round,
                        r.n_boxes,
                        r.error,
                        r.embedding,
                        r.max_confidence,
                        now,
                    )
                    for r in rows
                ],
            )

    def predictions(self, project: int) -> list[dict]:
        """The project's stored predictions in queue order (Label Studio's score, ascending); errors last, unranked."""
        rows = self._query(
            "SELECT *, CASE WHEN confidence IS NULL THEN NULL ELSE ROW_NUMBER() OVER ("
            " ORDER BY confidence IS NULL, confidence, task_id) END AS queue_rank"
            " FROM predictions WHERE project = ? ORDER BY confidence IS NULL, confidence, task_id",
            (project,),
        )
        out = [{**dict(r), "rank": r["queue_rank"]} for r in rows]
        for row in out:
            row.pop("embedding", None)
        return out

    def queue_inputs(self, project: int, model_version: str) -> list[sqlite3.Row]:
        """:meth:`iter_queue_inputs` as a list."""
        return list(self.iter_queue_inputs(project, model_version))

    def iter_queue_inputs(self, project: int, model_version: str, page: int = 2000) -> Iterator[sqlite3.Row]:
        """What re-building the project's queue needs: scored predictions of ``model_version`` not yet labeled, by
        task id, read a page at a time (the store's lock is held per page, never across the caller's work)."""
        after = -1
        while True:
            rows = self._query(
                "SELECT task_id, score, confidence, decision, embedding, max_confidence FROM predictions WHERE"
                " project = ? AND model_version = ? AND error IS NULL AND score IS NOT NULL AND embedding IS NOT NULL"
                f" AND task_id > ? AND task_id NOT IN ({LABELED_TASKS}) ORDER BY task_id LIMIT ?",
                (project, model_version, after, project, page),
            )
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1]["task_id"]

    def labeled_embeddings(self, project: int) -> list[bytes]:
        """The stored embeddings of the project's labeled tasks (:data:`LABELED_TASKS`: what :meth:`queue_inputs`
        leaves out): the clusters a cold-start batch leaves alone.

        Each embedding is from the model that scored the task last: a labeled task is not scored again, so after
        a retraining it comes from an older model (fine-tuned from the same weights: near, not in, the pool's
        space). The retraining's own re-scoring embeds the labeled images with the new model instead
        (:meth:`~detector_al.pipelines.retrain.Retrainer._rescore`); these serve the queue refreshes between
        retrainings.
        """
        sql = f"SELECT embedding FROM predictions WHERE project = ? AND task_id IN ({LABELED_TASKS})"
        rows = self._query(sql + " AND embedding IS NOT NULL ORDER BY task_id", (project, project))
        return [r["embedding"] for r in rows]

    def set_queue(self, project: int, updates: list[tuple[int, str, float]]) -> None:
        """Set ``(task_id, decision, label studio score)`` of several predictions in one transaction."""
        with self._tx() as c:
            c.executemany(
                "UPDATE predictions SET decision = ?, confidence = ? WHERE project = ? AND task_id = ?",
                [(d, sc, project, t) for t, d, sc in updates],
            )

    # ---- ingested images ------------------------------------------------------------------------------

    def record_images(self, project: int, rows: list[ImageRow]) -> None:
        """Upsert image rows (one transaction: a batch is stored whole or not at all)."""
        cols = ", ".join(IMAGE_COLUMNS)
        marks = ", ".join("?" for _ in IMAGE_COLUMNS)
        updates = ", ".join(f"{c}=excluded.{c}" for c in IMAGE_COLUMNS if c != "content_hash")
        now = time.time()
        with self._tx() as c:
            c.executemany(
                f"INSERT INTO images ({cols}, project, updated_at) VALUES ({marks}, ?, ?)"
                f" ON CONFLICT(content_hash, project) DO UPDATE SET {updates}, updated_at=excluded.updated_at",
                [(*(getattr(r, k) for k in IMAGE_COLUMNS), project, now) for r in rows],
            )

    def image_hashes(self, project: int) -> dict[str, int | None]:
        """content hash -> task id (None for images stored without a task, e.g. unreadable ones)."""
        return {
            r["content_hash"]: r["task_id"]
            for r in self._query("SELECT content_hash, task_id FROM images WHERE project = ?", (project,))
        }

    def images(self, project: int, where: str = "1", args: Iterable = (), order: str = "path") -> list[ImageRow]:
        """Image rows of a project matching an SQL condition (``where`` is code, never user input)."""
        rows = self._query(f"SELECT * FROM images WHERE project = ? AND ({where}) ORDER BY {order}", (project, *args))
        return [ImageRow(**{k: r[k] for k in IMAGE_COLUMNS}) for r in rows]

    def iter_images(self, project: int, where: str = "1", page: int = 2000) -> Iterator[ImageRow]:
        """:meth:`images` by content hash, read a page at a time (``where`` is code, never user input)."""
        after = ""
        while True:
            rows = self._query(
                f"SELECT * FROM images WHERE project = ? AND ({where}) AND content_hash > ?"
                " ORDER BY content_hash LIMIT ?",
                (project, after, page),
            )
            yield from (ImageRow(**{k: r[k] for k in IMAGE_COLUMNS}) for r in rows)
            if len(rows) < page:
                return
            after = rows[-1]["content_hash"]

    def count_images(self, project: int, where: str = "1") -> int:
        return self._query(f"SELECT COUNT(*) AS n FROM images WHERE project = ? AND ({where})", (project,))[0]["n"]

    def set_image_queue(self, project: int, updates: list[tuple[str, str, float]]) -> None:
        """Set ``(content_hash, decision, priority)`` for several images in one transaction."""
        with self._tx() as c:
            c.executemany(
                "UPDATE images SET decision = ?, priority = ?, updated_at = ? WHERE content_hash = ? AND project = ?",
                [(d, pr, time.time(), h, project) for h, d, pr in updates],
            )

    def set_image_queue_by_task(self, project: int, updates: list[tuple]) -> None:
        """After a re-scoring: ``(task_id, score, confidence, decision, priority, round, model_version[,
        max_confidence])`` of the ingested images shown by these tasks (tasks ingest did not make are not in this
        table: no-op). Without ``max_confidence`` it becomes NULL: the old model's value no longer holds."""
        with self._tx() as c:
            c.executemany(
                "UPDATE images SET score = ?, confidence = ?, decision = ?, priority = ?, round = ?, model_version = ?,"
                " max_confidence = ?, updated_at = ? WHERE project = ? AND task_id = ?",
                [(*u[1:7], u[7] if len(u) > 7 else None, time.time(), project, u[0]) for u in updates],
            )

    # ---- webhook events ------------------------------------------------------------------------------

    def record_event(
        self,
        action: str,
        project: int | None,
        task_id: int | None,
        annotation_id: int | None,
        cancelled: bool = False,
        deleted_annotations: Iterable[int] = (),
    ) -> int:
        """Record a webhook event, and what it says of the project's labels: an annotation created or updated
        (``cancelled``: a skip, which is no label), or annotations deleted (``ANNOTATIONS_DELETED`` names only their
        ids: the task comes from the event that created them). Only a created or updated annotation that is a label
        counts towards ``annotations_since_training``."""
        now = time.time()
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO events (action, project, task_id, annotation_id, received_at) VALUES (?,?,?,?,?)",
                (action, project, task_id, annotation_id, now),
            )
            Store._prune_events(c, int(cur.lastrowid))
            if project is None:
                return int(cur.lastrowid)
            if action in ANNOTATION_EVENTS[:2] and task_id is not None:
                c.execute(
                    "INSERT INTO annotations (project, annotation_id, task_id, cancelled, deleted, updated_at)"
                    " VALUES (?,?,?,?,0,?) ON CONFLICT(project, annotation_id) DO UPDATE SET task_id=excluded.task_id,"
                    " cancelled=excluded.cancelled, deleted=0, updated_at=excluded.updated_at",
                    (
                        project,
                        annotation_id if annotation_id is not None else -cur.lastrowid,
                        task_id,
                        int(cancelled),
                        now,
                    ),
                )
                if not cancelled:
                    c.execute("INSERT OR IGNORE INTO projects (project, updated_at) VALUES (?, ?)", (project, now))
                    c.execute(
                        "UPDATE projects SET annotations_since_training = annotations_since_training + 1"
                        " WHERE project = ?",
                        (project,),
                    )
            ids = [(now, project, a) for a in deleted_annotations]
            c.executemany(
                "UPDATE annotations SET deleted = 1, updated_at = ? WHERE project = ? AND annotation_id = ?", ids
            )
            return int(cur.lastrowid)

    @staticmethod
    def _prune_events(c: sqlite3.Connection, last_id: int) -> None:
        """Every 100 events, drop all but the newest :data:`MAX_EVENTS`."""
        if last_id % 100 == 0:
            c.execute("DELETE FROM events WHERE id <= ?", (last_id - MAX_EVENTS,))

    def labeled_tasks(self, project: int) -> set[int]:
        """The project's labeled task ids (:data:`LABELED_TASKS`)."""
        return {r["task_id"] for r in self._query(LABELED_TASKS, (project,))}

    def events(self, project: int | None = None) -> list[dict]:
        if project is None:
            return [dict(r) for r in self._query("SELECT * FROM events ORDER BY id")]
        return [dict(r) for r in self._query("SELECT * FROM events WHERE project = ? ORDER BY id", (project,))]

    # ---- training jobs -------------------------------------------------------------------------------

    def enqueue_training(self, project: int | None, reason: str) -> tuple[int, bool]:
        """Queue a training run for ``project`` unless one is already queued (bursts coalesce).

        Returns:
            (job id, whether a new job was created).
        """
        with self._tx() as c:
            row = c.execute(
                "SELECT id FROM training_jobs WHERE status = ? AND project IS ? ORDER BY id LIMIT 1", (QUEUED, project)
            ).fetchone()
            if row:
                c.execute(
                    "UPDATE training_jobs SET reason = reason || ', ' || ? WHERE id = ? AND length(reason) < 500",
                    (reason, row["id"]),
                )
                return int(row["id"]), False
            cur = c.execute(
                "INSERT INTO training_jobs (project, reason, status, requested_at) VALUES (?,?,?,?)",
                (project, reason, QUEUED, time.time()),
            )
            return int(cur.lastrowid), True

    def claim_training(self, backoff_s: float = 5.0, max_backoff_s: float = 600.0) -> dict | None:
        """Mark the oldest claimable queued job as running and return it (None when there is none).

        A project whose last ``n`` jobs failed waits ``min(backoff_s * 2^(n-1), max_backoff_s)`` seconds after
        the last failure; meanwhile new requests coalesce into its one queued job (:meth:`enqueue_training`), so
        a burst of requests that keep failing costs a few failures, not one per request.
        """
        now = time.time()
        with self._tx() as c:
            for row in c.execute("SELECT * FROM training_jobs WHERE status = ? ORDER BY id", (QUEUED,)).fetchall():
                if now < self._retry_at(c, row["project"], backoff_s, max_backoff_s):
                    continue
                c.execute("UPDATE training_jobs SET status = ?, started_at = ? WHERE id = ?", (RUNNING, now, row["id"]))
                job = dict(row)
                job["status"] = RUNNING
                return job
            return None

    @staticmethod
    def _retry_at(c: sqlite3.Connection, project: int | None, backoff_s: float, max_backoff_s: float) -> float:
        """When the project may train again: after its consecutive failures' back-off (0 when none)."""
        failed = c.execute(
            "SELECT COUNT(*), MAX(finished_at) FROM training_jobs WHERE project IS ? AND status = ? AND id >"
            " COALESCE((SELECT MAX(id) FROM training_jobs WHERE project IS ? AND status = ?), 0)",
            (project, FAILED, project, DONE),
        ).fetchone()
        n, last = failed[0], failed[1]
        if not n:
            return 0.0
        return last + min(backoff_s * 2 ** (n - 1), max_backoff_s)

    def finish_training(
        self,
        job_id: int,
        status: str,
        error: str | None = None,
        model_version: str | None = None,
        detail: dict | None = None,
    ) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE training_jobs SET status = ?, finished_at = ?, error = ?, model_version = ?, detail = ?"
                " WHERE id = ?",
                (status, time.time(), error, model_version, json.dumps(detail) if detail else None, job_id),
            )

    def cancel_queued(self, job_id: int) -> bool:
        """Cancel a job that has not started; False when it is not queued (running, finished or unknown)."""
        with self._tx() as c:
            cur = c.execute(
                "UPDATE training_jobs SET status = ?, finished_at = ?, error = 'cancelled before it started'"
                " WHERE id = ? AND status = ?",
                (CANCELLED, time.time(), job_id, QUEUED),
            )
            return cur.rowcount == 1

    def training_job(self, job_id: int) -> dict | None:
        rows = self._query("SELECT * FROM training_jobs WHERE id = ?", (job_id,))
        return dict(rows[0]) if rows else None

    def requeue_interrupted(self) -> int:
        """After a restart: jobs left ``running`` by a crash go back to the queue. Returns how many."""
        with self._tx() as c:
            cur = c.execute(
                "UPDATE training_jobs SET status = ?, started_at = NULL,"
                " detail = 'requeued: the backend stopped while this job was running' WHERE status = ?",
                (QUEUED, RUNNING),
            )
            return cur.rowcount

    def training_jobs(self, limit: int = 20) -> list[dict]:
        return [dict(r) for r in self._query("SELECT * FROM training_jobs ORDER BY id DESC LIMIT ?", (limit,))]
