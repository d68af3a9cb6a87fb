"""Request and response models of every endpoint (the bodies Label Studio 1.23 sends and expects).

Ids are bounded to what Label Studio and SQLite hold (0 .. 2^63 - 1) and label configs to
:data:`MAX_LABEL_CONFIG_CHARS`, so a hostile body gets a 422 that names the field, never a 500.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MAX_ID = 2**63 - 1
MAX_LABEL_CONFIG_CHARS = 256_000  # Label Studio's own configs are a few kB
MAX_TASKS = 1000  # per /predict request (Label Studio sends one task, or a page of the Data Manager)


def _project_id(value: Any) -> Any:
    """``"12.1700000000"`` (what Label Studio sends) -> 12; numbers pass on to the int check."""
    if isinstance(value, str):
        head = value.split(".", 1)[0]
        if not head.isdigit():
            raise ValueError(f"a project id is '<id>' or '<id>.<timestamp>', got {value[:40]!r}")
        return int(head)
    return value


Id = Annotated[int, Field(ge=0, le=MAX_ID, strict=False)]
ProjectId = Annotated[Id | None, BeforeValidator(_project_id)]
LabelConfig = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CONFIG_CHARS)]


class Task(BaseModel):
    """A Label Studio task as /predict receives it: its id and its data (the image URL under the config's key)."""

    model_config = ConfigDict(extra="allow")
    id: Id | None = None
    data: dict[str, Any]


class ErrorResponse(BaseModel):
    detail: str


class HealthResponse(BaseModel):
    """``status`` and ``model_class`` for anyone (Label Studio polls /health); the model version and the training
    state (the last job's result or error) only to a request that passes basic auth, when it is on."""

    status: str = "UP"
    model_class: str = "detector-al"
    model_version: str | None = None
    training: dict[str, Any] | None = None


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: ProjectId = None
    schema_: LabelConfig = Field(..., alias="schema")
    hostname: str | None = Field(None, max_length=2048)
    access_token: str | None = Field(None, max_length=8192)
    extra_params: Any = None


class SetupResponse(BaseModel):
    model_version: str
    unmatched_labels: list[str] = Field(default_factory=list)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: list[Task] = Field(..., max_length=MAX_TASKS)
    project: ProjectId = None
    label_config: LabelConfig | None = None
    params: dict[str, Any] | None = None


class TaskResult(BaseModel):
    result: list[dict[str, Any]]
    score: float | None
    model_version: str


class PredictResponse(BaseModel):
    results: list[TaskResult]


class Ref(BaseModel):
    """An object of a webhook body, by id (the rest is kept but not used)."""

    model_config = ConfigDict(extra="allow")
    id: Id | None = None


class WebhookProject(Ref):
    label_config: LabelConfig | None = None


def _ref(value: Any) -> Any:
    """Label Studio sends objects; a bare id is accepted too."""
    return {"id": value} if isinstance(value, int | float | str) and not isinstance(value, bool) else value


def _lead_time(value: Any) -> Any:
    """A ``lead_time`` that is not a non-negative number is no measurement (None), never a 422 that loses the event."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < float("inf")
    return value if ok else None


class WebhookAnnotation(Ref):
    was_cancelled: bool = False  # a skip: Label Studio saves it as an annotation, and it is no label
    lead_time: Annotated[float | None, BeforeValidator(_lead_time)] = Field(
        None, description="the seconds the annotator spent (Label Studio measures it on the labeling page)"
    )


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    action: str = Field(..., min_length=1, max_length=100)
    project: Annotated[WebhookProject | None, BeforeValidator(_ref)] = None
    task: Annotated[Ref | None, BeforeValidator(_ref)] = None
    annotation: Annotated[WebhookAnnotation | None, BeforeValidator(_ref)] = None
    annotations: list[Annotated[Ref, BeforeValidator(_ref)]] | None = Field(
        None, max_length=100_000, description="ANNOTATIONS_DELETED: the deleted annotations, by id"
    )
    tasks: list[Annotated[Ref, BeforeValidator(_ref)]] | None = Field(
        None, max_length=100_000, description="TASKS_DELETED: the deleted tasks, by id"
    )


class TrainRequest(BaseModel):
    """What Label Studio versions before the START_TRAINING webhook send to ``POST /train``."""

    model_config = ConfigDict(extra="allow")
    project: Annotated[
        ProjectId | WebhookProject, BeforeValidator(lambda v: v if isinstance(v, dict) else _project_id(v))
    ] = None
    label_config: LabelConfig | None = None
    annotations: list[Any] | None = None
    params: dict[str, Any] | None = None


class WebhookResponse(BaseModel):
    status: str
    action: str
    training_job: int | None = None


class CancelResponse(BaseModel):
    job: int
    status: str  # "cancelled" (it had not started) or "cancelling" (its training is being killed)


class VersionsResponse(BaseModel):
    versions: list[str]
