"""The ``predictions`` table: the backend's prediction of each task, its score and its place in the queue."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

from detector_al.state.database import Database
from detector_al.state.events_table import LABELED_TASKS
from detector_al.state.schema import PredictionRow


class PredictionsTable(Database):
    """The backend's predictions per task (part of :class:`~detector_al.state.store.Store`)."""

    def record_predictions(self, project: int, rows: list[PredictionRow]) -> None:
        """Upsert the rows in one transaction. ``confidence`` is the score Label Studio serves by (queue order)."""
        now = time.time()
        with self.transaction() as c:
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
        rows = self.query(
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
            rows = self.query(
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
        rows = self.query(sql + " AND embedding IS NOT NULL ORDER BY task_id", (project, project))
        return [r["embedding"] for r in rows]

    def set_queue(self, project: int, updates: list[tuple[int, str, float]]) -> None:
        """Set ``(task_id, decision, label studio score)`` of several predictions in one transaction."""
        with self.transaction() as c:
            c.executemany(
                "UPDATE predictions SET decision = ?, confidence = ? WHERE project = ? AND task_id = ?",
                [(d, sc, project, t) for t, d, sc in updates],
            )

    def unlabeled_scores(self, project: int, version: str | None) -> list[sqlite3.Row]:
        """``(decision, score, failed)`` of every unlabeled task of ``version``, counted once: the backend's prediction
        when it made one (``predictions``), else what ``ingest`` recorded (``images``, where unreadable files count as
        failed)."""
        return self.query(
            "SELECT decision, score, error IS NOT NULL AS failed FROM predictions WHERE project = ? AND"
            f" model_version IS ? AND task_id NOT IN ({LABELED_TASKS})"
            " UNION ALL SELECT decision, score, error IS NOT NULL FROM images WHERE project = ? AND (error IS NOT NULL"
            " OR (model_version IS ? AND task_id IS NOT NULL AND task_id NOT IN (SELECT task_id FROM predictions WHERE"
            f" project = ? AND model_version IS ?) AND task_id NOT IN ({LABELED_TASKS})))",
            (project, version, project, project, version, project, version, project),
        )
