"""The ``training_jobs`` table: the queue of training runs, claimed one at a time, with back-off after failures."""

from __future__ import annotations

import json
import sqlite3
import time

from detector_al.state.database import Database
from detector_al.state.schema import CANCELLED, DONE, FAILED, QUEUED, RUNNING


class JobsTable(Database):
    """Training jobs (part of :class:`~detector_al.state.store.Store`)."""

    def enqueue_training(self, project: int | None, reason: str) -> tuple[int, bool]:
        """Queue a training run for ``project`` unless one is already queued (bursts coalesce).

        Returns:
            (job id, whether a new job was created).
        """
        with self.transaction() as c:
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
        with self.transaction() as c:
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
        with self.transaction() as c:
            c.execute(
                "UPDATE training_jobs SET status = ?, finished_at = ?, error = ?, model_version = ?, detail = ?"
                " WHERE id = ?",
                (status, time.time(), error, model_version, json.dumps(detail) if detail else None, job_id),
            )

    def cancel_queued(self, job_id: int) -> bool:
        """Cancel a job that has not started; False when it is not queued (running, finished or unknown)."""
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE training_jobs SET status = ?, finished_at = ?, error = 'cancelled before it started'"
                " WHERE id = ? AND status = ?",
                (CANCELLED, time.time(), job_id, QUEUED),
            )
            return cur.rowcount == 1

    def training_job(self, job_id: int) -> dict | None:
        rows = self.query("SELECT * FROM training_jobs WHERE id = ?", (job_id,))
        return dict(rows[0]) if rows else None

    def requeue_interrupted(self) -> int:
        """After a restart: jobs left ``running`` by a crash go back to the queue. Returns how many."""
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE training_jobs SET status = ?, started_at = NULL,"
                " detail = 'requeued: the backend stopped while this job was running' WHERE status = ?",
                (QUEUED, RUNNING),
            )
            return cur.rowcount

    def training_jobs(self, limit: int = 20) -> list[dict]:
        return [dict(r) for r in self.query("SELECT * FROM training_jobs ORDER BY id DESC LIMIT ?", (limit,))]

    def project_jobs(self, project: int, status: str | None = None, limit: int | None = 10) -> list[dict]:
        """The project's jobs, newest first (``status``: only those), at most ``limit`` (None: all)."""
        n = -1 if limit is None else limit  # SQLite: LIMIT -1 is no limit
        where, args = ("AND status = ?", (project, status, n)) if status else ("", (project, n))
        sql = f"SELECT * FROM training_jobs WHERE project = ? {where} ORDER BY id DESC LIMIT ?"
        return [dict(r) for r in self.query(sql, args)]
