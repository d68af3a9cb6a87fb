"""One queue per project: one planner over the project's one stored pool, written to Label Studio.

A project's images are scored in two places: the backend records what ``/predict`` answered, ``ingest`` what it
scored of a folder; both write the project's ``pool`` table, one row per image (a task the backend predicted after
ingest recorded it is that same row, :meth:`~detector_al.state.pool_table.PoolTable.record_predictions`). The queue
is planned over that table (:func:`plan_project_queue`), so a project serves one batch of the budget's size, whether
ingest, the backend or both scored its tasks. The backend's refresh and the end of ``ingest`` (an offline one too,
without Label Studio) both call :func:`refresh_queue`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import NamedTuple

from detector_al.label_studio.publish import TASK_GONE, TaskQueueUpdate, publish_queue
from detector_al.queue.build import AUTO_ACCEPT, QueueEntry, embedding_matrix
from detector_al.queue.plan import QueuePlan, StoredPlace, plan_stored_queue
from detector_al.state.schema import TASK_KEY

log = logging.getLogger(__name__)


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


def stored_place(r) -> StoredPlace:
    """A row of :meth:`~detector_al.state.pool_table.PoolTable.iter_queue` as the planner sees it (keyed by the row's
    key; ``max_confidence`` is NULL in rows stored before the column existed: then no cold start)."""
    return StoredPlace(r["key"], r["score"], r["decision"] == AUTO_ACCEPT, r["max_confidence"], r["embedding"])


def plan_project_queue(
    store,
    project: int,
    model_version: str | None,
    budget: int,
    confidence,
    cold_start: bool = False,
    exclude: Collection[int] = frozenset(),
) -> QueuePlan:
    """The batch over the project's pool (its scored rows of ``model_version``, None: of any; not labeled, nor in
    ``exclude``), in bounded memory (:func:`~detector_al.queue.plan.plan_stored_queue`). With ``cold_start``, a cold
    model's batch is TypiClust's, away from the labeled tasks' clusters."""
    return plan_stored_queue(
        lambda: (stored_place(r) for r in _queue(store, project, model_version, exclude)),
        budget,
        confidence,
        cold_start=cold_start,
        labeled_embeddings=lambda dim: embedding_matrix(store.labeled_embeddings(project, exclude), dim),
    )


def _queue(store, project: int, model_version: str | None, exclude: Collection[int], **kw):
    """:meth:`~detector_al.state.pool_table.PoolTable.iter_queue` without the tasks in ``exclude``."""
    return (
        r for r in store.iter_queue(project, model_version, **kw) if r["task_id"] is None or r["task_id"] not in exclude
    )


def refresh_queue(
    store,
    ls,
    project: int,
    model_version: str | None,
    budget: int,
    confidence,
    cold_start: bool = False,
    exclude: Collection[int] = frozenset(),
) -> QueueRefresh:
    """Re-build a project's one queue from the store and write what changed to Label Studio (``ls`` None: an offline
    ingest's pool, the store only).

    Tasks are scored one request (or one ingest batch) at a time, each alone in its band; this chooses the batch
    over the whole pool (:func:`plan_project_queue`: streamed, in bounded memory) and moves the changed tasks: their
    prediction's score, and an ingested task's ``al_*`` fields too. Labeled tasks (webhook events, and ``exclude``:
    the ones ``ingest`` read labeled from Label Studio) are left out. With ``cold_start``, a cold model's batch is
    TypiClust's, away from the labeled tasks' clusters.

    Tasks found deleted in Label Studio (a ``TASKS_DELETED`` webhook missed) are forgotten
    (:meth:`~detector_al.state.store.Store.forget_tasks`) and the batch is chosen again without them.
    """
    for _ in range(3):  # a pass that finds deleted tasks plans again without them
        plan = plan_project_queue(store, project, model_version, budget, confidence, cold_start, exclude)
        changed = []
        for r in _queue(store, project, model_version, exclude):
            e = plan.entry(stored_place(r))
            if r["decision"] != e.status or abs((r["confidence"] or 0.0) - e.score) > 1e-12:
                changed.append((r, e))
        failed: set[int] = set()
        gone: set[int] = set()
        if ls is not None:
            updates = [
                TaskQueueUpdate(
                    r["task_id"], e.score, None if r["key"].startswith(TASK_KEY) else queue_fields(r["score"], e)
                )
                for r, e in changed
                if r["task_id"] is not None
            ]
            results = publish_queue(ls, project, model_version, updates)
            gone = {t for t, why in results if why == TASK_GONE}
            failed = {t for t, _ in results} - gone
        store.set_queue(
            project, [(r["key"], e.status, e.score) for r, e in changed if r["task_id"] not in failed | gone]
        )
        if not gone:
            break
        store.forget_tasks(project, gone)
        log.info("project %s: %d deleted tasks forgotten", project, len(gone))
    return QueueRefresh(len(changed), len(failed), len(plan.batch))
