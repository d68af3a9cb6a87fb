"""POST /jobs/{job_id}/cancel: stop a training job (a queued one at once, a running one at its next step, in any phase)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path

from ml_backend.dependencies import get_backend, require_auth
from ml_backend.schemas import MAX_ID, CancelResponse
from ml_backend.state import Backend

router = APIRouter(dependencies=[Depends(require_auth)])


@router.post("/jobs/{job_id}/cancel", response_model=CancelResponse, responses={404: {}, 409: {}})
def cancel(job_id: int = Path(..., ge=1, le=MAX_ID), backend: Backend = Depends(get_backend)) -> CancelResponse:
    outcome = backend.worker.cancel(job_id)
    if outcome is None:
        raise HTTPException(404, f"no training job {job_id}")
    status, acted = outcome
    if not acted:
        raise HTTPException(409, f"training job {job_id} is {status}: nothing to cancel")
    return CancelResponse(job=job_id, status=status)
