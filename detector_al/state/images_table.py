"""The ``images`` table: what ``ingest`` recorded of each image file (hash, task, decision, queue priority)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from detector_al.state.database import Database
from detector_al.state.schema import IMAGE_COLUMNS, ImageRow


class ImagesTable(Database):
    """Ingested images by content hash (part of :class:`~detector_al.state.store.Store`)."""

    def record_images(self, project: int, rows: list[ImageRow]) -> None:
        """Upsert image rows (one transaction: a batch is stored whole or not at all)."""
        cols = ", ".join(IMAGE_COLUMNS)
        marks = ", ".join("?" for _ in IMAGE_COLUMNS)
        updates = ", ".join(f"{c}=excluded.{c}" for c in IMAGE_COLUMNS if c != "content_hash")
        now = time.time()
        with self.transaction() as c:
            c.executemany(
                f"INSERT INTO images ({cols}, project, updated_at) VALUES ({marks}, ?, ?)"
                f" ON CONFLICT(content_hash, project) DO UPDATE SET {updates}, updated_at=excluded.updated_at",
                [(*(getattr(r, k) for k in IMAGE_COLUMNS), project, now) for r in rows],
            )

    def image_hashes(self, project: int) -> dict[str, int | None]:
        """content hash -> task id (None for images stored without a task, e.g. unreadable ones)."""
        return {
            r["content_hash"]: r["task_id"]
            for r in self.query("SELECT content_hash, task_id FROM images WHERE project = ?", (project,))
        }

    def images(self, project: int, where: str = "1", args: Iterable = (), order: str = "path") -> list[ImageRow]:
        """Image rows of a project matching an SQL condition (``where`` is code, never user input)."""
        rows = self.query(f"SELECT * FROM images WHERE project = ? AND ({where}) ORDER BY {order}", (project, *args))
        return [ImageRow(**{k: r[k] for k in IMAGE_COLUMNS}) for r in rows]

    def iter_images(self, project: int, where: str = "1", page: int = 2000) -> Iterator[ImageRow]:
        """:meth:`images` by content hash, read a page at a time (``where`` is code, never user input)."""
        after = ""
        while True:
            rows = self.query(
                f"SELECT * FROM images WHERE project = ? AND ({where}) AND content_hash > ?"
                " ORDER BY content_hash LIMIT ?",
                (project, after, page),
            )
            yield from (ImageRow(**{k: r[k] for k in IMAGE_COLUMNS}) for r in rows)
            if len(rows) < page:
                return
            after = rows[-1]["content_hash"]

    def count_images(self, project: int, where: str = "1") -> int:
        return self.query(f"SELECT COUNT(*) AS n FROM images WHERE project = ? AND ({where})", (project,))[0]["n"]

    def set_image_queue(self, project: int, updates: list[tuple[str, str, float]]) -> None:
        """Set ``(content_hash, decision, priority)`` for several images in one transaction."""
        with self.transaction() as c:
            c.executemany(
                "UPDATE images SET decision = ?, priority = ?, updated_at = ? WHERE content_hash = ? AND project = ?",
                [(d, pr, time.time(), h, project) for h, d, pr in updates],
            )

    def set_image_queue_by_task(self, project: int, updates: list[tuple]) -> None:
        """After a re-scoring: ``(task_id, score, confidence, decision, priority, round, model_version[,
        max_confidence])`` of the ingested images shown by these tasks (tasks ingest did not make are not in this
        table: no-op). Without ``max_confidence`` it becomes NULL: the old model's value no longer holds."""
        with self.transaction() as c:
            c.executemany(
                "UPDATE images SET score = ?, confidence = ?, decision = ?, priority = ?, round = ?, model_version = ?,"
                " max_confidence = ?, updated_at = ? WHERE project = ? AND task_id = ?",
                [(*u[1:7], u[7] if len(u) > 7 else None, time.time(), project, u[0]) for u in updates],
            )
