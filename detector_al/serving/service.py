"""The prediction service behind the ML backend: Label Studio tasks in, scored pre-annotations out.

Holds the one loaded :class:`~detector_al.model.detector.Detector` (swapped atomically after retraining), parses
and caches label configs, fetches task images, scores and auto-accepts, records everything in the store.
The HTTP layer (``ml_backend``) only parses requests and calls this.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from detector_al.io.fetch.task_image import FetchLimits, Pins, fetch_image
from detector_al.label_studio.client import ImageFetchError, project_id
from detector_al.label_studio.config import RectangleTarget, parse_label_config
from detector_al.label_studio.regions import to_label_studio_regions
from detector_al.model.detector import BATCH_SIZE, Detector
from detector_al.model.predictions import ImagePredictions
from detector_al.policy.ceal import CealConfig
from detector_al.policy.ceal_calibration import CealCalibration
from detector_al.policy.decision import Decision, decide, views_needed
from detector_al.policy.settings import POLICY, PolicySettings
from detector_al.policy.strategies import serving_strategy
from detector_al.queue.build import QueueEntry, label_studio_score
from detector_al.state.store import PoolRow, Store

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ServiceConfig:
    policy: PolicySettings = POLICY  # the one policy object (the backend builds it from its settings)
    label_mapping: dict[str, str] = field(default_factory=dict)
    local_files_root: Path | None = None
    cache_dir: Path | None = None
    batch_size: int = BATCH_SIZE
    fetch_limits: FetchLimits = field(default_factory=FetchLimits)  # per image download: timeouts, size cap


@dataclass(frozen=True)
class ImageSummary:
    """One image's :class:`~detector_al.policy.decision.Decision` and what Label Studio gets of it: the serving model's
    version and the shown boxes as regions (no per-anchor arrays)."""

    decision: Decision
    model_version: str
    regions: list[dict] = field(default_factory=list)

    @property
    def source(self) -> str:
        return self.decision.source

    @property
    def error(self) -> str | None:
        return self.decision.error

    @property
    def queue_score(self) -> float:
        """The prediction score for Label Studio when the image is scored alone (its band's, see detector_al.queue.build);
        the batch needs the whole pool."""
        return label_studio_score(self.decision.status, self.decision.confidence)

    def to_row(self, task_id: int, round_index: int, entry: QueueEntry | None = None) -> PoolRow:
        """The store's record of this prediction for a task (``confidence``: the score Label Studio got)."""
        d = self.decision
        return PoolRow(
            task_id=int(task_id),
            path=d.source,
            model_version=self.model_version,
            round=round_index,
            score=d.score,
            confidence=entry.score if entry else self.queue_score,
            decision=entry.status if entry else d.status,
            n_boxes=len(self.regions),
            embedding=None if d.embedding is None else np.asarray(d.embedding, np.float32).tobytes(),
            max_confidence=d.max_confidence,
        )


@dataclass(frozen=True)
class TaskPrediction:
    """One task's answer: regions, the task-level confidence, and what was recorded."""

    task_id: int | None
    result: list[dict]
    score: float | None
    model_version: str
    error: str | None = None

    def to_label_studio(self) -> dict:
        return {"result": self.result, "score": self.score, "model_version": self.model_version}


MAX_PROJECT_NAMES = 256
"""Projects whose own name for the serving weights is kept in memory (set again at each /setup)."""

MAX_CEAL_VERSIONS = 64
"""Model versions whose CEAL gate is kept in memory (each is in its version's meta.json too)."""


class PredictionService:
    """Thread-safe: inference runs on one dedicated thread, and :meth:`swap` replaces the model between batches.

    Torch should run on that one thread only, loading included (:meth:`load`, :meth:`load_and_swap`): each
    thread that runs torch gets its own OpenMP thread team, and with more team threads than cores libgomp
    stops spinning between parallel regions. A model loaded on the main thread and run on the inference
    thread took 38 ms per 256 px image on 2 cores, against 23 ms when both happen on the same thread.
    """

    def __init__(
        self,
        detector: Detector,
        store: Store,
        config: ServiceConfig | None = None,
        infer: ThreadPoolExecutor | None = None,
    ) -> None:
        self._detector = detector
        self.store = store
        self.config = config or ServiceConfig()
        self.strategy = serving_strategy(self.config.policy.strategy)
        self._infer = infer or _inference_thread()
        self._targets: dict[str, RectangleTarget] = {}
        self._fetch_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="detector-al-fetch")
        self._names: dict[int, tuple[str, str]] = {}  # project -> (our version, the project's name for it)
        self._ceal: dict[str, CealCalibration] = {}  # version -> its CEAL gate (pipelines.ceal_gate)

    @property
    def detector(self) -> Detector:
        return self._detector

    @property
    def model_version(self) -> str:
        return self._detector.version

    def swap(self, detector: Detector) -> None:
        """Serve ``detector`` from now on; a request in flight finishes on the old one, never on a mix."""
        self._detector = detector  # one reference assignment: a batch uses either model, never a mix
        log.info("now serving model version %s", detector.version)

    def set_ceal(self, version: str, calibration: CealCalibration) -> None:
        """Run ``version``'s CEAL as ``calibration`` says (:mod:`~detector_al.pipelines.ceal_gate`)."""
        self._ceal.pop(version, None)
        self._ceal[version] = calibration
        while len(self._ceal) > MAX_CEAL_VERSIONS:
            self._ceal.pop(next(iter(self._ceal)))

    def ceal_calibration(self, version: str | None = None) -> CealCalibration | None:
        """The gate of ``version`` (default: the serving one); None until a retraining judged it."""
        return self._ceal.get(version or self.model_version)

    def ceal_for(self, version: str | None = None) -> CealConfig:
        """The CEAL ``version`` (default: the serving one) runs with: the settings' as its gate says."""
        calibration = self.ceal_calibration(version)
        base = self.config.policy.ceal
        return calibration.apply(base) if calibration is not None else base

    def set_project_name(self, project: int, version: str, name: str) -> None:
        """Call ``version`` (the serving weights) ``name`` in ``project``'s answers and records: the name another
        registry gave the same weights there. Per project: another project keeps its own name, the service keeps
        its own (:attr:`model_version`); a later version (a retrained model) is no longer renamed."""
        self._names.pop(project, None)
        self._names[project] = (version, name)
        while len(self._names) > MAX_PROJECT_NAMES:
            self._names.pop(next(iter(self._names)))

    def version_for(self, project: int | None, version: str | None = None) -> str:
        """What ``project`` calls ``version`` (default: the serving one): its own name for these weights, set by
        :meth:`set_project_name`, else ``version``."""
        version = version or self.model_version
        named = self._names.get(project) if project is not None else None
        return named[1] if named and named[0] == version else version

    @classmethod
    def load(
        cls, weights: str | Path, store: Store, config: ServiceConfig | None = None, **detector_kwargs
    ) -> PredictionService:
        """Load ``weights`` (:meth:`Detector.load` with ``detector_kwargs``) on the inference thread and serve them."""
        infer = _inference_thread()
        detector = infer.submit(Detector.load, weights, **detector_kwargs).result()
        return cls(detector, store, config, infer)

    def load_detector(self, weights: str | Path, **detector_kwargs) -> Detector:
        """Load ``weights`` on the inference thread (between two batches), without serving them yet."""
        return self._infer.submit(Detector.load, weights, **detector_kwargs).result()

    def load_and_swap(self, weights: str | Path, **detector_kwargs) -> None:
        """:meth:`load_detector`, then :meth:`swap` to it."""
        self.swap(self.load_detector(weights, **detector_kwargs))

    def predict_paths(
        self, paths: list[str], reduce: Callable[[Detector, ImagePredictions], T], detector: Detector | None = None
    ) -> list[T]:
        """Predict image files with the serving model (or ``detector``, e.g. a candidate not serving yet), one batch
        at a time, and keep only ``reduce(model, pred)``.

        Every batch runs on the service's one inference thread: requests are served in turn, torch's thread
        pool is made once and reused (a new request thread would pay for a new one), and the per-anchor arrays
        of an image (megabytes at 640 px and 80 classes) are dropped as soon as it is reduced. A long re-scoring
        therefore never blocks /predict for more than a batch. The whole call uses the model serving when it
        starts: a swap meanwhile serves the next call, so one request is never answered by two versions.
        """
        out: list[T] = []
        step = self.config.batch_size
        detector = detector or self._detector

        views = views_needed(self.strategy, self.config.policy.ceal)

        def run(chunk: list[str]) -> list[T]:
            return [reduce(detector, p) for p in detector.predict(chunk, step, views=views)]

        for i in range(0, len(paths), step):
            out.extend(self._infer.submit(run, paths[i : i + step]).result())
        return out

    def summarise(self, detector: Detector, pred: ImagePredictions, target: RectangleTarget, round_index: int):
        """What the queue needs of one prediction (:func:`~detector_al.policy.decision.decide`, then the regions)."""
        ceal = self.ceal_for(detector.version)
        d = decide(pred, self.strategy, round_index, ceal, self.config.policy.score_threshold)
        regions = [] if d.error else to_label_studio_regions(d.shown, d.width, d.height, target)
        return ImageSummary(d, detector.version, regions)

    def target(self, label_config: str) -> RectangleTarget:
        """Parse (once per distinct config) and map classes to labels; raises LabelConfigError."""
        key = hashlib.sha256(label_config.encode()).hexdigest()
        names = self._detector.names
        key += ":" + ",".join(names)
        if key not in self._targets:
            self._targets[key] = parse_label_config(label_config, names, self.config.label_mapping)
            if len(self._targets) > 64:
                self._targets.pop(next(iter(self._targets)))
        return self._targets[key]

    def predict_tasks(
        self,
        tasks: list[dict],
        label_config: str,
        project: str | int | None = None,
        hostname: str | None = None,
        access_token: str | None = None,
    ) -> list[TaskPrediction]:
        """One :class:`TaskPrediction` per task, in order; a task whose image fails gets an empty result.

        The request's downloaded images are pinned in the image cache until they are predicted
        (:class:`~detector_al.io.fetch.cache.Pins`): a request larger than ``IMAGE_CACHE_MAX_MB`` does not evict its
        own first images before they are read."""
        target = self.target(label_config)
        pid = project_id(project)
        with Pins() as pins:

            def fetch(task: dict) -> tuple[Path | None, str | None]:
                return self._fetch(task, target, hostname, access_token, pins)

            # one task (Label Studio's per-task /predict): fetched here, as a thread hop costs more than it overlaps
            fetched = [fetch(t) for t in tasks] if len(tasks) == 1 else list(self._fetch_pool.map(fetch, tasks))
            paths = [str(p) for p, _ in fetched if p is not None]
            round_index = self.store.project(pid)["round"] if pid is not None else 0
            summaries = {
                x.source: x for x in self.predict_paths(paths, lambda d, p: self.summarise(d, p, target, round_index))
            }
        version = self.version_for(pid, next(iter(summaries.values())).model_version if summaries else None)
        out: list[TaskPrediction] = []
        rows: list[PoolRow] = []
        for task, (path, fetch_error) in zip(tasks, fetched, strict=True):
            task_id = task.get("id")
            x = summaries.get(str(path)) if path is not None else None
            error = fetch_error or (x.error if x is not None else "not predicted")
            if x is None or x.error:
                log.error("task %s: %s", task_id, error)
                out.append(TaskPrediction(task_id, [], None, version, error))
                if task_id is not None:
                    rows.append(
                        PoolRow(
                            task_id=int(task_id),
                            path=str(path or ""),
                            model_version=version,
                            round=round_index,
                            decision="error",
                            n_boxes=0,
                            error=error,
                        )
                    )
                continue
            out.append(TaskPrediction(task_id, x.regions, x.queue_score, version))
            if task_id is not None:
                rows.append(replace(x.to_row(task_id, round_index), model_version=version))
        if pid is not None and rows:
            self.store.record_predictions(pid, rows)
        return out

    def _fetch(
        self, task: dict, target: RectangleTarget, hostname, access_token, pins: Pins | None = None
    ) -> tuple[Path | None, str | None]:
        url = (task.get("data") or {}).get(target.value_key)
        if not url:
            return (
                None,
                f'task data has no {target.value_key!r} field (the config\'s <Image value="${target.value_key}">)',
            )
        try:
            return fetch_image(
                str(url),
                ls_url=hostname,
                token=access_token,
                task_id=task.get("id"),
                local_root=self.config.local_files_root,
                cache_dir=self.config.cache_dir,
                limits=self.config.fetch_limits,
                pins=pins,
            ), None
        except ImageFetchError as exc:
            return None, str(exc)


def _inference_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector-al-infer")
