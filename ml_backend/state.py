"""What the backend holds for its lifetime, wired once (the composition root; it holds no rule): the prediction
service (the model, loaded once), the store, the training worker, the Label Studio credentials it has been given and
the project sync (:mod:`detector_al.serving.project_sync`: queue refresh and version alignment)."""

from __future__ import annotations

import logging

from detector_al.io.fetch.task_image import FetchLimits
from detector_al.label_studio.client import LabelStudioClient, LabelStudioError
from detector_al.model.detector import Detector
from detector_al.pipelines.ceal_gate import restore as restore_ceal
from detector_al.pipelines.retrain import RetrainConfig, Retrainer
from detector_al.policy.settings import SCORER_CONF
from detector_al.serving.project_sync import Credentials, ProjectSync, QueueSettings
from detector_al.serving.service import PredictionService, ServiceConfig
from detector_al.serving.worker import JobRunner, TrainingWorker
from detector_al.state.registry import ModelRegistry
from detector_al.state.store import Store
from ml_backend.settings import Settings

log = logging.getLogger(__name__)


def _service_config(settings: Settings) -> ServiceConfig:
    """The prediction service's configuration from the backend's settings."""
    return ServiceConfig(
        policy=settings.policy(),
        label_mapping=settings.label_mapping,
        local_files_root=settings.local_files_document_root,
        cache_dir=settings.model_dir / "image-cache",
        fetch_limits=FetchLimits(
            settings.fetch_connect_timeout_s,
            settings.fetch_read_timeout_s,
            settings.fetch_timeout_s,
            settings.fetch_max_bytes,
            settings.fetch_allow_private,
            settings.image_cache_max_mb * 2**20,
            # Label Studio's host may be private when LABEL_STUDIO_URL names it, or when /setup (which names it
            # otherwise) needs basic auth: never when anyone who reaches /setup could choose it
            trust_label_studio=bool(settings.label_studio_url or settings.basic_auth_user or settings.basic_auth_pass),
        ),
    )


class Backend:
    def __init__(self, settings: Settings, detector: Detector | None = None, run_job: JobRunner | None = None) -> None:
        self.settings = settings
        self.registry = ModelRegistry(settings.model_dir)
        self.store = Store(settings.store_file)
        config = _service_config(settings)
        if detector is None:  # loaded on the service's inference thread, where it will run
            version, weights = self.registry.resolve(settings.model_path)
            self.service = PredictionService.load(
                weights,
                self.store,
                config,
                conf=SCORER_CONF,
                version=version,
                max_decode_bytes=settings.max_image_decode_mb * 2**20,
            )
        else:
            self.service = PredictionService(detector, self.store, config)
        restore_ceal(self.service, self.registry, self.service.model_version)  # as the last training judged it
        self.credentials = Credentials.configured(settings.label_studio_url, settings.label_studio_api_key)
        self._client: tuple[tuple[str, str], LabelStudioClient] | None = None
        self.sync = ProjectSync(
            self.store,
            self.service,
            self.registry,
            self.credentials,
            self.client,
            QueueSettings(settings.queue_budget, settings.queue_cold_start, settings.queue_refresh_delay_s),
        )
        self.worker = TrainingWorker(self.store, run_job if run_job is not None else self._retrainer())

    def _retrainer(self) -> Retrainer:
        """The training job of this backend: fine-tune on the project's annotations, promote, re-score."""
        settings = self.settings
        return Retrainer(
            self.service,
            self.registry,
            self.store,
            self.client,
            self.credentials.label_configs.get,
            settings.model_dir / "training",
            RetrainConfig(
                epochs=settings.train_epochs,
                base=settings.train_base,
                tolerance=settings.train_tolerance,
                timeout_s=settings.train_timeout_s,
                pseudo_ratio=settings.train_pseudo_ratio,
                min_val_images=settings.train_min_val_images,
                budget=settings.queue_budget,
                cold_start=settings.queue_cold_start,
            ),
            switch_lock=self.sync.lock,
        )

    def remember(self, hostname: str | None, token: str | None, project: int | None, label_config: str | None) -> None:
        """Keep what /setup or a webhook told us (:meth:`Credentials.remember`)."""
        self.credentials.remember(hostname, token, project, label_config)

    def client(self) -> LabelStudioClient:
        """A Label Studio client for the current credentials (kept while they do not change)."""
        url, token = self.credentials.url, self.credentials.token
        if not url or not token:
            raise LabelStudioError(
                "Label Studio URL and token unknown: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY "
                "(a personal access token from Account & Settings)"
            )
        cached = self._client
        if cached is None or cached[0] != (url, token):
            cached = ((url, token), LabelStudioClient(url, token))
            self._client = cached
        return cached[1]

    def close(self) -> None:
        """Stop what runs in the background: the training worker and pending queue refreshes."""
        self.worker.stop()
        self.sync.close()
