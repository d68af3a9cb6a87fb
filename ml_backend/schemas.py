"""Request and response models of every endpoint (the bodies Label Studio 1.23 sends and expects)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class HealthResponse(BaseModel):
    status: str = "UP"
    model_class: str = "detector-al"
    model_version: str
    training: dict[str, Any] = Field(default_factory=dict)


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: str | int | None = None
    schema_: str = Field(..., alias="schema", min_length=1)
    hostname: str | None = None
    access_token: str | None = None
    extra_params: Any = None


class SetupResponse(BaseModel):
    model_version: str
    unmatched_labels: list[str] = Field(default_factory=list)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: list[dict[str, Any]]
    project: str | int | None = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


class TaskResult(BaseModel):
    result: list[dict[str, Any]]
    score: float | None
    model_version: str


class PredictResponse(BaseModel):
    results: list[TaskResult]


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    action: str = Field(..., min_length=1)
    project: dict[str, Any] | int | None = None
    task: dict[str, Any] | None = None
    annotation: dict[str, Any] | None = None


class WebhookResponse(BaseModel):
    status: str
    action: str
    training_job: int | None = None


class VersionsResponse(BaseModel):
    versions: list[str]
