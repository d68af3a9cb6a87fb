"""The ``events`` and ``annotations`` tables: Label Studio's webhook events and what they say of the labels."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from detector_al.state.database import Database

LABELED_TASKS = (
    "SELECT task_id FROM annotations WHERE project = ? AND task_id IS NOT NULL AND NOT cancelled AND NOT deleted"
)
"""The project's labeled tasks as the webhooks told them (one bound value: the project): a task with an annotation
neither skipped (cancelled) nor deleted, the rule of :mod:`detector_al.label_studio.annotations`."""

ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
MAX_EVENTS = 10_000
"""The webhook events kept (a log for /status and debugging; what they say of labels lives in ``annotations``)."""


class EventsTable(Database):
    """Webhook events and the labels they tell of (part of :class:`~detector_al.state.store.Store`)."""

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
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO events (action, project, task_id, annotation_id, received_at) VALUES (?,?,?,?,?)",
                (action, project, task_id, annotation_id, now),
            )
            EventsTable._prune_events(c, int(cur.lastrowid))
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
        return {r["task_id"] for r in self.query(LABELED_TASKS, (project,))}

    def events(self, project: int | None = None) -> list[dict]:
        if project is None:
            return [dict(r) for r in self.query("SELECT * FROM events ORDER BY id")]
        return [dict(r) for r in self.query("SELECT * FROM events WHERE project = ? ORDER BY id", (project,))]

    def labeled_count(self, project: int) -> int:
        """How many distinct tasks of the project are labeled (:data:`LABELED_TASKS`)."""
        return self.query(f"SELECT COUNT(DISTINCT task_id) n FROM ({LABELED_TASKS})", (project,))[0]["n"]
