"""The ``pool`` table: one row per image of a project's pool, whether ``ingest`` recorded it (by content hash) or the
backend predicted its task (by task id), with its latest prediction and its place in the queue."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Iterable, Iterator

from detector_al.state.database import Database
from detector_al.state.events_table import LABELED_TASKS
from detector_al.state.schema import ON_PREDICTION, POOL_COLUMNS, PREDICTION_COLUMNS, TASK_KEY, PoolRow

QUEUE_COLUMNS = "key, task_id, score, confidence, decision, embedding, max_confidence"
"""What planning the queue reads of a row (:meth:`PoolTable.iter_queue`)."""


def pool_row(r: sqlite3.Row) -> PoolRow:
    """A stored row as :class:`~detector_al.state.schema.PoolRow`."""
    return PoolRow(**{k: r[k] for k in POOL_COLUMNS})


class PoolTable(Database):
    """The projects' pools (part of :class:`~detector_al.state.store.Store`)."""

    def record_ingested(self, project: int, rows: list[PoolRow]) -> None:
        """Upsert whole rows by content hash (one transaction: a batch is stored whole or not at all). A row of a task
        the backend predicted before ingest recorded it (``task:<id>``) becomes the image's."""
        cols = ", ".join(POOL_COLUMNS)
        marks = ", ".join("?" for _ in POOL_COLUMNS)
        updates = ", ".join(f"{c}=excluded.{c}" for c in POOL_COLUMNS if c != "key")
        now = time.time()
        with self.transaction() as c:
            c.executemany(
                "UPDATE pool SET key = ? WHERE project = ? AND task_id = ? AND key = ?",
                [(r.key, project, r.task_id, f"{TASK_KEY}{r.task_id}") for r in rows if r.task_id is not None],
            )
            c.executemany(
                f"INSERT INTO pool ({cols}, project, updated_at) VALUES ({marks}, ?, ?)"
                f" ON CONFLICT(project, key) DO UPDATE SET {updates}, updated_at=excluded.updated_at",
                [(*(getattr(r, k) for k in POOL_COLUMNS), project, now) for r in rows],
            )

    def record_predictions(self, project: int, rows: list[PoolRow]) -> None:
        """Upsert the backend's predictions by task id (one transaction): the row of a task ingest recorded gets the
        prediction (:data:`~detector_al.state.schema.PREDICTION_COLUMNS`) and keeps its file; another task gets a
        row of its own (``task:<id>``). ``confidence`` is the score Label Studio serves by (queue order)."""
        cols = ("key", "task_id", "path", *PREDICTION_COLUMNS)
        now = time.time()
        with self.transaction() as c:
            c.executemany(
                f"INSERT INTO pool ({', '.join(cols)}, project, updated_at)"
                f" VALUES ({', '.join('?' for _ in cols)}, ?, ?) {ON_PREDICTION}",
                [(*(getattr(r, k) for k in cols), project, now) for r in rows],
            )

    def image_hashes(self, project: int) -> dict[str, int | None]:
        """content hash -> task id (None for images stored without a task, e.g. unreadable ones) of the images ingest
        recorded."""
        sql = f"SELECT key, task_id FROM pool WHERE project = ? AND key NOT LIKE '{TASK_KEY}%'"
        return {r["key"]: r["task_id"] for r in self.query(sql, (project,))}

    def pool_rows(self, project: int, where: str = "1", args: Iterable = (), order: str = "key") -> list[PoolRow]:
        """Rows of a project matching an SQL condition (``where`` and ``order`` are code, never user input)."""
        rows = self.query(f"SELECT * FROM pool WHERE project = ? AND ({where}) ORDER BY {order}", (project, *args))
        return [pool_row(r) for r in rows]

    def iter_pool(self, project: int, where: str = "1", page: int = 2000) -> Iterator[PoolRow]:
        """:meth:`pool_rows` by key, read a page at a time (``where`` is code, never user input)."""
        after = ""
        while True:
            rows = self.query(
                f"SELECT * FROM pool WHERE project = ? AND ({where}) AND key > ? ORDER BY key LIMIT ?",
                (project, after, page),
            )
            yield from (pool_row(r) for r in rows)
            if len(rows) < page:
                return
            after = rows[-1]["key"]

    def count_pool(self, project: int, where: str = "1") -> int:
        return self.query(f"SELECT COUNT(*) AS n FROM pool WHERE project = ? AND ({where})", (project,))[0]["n"]

    def predictions(self, project: int) -> list[dict]:
        """The project's tasks in queue order (Label Studio's score, ascending) with their ``rank``; errors last,
        unranked. Embeddings left out."""
        rows = self.query(
            "SELECT *, CASE WHEN confidence IS NULL THEN NULL ELSE ROW_NUMBER() OVER (ORDER BY confidence IS NULL,"
            " confidence, task_id) END AS rank FROM pool WHERE project = ? AND task_id IS NOT NULL"
            " ORDER BY confidence IS NULL, confidence, task_id",
            (project,),
        )
        out = [dict(r) for r in rows]
        for row in out:
            del row["embedding"]
        return out

    def iter_queue(
        self, project: int, model_version: str | None, page: int = 2000, columns: str = QUEUE_COLUMNS
    ) -> Iterator[sqlite3.Row]:
        """The project's queue: every scored, unlabeled row (of ``model_version``; None: of any), read a page at a
        time (the store's lock is held per page, never across the caller's work): the rows without a task (an offline
        ingest's) by key, then the tasks by task id. ``columns`` must hold ``key`` and ``task_id``."""
        version = "" if model_version is None else " AND model_version = ?"
        scored = f"project = ?{version} AND error IS NULL AND score IS NOT NULL AND embedding IS NOT NULL"
        head = (project,) if model_version is None else (project, model_version)
        for order, which, args, after in (
            ("key", "task_id IS NULL", (), ""),
            ("task_id", f"task_id NOT IN ({LABELED_TASKS})", (project,), -1),
        ):
            sql = f"SELECT {columns} FROM pool WHERE {scored} AND {which} AND {order} > ? ORDER BY {order} LIMIT ?"
            while True:
                rows = self.query(sql, (*head, *args, after, page))
                yield from rows
                if len(rows) < page:
                    break
                after = rows[-1][order]

    def labeled_embeddings(self, project: int, also: Collection[int] = ()) -> list[bytes]:
        """The stored embeddings of the project's labeled tasks (:data:`LABELED_TASKS`: what :meth:`iter_queue` leaves
        out) and of the tasks in ``also`` (ones ``ingest`` read labeled from Label Studio), by task id: the clusters a
        cold-start batch leaves alone.

        Each embedding is from the model that scored the task last: a labeled task is not scored again, so after
        a retraining it comes from an older model (fine-tuned from the same weights: near, not in, the pool's
        space). The retraining's own re-scoring embeds the labeled images with the new model instead
        (:meth:`~detector_al.pipelines.retrain.Retrainer._rescore`); these serve the queue refreshes between
        retrainings.
        """
        labeled = f"task_id IN ({LABELED_TASKS})"
        rows = self.query(
            f"SELECT task_id, embedding, {labeled} AS labeled FROM pool WHERE project = ? AND task_id IS NOT NULL"
            f" AND embedding IS NOT NULL{'' if also else ' AND ' + labeled} ORDER BY task_id",
            (project,) * (2 if also else 3),
        )
        return [r["embedding"] for r in rows if r["labeled"] or r["task_id"] in also]

    def set_queue(self, project: int, updates: list[tuple[str, str, float]]) -> None:
        """Set ``(key, decision, label studio score)`` of several rows in one transaction."""
        with self.transaction() as c:
            c.executemany(
                "UPDATE pool SET decision = ?, confidence = ?, updated_at = ? WHERE project = ? AND key = ?",
                [(d, sc, time.time(), project, k) for k, d, sc in updates],
            )

    def unlabeled_scores(self, project: int, version: str | None) -> list[sqlite3.Row]:
        """``(decision, score, failed)`` of every unlabeled task of ``version``, and of the files ``ingest`` could not
        read (no task; failed, whatever their version)."""
        return self.query(
            "SELECT decision, score, error IS NOT NULL AS failed FROM pool WHERE project = ? AND"
            f" ((task_id IS NULL AND error IS NOT NULL) OR (model_version IS ? AND task_id NOT IN ({LABELED_TASKS})))",
            (project, version, project),
        )
