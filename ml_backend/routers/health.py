"""GET /health (no auth: Label Studio polls it) and GET /status (training queue and recent jobs)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from detector_al.signals.dashboard import status_signals
from ml_backend.dependencies import get_backend, require_auth
from ml_backend.schemas import HealthResponse
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
    }
