"""What the backend holds for its lifetime: the prediction service (the model, loaded once), the store, the
training worker, and the Label Studio credentials it has been given."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace

from detector_al.detector import Detector
from detector_al.ls_client import LabelStudioClient, LabelStudioError
from detector_al.pseudo_labels import CealConfig
from detector_al.registry import ModelRegistry
from detector_al.retraining import RetrainConfig, Retrainer
from detector_al.service import PredictionService, ServiceConfig
from detector_al.store import Store
from detector_al.worker import JobRunner, TrainingWorker
from ml_backend.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Credentials:
    """Where Label Studio is and the token to use: the environment's, else what /setup last sent."""

    url: str | None = None
    token: str | None = None
    label_configs: dict[int, str] = field(default_factory=dict)


class Backend:
    def __init__(self, settings: Settings, detector: Detector | None = None, run_job: JobRunner | None = None) -> None:
        self.settings = settings
        self.registry = ModelRegistry(settings.model_dir)
        ceal = CealConfig()
        if settings.ceal_delta0 is not None:
            ceal = replace(ceal, delta_0=settings.ceal_delta0)
        if settings.ceal_decay is not None:
            ceal = replace(ceal, decay=settings.ceal_decay)
        self.store = Store(settings.store_file)
        config = ServiceConfig(
            score_threshold=settings.score_threshold,
            strategy=settings.strategy,
            ceal=ceal,
            label_mapping=settings.label_mapping,
            local_files_root=settings.local_files_document_root,
            cache_dir=settings.model_dir / "image-cache",
        )
        if detector is None:  # loaded on the service's inference thread, where it will run
            version, weights = self.registry.resolve(settings.model_path)
            self.service = PredictionService.load(weights, self.store, config, conf=0.05, version=version)
        else:
            self.service = PredictionService(detector, self.store, config)
        self.credentials = Credentials(settings.label_studio_url, settings.label_studio_api_key)
        if run_job is None:
            run_job = Retrainer(
                self.service,
                self.registry,
                self.store,
                self.client,
                self.credentials.label_configs.get,
                settings.model_dir / "training",
                RetrainConfig(epochs=settings.train_epochs, tolerance=settings.train_tolerance),
            )
        self.worker = TrainingWorker(self.store, run_job)
        self._synced: dict[int, str] = {}

    def remember(self, hostname: str | None, token: str | None, project: int | None, label_config: str | None) -> None:
        """Keep what /setup or a webhook told us (environment settings take precedence)."""
        if hostname and not self.settings.label_studio_url:
            self.credentials.url = hostname.rstrip("/")
        if token and not self.settings.label_studio_api_key:
            self.credentials.token = token
        if project is not None and label_config:
            self.credentials.label_configs[project] = label_config

    def client(self) -> LabelStudioClient:
        if not self.credentials.url or not self.credentials.token:
            raise LabelStudioError("Label Studio URL and token unknown: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
        return LabelStudioClient(self.credentials.url, self.credentials.token)

    def sync_model_version(self, project: int) -> None:
        """Set the project's model_version to ours, in the background (Label Studio waits on /setup and /predict).

        Label Studio accepts a version only once it knows it (from the backend's /setup answer or from stored
        predictions), so a refusal is retried a few times.
        """
        version = self.service.model_version
        if self._synced.get(project) == version or not (self.credentials.url and self.credentials.token):
            return

        def run() -> None:
            delay = 0.5
            for attempt in range(6):
                try:
                    self.client().set_model_version(project, version)
                    self._synced[project] = version
                    return
                except Exception as exc:  # logged, never fatal: predictions still work
                    if attempt == 5:
                        log.warning(
                            "could not set project %s model_version to %s: %s",
                            project,
                            version,
                            str(exc).splitlines()[-1][:300],
                        )
                    time.sleep(delay)
                    delay *= 2

        threading.Thread(target=run, name="detector-al-sync-version", daemon=True).start()
