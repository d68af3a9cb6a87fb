"""The queue in a Label Studio project: the project's sampling and model version, and each task's queue numbers.

Label Studio serves "Label All Tasks" by the project's ``sampling``. Only ``"Uncertainty sampling"``
follows our queue (lowest prediction score first, see :mod:`detector_al.queue.build`), and only for predictions
whose ``model_version`` equals the project's. :func:`configure_project` sets both; the backend, ``ingest`` and
retraining call it, so there is one writer of the project's ``model_version``.

A user may set the sampling back (Settings -> General in the open-source UI offers only sequential and
random sampling). :func:`configure_project` changes it only the first time the store sees a project (its
``sampling_configured`` mark, shared by the backend and ``ingest``); afterwards it reports the change instead of
overriding the user's choice.

A new model version reaches annotators in one step (:func:`publish_version`): its predictions are written while
the project still serves the old ones, then the project's version is switched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from detector_al.queue.build import UNCERTAINTY_SAMPLING

log = logging.getLogger(__name__)

WRITERS = 4
"""Requests to Label Studio in flight at once while publishing a queue."""
PER_TASK_LOOKUPS = 200
"""Up to this many changed tasks, their predictions are looked up by their task ids (a project-wide list carries
every prediction's regions: megabytes on a large project); above, one project-wide list is cheaper."""
LOOKUP_PAGE = 100
"""Task ids per lookup request (Data Manager's ``selectedItems`` travel in the URL)."""


def sampling_warning(project: int, sampling: str | None) -> str | None:
    """What to tell the user when the project's sampling does not serve the queue (None when it does)."""
    if sampling == UNCERTAINTY_SAMPLING:
        return None
    return (
        f"project {project} uses {sampling!r}: 'Label All Tasks' does not follow the active-learning queue. "
        f'Set it back with the API: PATCH /api/projects/{project} {{"sampling": "{UNCERTAINTY_SAMPLING}"}}, '
        "or reconnect the model (the backend sets it when it first sees a project)."
    )


def configure_project(ls, store, project: int, model_version: str | None) -> str | None:
    """Set the project's ``model_version`` (when given) and, the first time ``store`` sees the project, its sampling
    to uncertainty sampling; then mark the project configured in ``store`` with the :func:`sampling_warning`.

    Args:
        ls: a ``label_studio_sdk.LabelStudio`` client.
        store: the :class:`~detector_al.state.store.Store` of the backend (or of ``ingest``): it remembers that the
            sampling was set once, so a user who sets it back later is told, not overridden.

    Returns:
        the :func:`sampling_warning` for the project as it now is (None: the stream follows the queue).
    """
    current = ls.projects.get(id=project)
    sampling = current.sampling
    first_time = not store.project(project)["sampling_configured"]
    if first_time and sampling != UNCERTAINTY_SAMPLING:  # on its own: Label Studio may refuse the version yet
        ls.projects.update(id=project, sampling=UNCERTAINTY_SAMPLING)
        log.info("project %s: sampling %r -> %r", project, sampling, UNCERTAINTY_SAMPLING)
        sampling = UNCERTAINTY_SAMPLING
    if model_version and current.model_version != model_version:
        ls.projects.update(id=project, model_version=model_version)
        log.info("project %s: model_version %r -> %r", project, current.model_version, model_version)
    warning = sampling_warning(project, sampling)
    if warning:
        log.warning(warning)
    store.set_project(project, sampling_configured=1, sampling_warning=warning)
    return warning


IMPORT_CHUNK = 500
"""Predictions per ``import_predictions`` request."""


def delete_version(ls, project: int, model_version: str) -> int:
    """Delete every prediction of ``model_version`` in the project in one request (Label Studio's
    ``DELETE /api/projects/<id>/model-versions/``; label-studio-sdk 2.1.2 has no method for it). Returns how many."""
    response = ls._client_wrapper.httpx_client.request(
        f"api/projects/{project}/model-versions/", method="DELETE", json={"model_version": model_version}
    )
    response.raise_for_status()
    return int((response.json() or {}).get("deleted_predictions", 0))


def publish_version(
    ls, store, project: int, model_version: str, predictions: Iterable[dict], check: Callable[[], None] | None = None
) -> str | None:
    """Serve a new model version's predictions in one step, as annotators see it.

    1. ``predictions`` (``{"task", "result", "score"}``; ``model_version`` is added; any iterable: they are read and
       imported :data:`IMPORT_CHUNK` at a time) are imported while the project still serves its old version, so the
       stream keeps serving the old queue, whole;
    2. the project is switched to ``model_version`` (:func:`configure_project`): from then on it serves the new
       queue, whole.

    ``check`` is called before each chunk and before the switch (a job's cancel and time limit): what it raises
    stops the publishing like a failure. If anything fails before the switch, the predictions of ``model_version``
    written so far are deleted in one request (best effort: the project does not serve them anyway) and the error
    is raised: the project keeps serving the old version.

    Returns:
        :func:`configure_project`'s sampling warning.
    """
    written = False
    try:
        chunk: list[dict] = []
        for p in predictions:
            chunk.append({**p, "model_version": model_version})
            if len(chunk) >= IMPORT_CHUNK:
                if check is not None:
                    check()
                written = True
                ls.projects.import_predictions(id=project, request=chunk)
                chunk = []
        if chunk:
            if check is not None:
                check()
            written = True
            ls.projects.import_predictions(id=project, request=chunk)
        if check is not None:
            check()
        return configure_project(ls, store, project, model_version)
    except BaseException:
        try:
            if written:
                delete_version(ls, project, model_version)
        except Exception as exc:  # the project still serves the old version: these are never served
            log.warning("project %s: predictions of %s not removed: %s", project, model_version, exc)
        raise


UNLABELED = {
    "conjunction": "and",
    "items": [{"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0}],
}
"""Data Manager filter: tasks without a label (Label Studio's counter leaves skips out, as our rule does)."""


def drop_other_versions(ls, project: int, model_version: str, chunks: Iterable[list[dict]]) -> int:
    """After a switch: the re-scored tasks keep only their ``model_version`` prediction (a task shows one model's
    boxes); the labeled tasks keep theirs (what each annotation started from).

    Label Studio 1.23 deletes in bulk only by version, project-wide (labeled tasks included), or by task, every
    version. So for each chunk of re-scored tasks (``{"task", "result", "score"}``: their rows of ``model_version``)
    every prediction is deleted in one request (the Data Manager action ``delete_tasks_predictions``) and the new one
    imported again in one more: two requests a chunk instead of one per prediction. Meanwhile the chunk's tasks are
    briefly out of the stream (the rest is served in order). Best effort: a failure is logged (a task left without a
    prediction gets one from "Retrieve predictions"). Returns how many tasks were rewritten."""
    done = 0
    for chunk in chunks:
        ids = [int(r["task"]) for r in chunk]
        try:
            ls.actions.create(
                id="delete_tasks_predictions",
                project=project,
                filters=UNLABELED,  # a task labeled since it was listed keeps what its annotator was shown
                selected_items={"all": False, "included": ids},
            )
        except Exception as exc:
            log.warning("project %s: older predictions of %d tasks not removed: %s", project, len(ids), exc)
            continue
        rows = [{**r, "model_version": model_version} for r in chunk]
        for attempt in range(3):
            try:
                ls.projects.import_predictions(id=project, request=rows)
                done += len(ids)
                break
            except Exception as exc:
                log.warning(
                    "project %s: predictions of %d tasks not re-imported (try %d): %s",
                    project,
                    len(ids),
                    attempt + 1,
                    exc,
                )
    return done


QUEUE_FIELDS = ("al_priority", "al_uncertainty", "al_status")
"""The task data fields the queue owns: a queue update writes these and keeps every other field (the image first)."""


@dataclass(frozen=True)
class TaskQueueUpdate:
    """New queue numbers for one task: the prediction score, and its :data:`QUEUE_FIELDS` if the task has them.

    ``fields`` are merged into the task's data as Label Studio holds it (Label Studio's task update replaces the whole
    ``data``): a queue update never touches the image or another tool's fields."""

    task_id: int
    score: float
    fields: dict | None = None

    def __post_init__(self) -> None:
        extra = set(self.fields or ()) - set(QUEUE_FIELDS)
        if extra:
            raise ValueError(f"a queue update writes only {', '.join(QUEUE_FIELDS)}, not {', '.join(sorted(extra))}")


def tasks_by_id(ls, project: int, task_ids: list[int], pool: ThreadPoolExecutor | None = None) -> list:
    """These tasks (data and predictions), read :data:`LOOKUP_PAGE` tasks a request (Data Manager's task list with
    ``selectedItems``; one request for 20 tasks costs Label Studio about the CPU of two per-task lookups). A task
    deleted meanwhile is not in the answer."""

    def page(ids: list[int]) -> list:
        query = json.dumps({"selectedItems": {"all": False, "included": ids}})
        return ls.tasks.list(project=project, fields="all", query=query, page_size=len(ids)).items or []

    pages = [task_ids[i : i + LOOKUP_PAGE] for i in range(0, len(task_ids), LOOKUP_PAGE)]
    return [t for found in (pool.map(page, pages) if pool else map(page, pages)) for t in found]


def predictions_of_tasks(ls, project: int, task_ids: list[int], pool: ThreadPoolExecutor | None = None) -> list:
    """The predictions of these tasks (:func:`tasks_by_id`)."""
    return [p for t in tasks_by_id(ls, project, task_ids, pool) for p in (t.predictions or [])]


DATA_PAGE = 1000
"""Tasks per request when a project-wide queue update reads the tasks' data."""


def task_data_of_project(ls, project: int) -> dict[int, dict]:
    """task id -> data of every task of the project (ids and data only, :data:`DATA_PAGE` tasks a request)."""
    listed = ls.tasks.list(project=project, fields="task_only", include="id,data", page_size=DATA_PAGE)
    return {int(t.id): dict(t.data or {}) for t in listed}


TASK_GONE = "task deleted in Label Studio"
"""The failure :func:`publish_queue` reports for a task that no longer exists: forget it, never retry it."""


def publish_queue(
    ls, project: int, model_version: str, updates: list[TaskQueueUpdate], project_wide: bool | None = None
) -> list[tuple[int, str]]:
    """Write the prediction scores (predictions of ``model_version``) and task fields; returns the failures.

    The predictions are found with one project-wide list (``project_wide``; default: more than
    :data:`PER_TASK_LOOKUPS` updates) or by the tasks' ids (:func:`predictions_of_tasks`), and the writes go
    :data:`WRITERS` at a time (Label Studio spends about 0.03 s of CPU on a prediction's update and 0.06 s on a
    task's). One failed task is logged and returned, never fatal: the next refresh writes it again. A task deleted
    in Label Studio is returned with the reason :data:`TASK_GONE`: the caller forgets it rather than retrying.
    """
    if not updates:
        return []
    if project_wide is None:
        project_wide = len(updates) > PER_TASK_LOOKUPS

    with ThreadPoolExecutor(WRITERS, thread_name_prefix="detector-al-publish") as pool:
        data: dict[int, dict] | None = None  # the current data of the project's tasks (None: not read)
        if project_wide:
            listed = list(ls.predictions.list(project=project))
            if any(u.fields for u in updates):
                data = task_data_of_project(ls, project)
        else:
            tasks = tasks_by_id(ls, project, [u.task_id for u in updates], pool)
            listed = [p for t in tasks for p in (t.predictions or [])]
            data = {int(t.id): dict(getattr(t, "data", None) or {}) for t in tasks}
        predictions: dict[int, list[int]] = {}
        for p in listed:
            if p.model_version == model_version:
                predictions.setdefault(int(p.task), []).append(int(p.id))
        if data is None and any(u.task_id not in predictions for u in updates):
            data = task_data_of_project(ls, project)  # which of those tasks still exist

        def write(u: TaskQueueUpdate) -> tuple[int, str] | None:
            if data is not None and u.task_id not in data:
                return u.task_id, TASK_GONE
            if u.task_id not in predictions:  # Label Studio stores /predict answers after they arrive: not yet
                return u.task_id, f"no prediction of {model_version} yet"
            try:
                for pid in predictions[u.task_id]:
                    ls.predictions.update(id=pid, score=u.score)
                if u.fields:  # Label Studio replaces the whole data: send it whole, with the queue's fields changed
                    ls.tasks.update(id=u.task_id, data={**data[u.task_id], **u.fields})
            except Exception as exc:  # one task fails alone (deleted meanwhile, a transient error)
                log.warning("task %s: queue position not written: %s", u.task_id, exc)
                return u.task_id, str(exc)
            return None

        return [f for f in pool.map(write, updates) if f is not None]
