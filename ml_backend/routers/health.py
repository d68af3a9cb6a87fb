"""GET /health (no auth: Label Studio polls it; its details need basic auth when it is on), GET /status (training
queue, recent jobs, signals, annotator time) and GET /cost-model (a project's fitted annotator cost model, as a
file)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query

from detector_al.signals.annotator_time import MIN_FIT, export
from detector_al.signals.dashboard import status_annotator_time, status_ceal, status_signals
from detector_al.state.annotation_times import AnnotationTimes
from ml_backend.dependencies import authenticated, get_backend, require_auth
from ml_backend.schemas import MAX_ID, ErrorResponse, HealthResponse
from ml_backend.state import Backend

router = APIRouter()


@router.get("/health", response_model=HealthResponse, response_model_exclude_none=True)
@router.get("/", response_model=HealthResponse, response_model_exclude_none=True, include_in_schema=False)
def health(backend: Backend = Depends(get_backend), full: bool = Depends(authenticated)) -> HealthResponse:
    """Up or not, for anyone (no auth: Label Studio polls it); the model version and the training state (the last
    job's result or error text) only with basic auth when it is on."""
    if not full:
        return HealthResponse()
    return HealthResponse(model_version=backend.service.model_version, training=backend.worker.state())


@router.get("/status", dependencies=[Depends(require_auth)])
def status(backend: Backend = Depends(get_backend)) -> dict:
    """The machine-readable twin of /dashboard."""
    stopping, label_errors = status_signals(
        backend.store, backend.settings.stop_threshold, backend.settings.stop_patience
    )
    return {
        "dashboard": "/dashboard",
        "model_version": backend.service.model_version,
        "versions": backend.registry.versions(),
        "training": backend.worker.state(),
        "jobs": backend.store.training_jobs(10),
        "train_every": backend.settings.train_every,  # a project trains by itself at this annotations_since_training
        "projects": backend.store.projects(),
        "warnings": [p["sampling_warning"] for p in backend.store.projects() if p["sampling_warning"]],
        "stopping": stopping,
        "label_errors": label_errors,
        "annotator_time": status_annotator_time(backend.store, backend.service.model_version),
        "ceal": status_ceal(backend.service),
    }


@router.get("/cost-model", dependencies=[Depends(require_auth)], responses={404: {"model": ErrorResponse}})
def cost_model(project: int = Query(..., ge=0, le=MAX_ID), backend: Backend = Depends(get_backend)) -> dict:
    """The project's per-action seconds fitted to its annotators' lead_time
    (:func:`~detector_al.signals.annotator_time.export`): save it and pass it to ``simulate --cost-model`` or
    ``STRATEGY=entropy_roi:<file>``."""
    fit, usable = AnnotationTimes(backend.store).cost_fit(project)
    if fit is None:
        raise HTTPException(
            404, f"project {project}: {usable} annotations with a known edit; the fit needs at least {MIN_FIT}"
        )
    return export(fit, project)
