"""POST /webhook: Label Studio's events, and POST /train (older Label Studio's "Start Training").

Both answer at once (Label Studio waits 1 s); training runs in the worker."""

from __future__ import annotations

import logging

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException

from detector_al.label_studio.client import LabelStudioError
from detector_al.label_studio.config import LabelConfigError
from detector_al.label_studio.lead_times import record_webhook_annotation
from detector_al.state.store import ANNOTATION_EVENTS
from ml_backend.dependencies import get_backend, require_auth
from ml_backend.schemas import TrainRequest, WebhookProject, WebhookRequest, WebhookResponse
from ml_backend.state import Backend

router = APIRouter(dependencies=[Depends(require_auth)])
log = logging.getLogger(__name__)


def record_annotation_time(backend: Backend, project: int, task_id: int, annotation: dict) -> None:
    """After the answer: the annotation's seconds and what it started from
    (:func:`~detector_al.label_studio.lead_times.record_webhook_annotation`); a failure is logged, never raised."""
    try:
        config = backend.credentials.label_configs.get(project)
        target = backend.service.target(config) if config else None
    except LabelConfigError:
        target = None
    try:
        ls = backend.client().ls
    except LabelStudioError:  # no Label Studio known: the store's knowledge only
        ls = None
    try:
        record_webhook_annotation(backend.store, project, task_id, annotation, target, ls)
    except Exception as exc:
        log.warning("project %s: annotation time of task %s not recorded: %s", project, task_id, exc)


@router.post("/webhook", response_model=WebhookResponse)
def webhook(
    body: WebhookRequest, background: BackgroundTasks, backend: Backend = Depends(get_backend)
) -> WebhookResponse:
    pid = body.project.id if body.project else None
    if body.project is not None:
        backend.remember(None, None, pid, body.project.label_config)
    task = body.task.id if body.task else None
    annotation = body.annotation
    backend.store.record_event(
        body.action,
        pid,
        task,
        annotation.id if annotation else None,
        cancelled=bool(annotation and annotation.was_cancelled),
        deleted_annotations=[a.id for a in body.annotations or () if a.id is not None]
        if body.action == "ANNOTATIONS_DELETED"
        else (),
    )
    if body.action in ANNOTATION_EVENTS[:2] and pid is not None and task is not None and annotation is not None:
        background.add_task(record_annotation_time, backend, pid, task, annotation.model_dump())
    job = None
    if body.action == "START_TRAINING":
        job, _ = backend.store.enqueue_training(pid, "START_TRAINING")
    elif body.action == "ANNOTATIONS_DELETED" and pid is not None:
        backend.sync.schedule_queue_refresh(pid)  # a deleted label returns its task to the queue
    elif body.action == "TASKS_DELETED":  # their batch slots go to other tasks; a re-ingest makes them again
        removed = backend.store.forget_tasks(pid, [t.id for t in body.tasks or () if t.id is not None])
        if removed and pid is not None:
            backend.sync.schedule_queue_refresh(pid)
    elif (
        body.action in ANNOTATION_EVENTS[:2]
        and not (annotation and annotation.was_cancelled)
        and backend.settings.train_every
        and pid is not None
    ):
        count = backend.store.take_annotation_count(pid, backend.settings.train_every)
        if count:
            job, _ = backend.store.enqueue_training(pid, f"{count} new or updated annotations")
    if job is not None:
        backend.worker.notify()
    return WebhookResponse(status="ok", action=body.action, training_job=job)


@router.post("/train", response_model=WebhookResponse)
def train(body: TrainRequest, backend: Backend = Depends(get_backend)) -> WebhookResponse:
    """Label Studio before the START_TRAINING webhook flag posts "Start Training" here: the same training request."""
    project = body.project
    pid = project.id if isinstance(project, WebhookProject) else project
    if pid is None:
        raise HTTPException(422, "project: the training request names no project (expected an id or {'id': ...})")
    label_config = body.label_config or (project.label_config if isinstance(project, WebhookProject) else None)
    backend.remember(None, None, pid, label_config)
    backend.store.record_event("START_TRAINING", pid, None, None)
    job, _ = backend.store.enqueue_training(pid, "START_TRAINING (POST /train)")
    backend.worker.notify()
    return WebhookResponse(status="ok", action="START_TRAINING", training_job=job)
