"""The backend's state in one SQLite file: projects, predictions and their queue ranks, ingested images, webhook
events, training jobs.

One file, one :class:`Store`, made of one class per concern: :mod:`~detector_al.state.database` (connections and
transactions), :mod:`~detector_al.state.projects_table`, :mod:`~detector_al.state.predictions_table`,
:mod:`~detector_al.state.images_table`, :mod:`~detector_al.state.events_table`, :mod:`~detector_al.state.jobs_table`.
Id spaces are kept apart by name: ``project`` (Label Studio project id), ``task_id`` (Label Studio task id),
``content_hash`` (image bytes), ``job_id``.

Example:
    >>> s = Store(":memory:")
    >>> s.enqueue_training(1, "START_TRAINING")
    (1, True)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator

from detector_al.state.events_table import ANNOTATION_EVENTS, LABELED_TASKS, MAX_EVENTS, EventsTable
from detector_al.state.images_table import ImagesTable
from detector_al.state.jobs_table import JobsTable
from detector_al.state.predictions_table import PredictionsTable
from detector_al.state.projects_table import ProjectsTable
from detector_al.state.schema import CANCELLED, DONE, FAILED, QUEUED, RUNNING, ImageRow, PredictionRow

__all__ = [
    "ANNOTATION_EVENTS",
    "CANCELLED",
    "DONE",
    "FAILED",
    "LABELED_TASKS",
    "MAX_EVENTS",
    "QUEUED",
    "RUNNING",
    "STORE_FILE_NAME",
    "ImageRow",
    "PredictionRow",
    "Store",
]

STORE_FILE_NAME = "detector_al.sqlite3"
"""The store's file in a backend's model folder (``MODEL_DIR``): one store for the backend, ingest and the demo."""


class Store(ProjectsTable, PredictionsTable, ImagesTable, EventsTable, JobsTable):
    """Thread-safe access to the SQLite state file (created on first use); its methods come from the tables."""

    def iter_project_queue(self, project: int, model_version: str, page: int = 2000) -> Iterator[sqlite3.Row]:
        """The project's one queue, whichever table holds a task: every scored, unlabeled task of ``model_version`` by
        task id, read a page at a time. A task the backend predicted comes from ``predictions`` (``source``
        ``"prediction"``); a task ``ingest`` made and the backend has not predicted, from ``images`` (``"image"``,
        with its ``content_hash``). ``confidence`` is the score Label Studio serves the task by (``1 - priority`` for
        an ingested one). Columns: task_id, score, confidence, decision, embedding, max_confidence, source,
        content_hash."""
        predicted = "SELECT task_id FROM predictions WHERE project = ? AND model_version = ?"
        union = (
            "SELECT task_id, score, confidence, decision, embedding, max_confidence, 'prediction' AS source,"
            " NULL AS content_hash FROM predictions WHERE project = ? AND model_version = ? AND error IS NULL"
            " AND score IS NOT NULL AND embedding IS NOT NULL"
            " UNION ALL SELECT task_id, score, 1.0 - COALESCE(priority, 0.0), decision, embedding, max_confidence,"
            " 'image', content_hash FROM images WHERE project = ? AND model_version = ? AND error IS NULL"
            f" AND task_id IS NOT NULL AND score IS NOT NULL AND embedding IS NOT NULL AND task_id NOT IN ({predicted})"
        )
        sql = f"SELECT * FROM ({union}) WHERE task_id > ? AND task_id NOT IN ({LABELED_TASKS}) ORDER BY task_id LIMIT ?"
        after = -1
        while True:
            args = (project, model_version, project, model_version, project, model_version, after, project, page)
            rows = self.query(sql, args)
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1]["task_id"]

    def forget_tasks(self, project: int | None, task_ids: Iterable[int]) -> int:
        """Tasks deleted in Label Studio (``TASKS_DELETED``, or found gone): their predictions and ingested rows are
        removed, so they leave the queue (their batch slots go to other tasks), no refresh writes them again, and a
        re-ingest of the same bytes makes a new task; their labels stop counting and their label-error flags go.
        ``project`` None: in every project (Label Studio's task ids are unique across its projects). Returns how many
        stored rows (predictions and images) were removed."""
        ids = [int(t) for t in task_ids]
        if not ids:
            return 0
        if project is None:
            where, rows = "task_id = ?", [(t,) for t in ids]
        else:
            where, rows = "project = ? AND task_id = ?", [(project, t) for t in ids]
        removed = 0
        with self.transaction() as c:
            for table in ("predictions", "images"):
                removed += sum(c.execute(f"DELETE FROM {table} WHERE {where}", r).rowcount for r in rows)
            c.executemany(f"DELETE FROM label_errors WHERE {where}", rows)
            c.executemany(f"UPDATE annotations SET deleted = 1 WHERE {where}", rows)
        return removed
