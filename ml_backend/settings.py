"""Backend settings, from the environment variables Label Studio users know (or a .env file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from detector_al.pipelines.retrain import RetrainConfig
from detector_al.policy.settings import COLD_START, POLICY, PolicySettings, ceal_config
from detector_al.policy.strategies import DEFAULT_STRATEGY, serving_strategy
from detector_al.signals.stopping import DEFAULT_PATIENCE, DEFAULT_THRESHOLD
from detector_al.state.registry import DEFAULT_MODEL_DIR
from detector_al.state.store import STORE_FILE_NAME

RETRAIN = RetrainConfig()
"""Retraining's defaults, the backend's TRAIN_* defaults."""


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
    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="model versions and the SQLite state live here")
    model_path: str | None = Field(None, description="initial weights (default: the newest version in MODEL_DIR)")
    score_threshold: float = Field(
        POLICY.score_threshold, ge=0.0, le=1.0, description="lowest box confidence sent to Label Studio"
    )
    label_mapping: dict[str, str] = Field(default_factory=dict, description='JSON, e.g. {"car": "Vehicle"}')
    strategy: str = Field(DEFAULT_STRATEGY, description="uncertainty strategy (one of detector_al SERVING_STRATEGIES)")
    ceal_delta0: float | None = None
    ceal_decay: float | None = None
    ceal_min_confidence: float | None = Field(
        None, description="CEAL: the lowest box confidence of an auto-accepted image (default from CealConfig)"
    )
    train_every: int | None = Field(
        None,
        ge=0,
        description="queue a training run every N new or updated annotations (unset: QUEUE_BUDGET, a retraining after"
        " each batch, the cadence measured best; 0: only Start Training)",
    )
    train_epochs: int = Field(RETRAIN.epochs, ge=1, description="fine-tuning epochs per retraining round")
    train_base: str | None = Field(
        RETRAIN.base,
        description="what each retraining starts from: unset, the serving model (fine-tuned); 'pretrained' (the "
        "offline pretrained checkpoint), a weights path, or yolo11n.pt when online",
    )
    train_timeout_s: float = Field(
        RETRAIN.timeout_s,
        gt=0,
        description="a training job (every phase, from collection to re-scoring) still running this long stops (failed)",
    )
    train_pseudo_ratio: float = Field(
        RETRAIN.pseudo_ratio,
        description="CEAL pseudo-labelled images per human-labeled training image in a retraining, the most confident"
        " first (0: none; negative: no cap)",
    )
    train_min_val_images: int = Field(
        RETRAIN.min_val_images,
        ge=1,
        description="human-labeled validation images a candidate is judged on at least; with fewer, Start Training says"
        " how many more labels it needs and the serving model stays",
    )
    train_tolerance: float = Field(RETRAIN.tolerance, ge=0.0, description="promote when new mAP50-95 >= serving - this")
    queue_budget: int = Field(
        POLICY.budget, ge=0, description="size of the diverse batch served first (0: by uncertainty only)"
    )
    queue_cold_start: bool = Field(
        COLD_START,
        description="while the model is cold (fewer than half the images hold a box at confidence >= 0.5), the batch"
        " is TypiClust's (typical images of clusters not labeled yet); then by uncertainty (false: always uncertainty)",
    )
    stop_threshold: float = Field(
        DEFAULT_THRESHOLD, gt=0, le=1, description="stopping signal: agreement (box F1) of consecutive models to reach"
    )
    stop_patience: int = Field(
        DEFAULT_PATIENCE, ge=1, description="stopping signal: promotions the agreement must hold"
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
    image_cache_max_mb: int = Field(
        2048, ge=1, description="downloaded task images kept (least recently used go first)"
    )
    fetch_allow_private: bool = Field(
        False,
        description="also fetch task images from private, loopback or link-local addresses (Label Studio's own host is"
        " always allowed); off, as Label Studio's SSRF_PROTECTION_ENABLED",
    )
    store_path: Path | None = Field(None, description="SQLite file (default MODEL_DIR/detector_al.sqlite3)")

    @field_validator("strategy")
    @classmethod
    def _serving_strategy(cls, name: str) -> str:
        serving_strategy(name)  # unknown or round-weighted: refused at start, saying what to choose
        return name

    @field_validator("ceal_min_confidence")
    @classmethod
    def _ceal_min_confidence(cls, value: float | None) -> float | None:
        ceal_config(min_confidence=value)  # outside [0, 1]: refused at start, by CealConfig's own check
        return value

    @field_validator("train_every", mode="before")
    @classmethod
    def _train_every_unset(cls, value):
        return None if value == "" else value  # TRAIN_EVERY= (compose passes an unset variable so): the default

    @model_validator(mode="after")
    def _train_after_each_batch(self) -> Settings:
        """``TRAIN_EVERY`` unset: ``QUEUE_BUDGET``, so the model retrains after each batch the queue serves."""
        if self.train_every is None:
            self.train_every = self.queue_budget
        return self

    def policy(self) -> PolicySettings:
        """The one policy object of this backend, from the same environment variables ``ingest`` reads
        (:data:`~detector_al.policy.settings.ENV`)."""
        return PolicySettings.from_options(
            self.strategy,
            self.score_threshold,
            self.queue_budget,
            self.queue_cold_start,
            self.ceal_delta0,
            self.ceal_decay,
            ceal_min_confidence=self.ceal_min_confidence,
        )

    @property
    def store_file(self) -> Path:
        return self.store_path or self.model_dir / STORE_FILE_NAME


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def exposure_warning(settings: Settings, host: str) -> str | None:
    """What to shout at start-up when the backend listens beyond loopback without basic auth: then anyone who reaches
    it can call /setup (and so choose the Label Studio it fetches from and writes to), /predict and /webhook."""
    if host in LOOPBACK_HOSTS or host.startswith("127.") or (settings.basic_auth_user and settings.basic_auth_pass):
        return None
    return (
        f"WARNING: serving on {host} without basic auth: anyone who reaches this port can call /setup, /predict, "
        "/webhook and /train. Set BASIC_AUTH_USER and BASIC_AUTH_PASS (and the same in Label Studio's model "
        "settings), or listen on 127.0.0.1."
    )
