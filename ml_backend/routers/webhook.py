"""POST /webhook: Label Studio's events. Answers at once (Label Studio waits 1 s); training runs in the worker."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends

from ml_backend.dependencies import get_backend, require_auth
from ml_backend.schemas import WebhookRequest, WebhookResponse
from ml_backend.state import Backend

router = APIRouter(dependencies=[Depends(require_auth)])
log = logging.getLogger(__name__)

ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")


def _id(obj) -> int | None:
    if isinstance(obj, dict):
        obj = obj.get("id")
    try:
        return int(obj) if obj is not None else None
    except (TypeError, ValueError):
        return None


@router.post("/webhook", response_model=WebhookResponse)
def webhook(body: WebhookRequest, backend: Backend = Depends(get_backend)) -> WebhookResponse:
    pid = _id(body.project)
    if isinstance(body.project, dict):
        backend.remember(None, None, pid, body.project.get("label_config"))
    backend.store.record_event(body.action, pid, _id(body.task), _id(body.annotation))
    job = None
    if body.action == "START_TRAINING":
        job, _ = backend.store.enqueue_training(pid, "START_TRAINING")
    elif body.action in ANNOTATION_EVENTS[:2] and backend.settings.train_every and pid is not None:
        count = backend.store.take_annotation_count(pid, backend.settings.train_every)
        if count:
            job, _ = backend.store.enqueue_training(pid, f"{count} new or updated annotations")
    if job is not None:
        backend.worker.notify()
    return WebhookResponse(status="ok", action=body.action, training_job=job)
