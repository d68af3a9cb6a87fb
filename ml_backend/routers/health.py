"""GET /health (no auth: Label Studio polls it), GET /status (training queue, recent jobs, signals, annotator time) and
GET /cost-model (a project's fitted annotator cost model, as a file)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query

from detector_al.signals.annotator_time import MIN_FIT, export
from detector_al.signals.dashboard import status_annotator_time, status_signals
from detector_al.state.annotation_times import AnnotationTimes
from ml_backend.dependencies import get_backend, require_auth
from ml_backend.schemas import MAX_ID, ErrorResponse, HealthResponse
from ml_backend.state import Backend

router = APIRouter()


@router.get("/health", response_model=HealthResponse)
@router.get("/", response_model=HealthResponse, include_in_schema=False)
def health(backend: Backend = Depends(get_backend)) -> HealthResponse:
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
        "projects": backend.store.projects(),
        "warnings": [p["sampling_warning"] for p in backend.store.projects() if p["sampling_warning"]],
        "stopping": stopping,
        "label_errors": label_errors,
        "annotator_time": status_annotator_time(backend.store, backend.service.model_version),
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
