"""Backend settings, from the environment variables Label Studio users know (or a .env file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from detector_al.scoring_config import COLD_START
from detector_al.state.store import STORE_FILE_NAME
from detector_al.uncertainty import DEFAULT_STRATEGY


class Settings(BaseSettings):
    """Every field reads the upper-case environment variable of its name (``MODEL_DIR``, ``SCORE_THRESHOLD`` ...)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    label_studio_url: str | None = Field(None, description="Label Studio URL (else the one /setup sends)")
    label_studio_api_key: str | None = Field(
        None,
        description="personal access token (or legacy token), sent to LABEL_STUDIO_URL only (else /setup's token)",
    )
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    model_dir: Path = Field(Path("models/backend"), description="model versions and the SQLite state live here")
    model_path: str | None = Field(None, description="initial weights (default: the newest version in MODEL_DIR)")
    score_threshold: float = Field(0.25, ge=0.0, le=1.0, description="lowest box confidence sent to Label Studio")
    label_mapping: dict[str, str] = Field(default_factory=dict, description='JSON, e.g. {"car": "Vehicle"}')
    strategy: str = DEFAULT_STRATEGY
    ceal_delta0: float | None = None
    ceal_decay: float | None = None
    train_every: int = Field(0, ge=0, description="queue a training run every N new or updated annotations (0: off)")
    train_epochs: int = Field(20, ge=1, description="fine-tuning epochs per retraining round")
    train_tolerance: float = Field(0.005, ge=0.0, description="promote when new mAP50-95 >= serving - this")
    queue_budget: int = Field(20, ge=0, description="size of the diverse batch served first (0: by uncertainty only)")
    queue_cold_start: bool = Field(
        COLD_START,
        description="while the model is cold (fewer than half the images hold a box at confidence >= 0.5), the batch"
        " is TypiClust's (typical images of clusters not labeled yet); then by uncertainty (false: always uncertainty)",
    )
    queue_refresh_delay_s: float = Field(
        2.0, ge=0.0, description="re-build the queue this long after the last /predict of a project"
    )
    max_image_decode_mb: int = Field(
        512, ge=1, description="memory budget for decoding one image; larger images fail their task with a message"
    )
    local_files_document_root: Path | None = Field(None, description="shared local-files root: read images from disk")
    fetch_connect_timeout_s: float = Field(5.0, gt=0, description="image download: connect timeout")
    fetch_read_timeout_s: float = Field(30.0, gt=0, description="image download: longest wait for the next bytes")
    fetch_timeout_s: float = Field(60.0, gt=0, description="image download: total deadline (one URL fails its task)")
    fetch_max_bytes: int = Field(64 * 1024 * 1024, gt=0, description="image download: size cap in bytes")
    store_path: Path | None = Field(None, description="SQLite file (default MODEL_DIR/detector_al.sqlite3)")

    @property
    def store_file(self) -> Path:
        return self.store_path or self.model_dir / STORE_FILE_NAME
