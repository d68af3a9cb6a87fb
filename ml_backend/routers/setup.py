"""POST /setup (Label Studio connects or is about to predict) and GET /versions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from detector_al.label_studio.config import LabelConfigError
from ml_backend.dependencies import get_backend, require_auth
from ml_backend.schemas import SetupRequest, SetupResponse, VersionsResponse
from ml_backend.state import Backend

router = APIRouter(dependencies=[Depends(require_auth)])
SETUP_ALIGN_S = 2.0
"""How long /setup waits for the project's alignment (Label Studio waits 3 s for the answer)."""


@router.post("/setup", response_model=SetupResponse)
def setup(body: SetupRequest, backend: Backend = Depends(get_backend)) -> SetupResponse:
    try:
        target = backend.service.target(body.schema_)
    except LabelConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    pid = body.project
    backend.remember(body.hostname, body.access_token, pid, body.schema_)
    if pid is not None:
        backend.sync.align_project_within(
            pid, SETUP_ALIGN_S
        )  # before answering: the project serves our version at once
    return SetupResponse(model_version=backend.service.version_for(pid), unmatched_labels=list(target.unmatched_labels))


@router.get("/versions", response_model=VersionsResponse)
def versions(backend: Backend = Depends(get_backend)) -> VersionsResponse:
    return VersionsResponse(versions=backend.registry.versions() or [backend.service.model_version])
