"""One queue per project: one planner over one stored pool, whichever table holds a task, written to Label Studio.

A project's tasks are scored in two places: the backend records what ``/predict`` answered (the ``predictions``
table), ``ingest`` what it scored of a folder (the ``images`` table). The queue is planned over both at once
(:meth:`~detector_al.state.store.Store.iter_project_queue`: a task the backend predicted counts by that prediction,
an ingested one it has not predicted by ingest's row), so a project serves one batch of the budget's size, whether
ingest, the backend or both scored its tasks. The backend's refresh and the end of ``ingest`` both call
:func:`refresh_queue`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Collection, Iterator
from typing import NamedTuple

import numpy as np

from detector_al.label_studio.publish import TASK_GONE, TaskQueueUpdate, publish_queue
from detector_al.queue.build import AUTO_ACCEPT, QueueEntry, embedding_matrix
from detector_al.queue.plan import StoredPlace, plan_stored_queue

log = logging.getLogger(__name__)

IMAGE, PREDICTION = "image", "prediction"  # where a task of the queue comes from (the store's table)


def queue_fields(uncertainty: float | None, entry: QueueEntry) -> dict:
    """The task data fields of an ingested task's queue place (:data:`~detector_al.label_studio.publish.QUEUE_FIELDS`):
    ``al_priority`` (``1 - score``: the tabs' order), ``al_uncertainty``, ``al_status``."""
    return {
        "al_priority": round(entry.priority, 6),
        "al_uncertainty": None if uncertainty is None else round(uncertainty, 8),
        "al_status": entry.status,
    }


class QueueRefresh(NamedTuple):
    """What :func:`refresh_queue` did: tasks that changed place, those not written yet (refresh again later), and the
    batch's size."""

    moved: int
    pending: int
    batch: int


def refresh_queue(
    store,
    ls,
    project: int,
    model_version: str,
    budget: int,
    confidence,
    cold_start: bool = False,
    exclude: Collection[int] = frozenset(),
) -> QueueRefresh:
    """Re-build a project's one queue from the store and write what changed to Label Studio.

    Tasks are scored one request (or one ingest batch) at a time, each alone in its band; this chooses the batch
    over the whole pool (:func:`~detector_al.queue.plan.plan_stored_queue`: streamed, in bounded memory) and moves
    the changed tasks: their prediction's score, and an ingested task's ``al_*`` fields too. Labeled tasks (webhook
    events, and ``exclude``: the ones ``ingest`` read labeled from Label Studio) are left out. With ``cold_start``, a
    cold model's batch is TypiClust's, away from the labeled tasks' clusters.

    Tasks found deleted in Label Studio (a ``TASKS_DELETED`` webhook missed) are forgotten
    (:meth:`~detector_al.state.store.Store.forget_tasks`) and the batch is chosen again without them.
    """

    def places() -> Iterator[tuple[StoredPlace, sqlite3.Row]]:
        for r in store.iter_project_queue(project, model_version):
            if r["task_id"] in exclude:
                continue
            mc = r["max_confidence"]  # NULL in rows stored before the column existed: then no cold start
            yield StoredPlace(r["task_id"], r["score"], r["decision"] == AUTO_ACCEPT, mc, r["embedding"]), r

    def labeled_embeddings(dim: int) -> np.ndarray | None:
        blobs = store.labeled_embeddings(project)
        if exclude:
            rows = store.iter_images(project, "error IS NULL AND task_id IS NOT NULL AND embedding IS NOT NULL")
            blobs += [r.embedding for r in rows if r.task_id in exclude]
        return embedding_matrix(blobs, dim)

    for _ in range(3):  # a pass that finds deleted tasks plans again without them
        plan = plan_stored_queue(
            lambda: (p for p, _ in places()),
            budget,
            confidence,
            cold_start=cold_start,
            labeled_embeddings=labeled_embeddings,
        )
        changed = []
        for place, r in places():
            e = plan.entry(place)
            if r["decision"] != e.status or abs((r["confidence"] or 0.0) - e.score) > 1e-12:
                changed.append((r, e))
        updates = [
            TaskQueueUpdate(r["task_id"], e.score, queue_fields(r["score"], e) if r["source"] == IMAGE else None)
            for r, e in changed
        ]
        results = publish_queue(ls, project, model_version, updates)
        gone = {t for t, why in results if why == TASK_GONE}
        failed = {t for t, _ in results} - gone
        written = [(r, e) for r, e in changed if r["task_id"] not in failed and r["task_id"] not in gone]
        store.set_queue(project, [(r["task_id"], e.status, e.score) for r, e in written if r["source"] == PREDICTION])
        store.set_image_queue(
            project, [(r["content_hash"], e.status, e.priority) for r, e in written if r["source"] == IMAGE]
        )
        if not gone:
            break
        store.forget_tasks(project, gone)
        log.info("project %s: %d deleted tasks forgotten", project, len(gone))
    return QueueRefresh(len(changed), len(failed), len(plan.batch))
