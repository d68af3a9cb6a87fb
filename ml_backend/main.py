"""The FastAPI application: wires the routers; the model is loaded once, in the lifespan."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from detector_al.serving.worker import JobRunner
from ml_backend.routers import dashboard, docs, health, jobs, predict, setup, webhook
from ml_backend.schemas import ErrorResponse
from ml_backend.settings import Settings
from ml_backend.state import Backend

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, backend: Backend | None = None, run_job: JobRunner | None = None
) -> FastAPI:
    """Build the app. ``backend`` (tests) or ``settings`` (the server) say what to serve."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        b = backend or Backend(settings or Settings(), run_job=run_job)
        app.state.backend = b
        b.worker.start()
        log.info("serving model %s", b.service.model_version)
        yield
        b.close()

    app = FastAPI(
        title="detector-al ML backend",
        lifespan=lifespan,
        docs_url=None,  # served below, behind basic auth when it is on
        redoc_url=None,
        openapi_url=None,
        responses={
            401: {"model": ErrorResponse, "description": "basic auth is on and the credentials are wrong or missing"},
            422: {"model": ErrorResponse, "description": "the request is invalid: the message names the field"},
        },
    )
    for r in (health.router, setup.router, predict.router, webhook.router, jobs.router, dashboard.router, docs.router):
        app.include_router(r)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": "invalid request: " + "; ".join(problems)})

    return app
