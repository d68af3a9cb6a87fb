"""The ``projects`` table: each Label Studio project's round, model version and annotation counter."""

from __future__ import annotations

import time

from detector_al.state.database import Database


class ProjectsTable(Database):
    """Per-project state (part of :class:`~detector_al.state.store.Store`)."""

    def project(self, project: int) -> dict:
        """The project's round, model version and annotation counter (defaults for an unseen project)."""
        rows = self.query("SELECT * FROM projects WHERE project = ?", (project,))
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
        return [dict(r) for r in self.query("SELECT * FROM projects ORDER BY project")]

    def take_annotation_count(self, project: int, at_least: int) -> int:
        """If ``at_least`` new or updated annotations are counted, take them (subtract, atomically) and return how
        many were taken; else 0. Events that arrive meanwhile stay counted."""
        with self.transaction() as c:
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
        with self.transaction() as c:
            c.execute("INSERT OR IGNORE INTO projects (project, updated_at) VALUES (?, ?)", (project, time.time()))
            for k, v in fields.items():
                c.execute(f"UPDATE projects SET {k} = ?, updated_at = ? WHERE project = ?", (v, time.time(), project))
