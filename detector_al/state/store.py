"""The backend's state in one SQLite file: projects, each project's pool (one row per image: its task, file,
latest prediction and queue place), webhook events, training jobs.

One file, one :class:`Store`, made of one class per concern: :mod:`~detector_al.state.database` (connections and
transactions), :mod:`~detector_al.state.projects_table`, :mod:`~detector_al.state.pool_table`,
:mod:`~detector_al.state.events_table`, :mod:`~detector_al.state.jobs_table`. Id spaces are kept apart by name:
``project`` (Label Studio project id), ``task_id`` (Label Studio task id), ``key`` (a pool row: the image's content
hash, or ``task:<id>``), ``job_id``.

Example:
    >>> s = Store(":memory:")
    >>> s.enqueue_training(1, "START_TRAINING")
    (1, True)
"""

from __future__ import annotations

from collections.abc import Iterable

from detector_al.state.events_table import ANNOTATION_EVENTS, LABELED_TASKS, MAX_EVENTS, EventsTable
from detector_al.state.jobs_table import JobsTable
from detector_al.state.pool_table import PoolTable
from detector_al.state.projects_table import ProjectsTable
from detector_al.state.schema import CANCELLED, DONE, FAILED, FINISHED, QUEUED, RUNNING, WAITING, PoolRow

__all__ = [
    "ANNOTATION_EVENTS",
    "CANCELLED",
    "DONE",
    "FAILED",
    "FINISHED",
    "LABELED_TASKS",
    "MAX_EVENTS",
    "QUEUED",
    "RUNNING",
    "STORE_FILE_NAME",
    "WAITING",
    "PoolRow",
    "Store",
]

STORE_FILE_NAME = "detector_al.sqlite3"
"""The store's file in a backend's model folder (``MODEL_DIR``): one store for the backend, ingest and the demo."""


class Store(ProjectsTable, PoolTable, EventsTable, JobsTable):
    """Thread-safe access to the SQLite state file (created on first use); its methods come from the tables."""

    def forget_tasks(self, project: int | None, task_ids: Iterable[int]) -> int:
        """Tasks deleted in Label Studio (``TASKS_DELETED``, or found gone): their pool rows are removed, so they
        leave the queue (their batch slots go to other tasks), no refresh writes them again, and a
        re-ingest of the same bytes makes a new task; their labels stop counting and their label-error flags go.
        ``project`` None: in every project (Label Studio's task ids are unique across its projects). Returns how many
        pool rows were removed."""
        ids = [int(t) for t in task_ids]
        if not ids:
            return 0
        if project is None:
            where, rows = "task_id = ?", [(t,) for t in ids]
        else:
            where, rows = "project = ? AND task_id = ?", [(project, t) for t in ids]
        with self.transaction() as c:
            removed = sum(c.execute(f"DELETE FROM pool WHERE {where}", r).rowcount for r in rows)
            c.executemany(f"DELETE FROM label_errors WHERE {where}", rows)
            c.executemany(f"UPDATE annotations SET deleted = 1 WHERE {where}", rows)
        return removed
