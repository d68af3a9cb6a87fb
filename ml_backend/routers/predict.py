"""POST /predict: pre-annotations and a confidence per task, one result per task, in order.

The answer's ``Server-Timing`` header says how long the prediction itself took (``predict;dur=`` in ms: fetch,
inference, scoring and the store's record), so a client sees what the HTTP layer adds.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Response

from detector_al.label_studio.config import LabelConfigError
from ml_backend.dependencies import get_backend, require_auth
from ml_backend.schemas import PredictRequest, PredictResponse, TaskResult
from ml_backend.state import Backend

router = APIRouter(dependencies=[Depends(require_auth)])


@router.post("/predict", response_model=PredictResponse)
def predict(body: PredictRequest, response: Response, backend: Backend = Depends(get_backend)) -> PredictResponse:
    pid = body.project
    label_config = body.label_config or (backend.credentials.label_configs.get(pid) if pid is not None else None)
    if not label_config:
        raise HTTPException(422, "no label_config in the request and none known for this project: call /setup first")
    started = time.perf_counter()
    try:
        answers = backend.service.predict_tasks(
            [t.model_dump() for t in body.tasks], label_config, pid, backend.credentials.url, backend.credentials.token
        )
    except LabelConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    response.headers["Server-Timing"] = f"predict;dur={1000 * (time.perf_counter() - started):.1f}"
    if pid is not None:
        backend.sync.schedule_queue_refresh(pid)  # then aligns the project's version, should /setup not have
    return PredictResponse(results=[TaskResult(**a.to_label_studio()) for a in answers])
