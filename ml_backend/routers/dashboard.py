"""GET /dashboard: the loop of every project on one page (behind the same basic auth as the rest)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from detector_al.pipelines.retrain_dataset import promotion_rule
from detector_al.signals.dashboard import project_overview
from ml_backend.dashboard_page import render
from ml_backend.dependencies import get_backend, require_auth
from ml_backend.schemas import MAX_ID
from ml_backend.state import Backend

router = APIRouter(dependencies=[Depends(require_auth)])


def overviews(backend: Backend, project: int | None = None) -> list[dict]:
    """:func:`~detector_al.signals.dashboard.project_overview` of every project the store knows (or of one)."""
    s = backend.settings
    ids = [p["project"] for p in backend.store.projects()]
    if project is not None:
        ids = [p for p in ids if p == project]
    state = backend.worker.state()
    return [
        project_overview(
            backend.store,
            p,
            backend.service.model_version,
            state,
            backend.service.ceal_for(),
            backend.service.detector.names,
            s.stop_threshold,
            s.stop_patience,
            promotion_rule(s.train_min_val_images, s.train_tolerance),
            backend.service.ceal_calibration(),
            s.train_every,
        )
        for p in ids
    ]


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(
    project: int | None = Query(None, ge=0, le=MAX_ID, description="one project only"),
    backend: Backend = Depends(get_backend),
) -> HTMLResponse:
    pages = overviews(backend, project)
    running = any(o["live_job"] for o in pages)
    html = render(pages, backend.service.model_version, backend.credentials.url, refresh_s=10 if running else None)
    return HTMLResponse(html)
