"""Keeping a Label Studio project on this backend's queue: the debounced queue refresh after /predict calls, and
the project's model version and sampling aligned with the model that serves (the one writer of both from the
backend's side).

The HTTP layer calls :meth:`ProjectSync.schedule_queue_refresh` after /predict and deleted labels, and
:meth:`ProjectSync.align_project_within` in /setup; it holds none of these rules.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from label_studio_sdk.core.api_error import ApiError

from detector_al.label_studio.annotations import is_labeled
from detector_al.label_studio.auth import same_origin
from detector_al.label_studio.client import LabelStudioClient, LabelStudioError
from detector_al.label_studio.project_queue import refresh_queue
from detector_al.label_studio.publish import configure_project
from detector_al.serving.service import PredictionService
from detector_al.state.registry import ModelRegistry, names_same_weights
from detector_al.state.store import Store

log = logging.getLogger(__name__)

MAX_PROJECTS = 256
"""Per-project state kept in memory (label configs, sync marks) is bounded: the least recently used goes first
(a label config comes again with the next /setup, /predict or webhook; the rest lives in SQLite)."""


class BoundedDict(OrderedDict):
    """A dict that keeps its ``maxlen`` most recently set keys."""

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        self.maxlen = maxlen

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxlen:
            self.popitem(last=False)


def warn_once(seen: BoundedDict, key, message: str, *args) -> None:
    """Log ``message`` at warning level the first time ``key`` is seen (``seen`` bounds the memory)."""
    if key not in seen:
        seen[key] = True
        log.warning(message, *args)


@dataclass
class Credentials:
    """Where Label Studio is and the token to use: the environment's (``configured_*``), else what /setup last
    sent; and the label configs the projects sent."""

    url: str | None = None
    token: str | None = None
    label_configs: BoundedDict = field(default_factory=lambda: BoundedDict(MAX_PROJECTS))
    configured_url: str | None = None  # LABEL_STUDIO_URL
    configured_key: str | None = None  # LABEL_STUDIO_API_KEY
    _warned_hosts: BoundedDict = field(default_factory=lambda: BoundedDict(64))  # a hostile /setup cannot grow it

    @classmethod
    def configured(cls, url: str | None, key: str | None) -> Credentials:
        """The credentials of the environment: a key is used with ``url`` only, never with a /setup hostname."""
        if key and not url:
            log.warning(
                "LABEL_STUDIO_API_KEY is set but LABEL_STUDIO_URL is not: the key is not used (it is sent only to "
                "LABEL_STUDIO_URL); set LABEL_STUDIO_URL to your Label Studio's URL"
            )
        return cls(url, key if url else None, configured_url=url, configured_key=key)

    def remember(self, hostname: str | None, token: str | None, project: int | None, label_config: str | None) -> None:
        """Keep what /setup or a webhook told us.

        ``LABEL_STUDIO_API_KEY`` (a personal access token or a legacy token) is used with ``LABEL_STUDIO_URL``
        only. The token /setup sends (the project creator's legacy token, refused by a stock Label Studio) is
        used only when no key is configured, and only with the hostname /setup sent along with it. That hostname is
        not trusted to be private unless /setup needs basic auth (the backend's ``FetchLimits.trust_label_studio``):
        anyone who reaches an open /setup could name an internal host.
        """
        if hostname and hostname.startswith(("http://", "https://")):
            hostname = hostname.rstrip("/")
            configured = self.configured_url
            if configured and not same_origin(hostname, configured):
                warn_once(
                    self._warned_hosts,
                    hostname,
                    "Label Studio at %s connected, but LABEL_STUDIO_URL is %s: Label Studio files are fetched "
                    "from LABEL_STUDIO_URL only, %s",
                    hostname,
                    configured,
                    "and LABEL_STUDIO_API_KEY is never sent to another host"
                    if self.configured_key
                    else "and the token /setup sent is not used there (set LABEL_STUDIO_API_KEY)",
                )
            elif not self.configured_key:
                if not same_origin(hostname, self.url):
                    self.token = None  # a token goes with the hostname it came with, never elsewhere
                self.url = configured or hostname
                if token:
                    self.token = token
        if project is not None and label_config:
            self.label_configs[project] = label_config


@dataclass(frozen=True)
class QueueSettings:
    """The queue refresh's settings: the batch's size (0: no refresh), the cold start, the debounce delay."""

    budget: int
    cold_start: bool
    refresh_delay_s: float = 2.0


class ProjectSync:
    """The queue refresh and the version alignment of the projects this backend serves (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        service: PredictionService,
        registry: ModelRegistry,
        credentials: Credentials,
        client: Callable[[], LabelStudioClient],
        queue: QueueSettings,
    ) -> None:
        self.store, self.service, self.registry = store, service, registry
        self.credentials, self.client, self.queue = credentials, client, queue
        self.lock = threading.Lock()  # one alignment of a project's version at a time (retraining's switch too)
        self._refused: BoundedDict = BoundedDict(MAX_PROJECTS)  # (project, version) refusals already logged
        self._timers: dict[int, threading.Timer] = {}
        self._timers_lock = threading.Lock()

    def close(self) -> None:
        """Cancel the pending queue refreshes."""
        with self._timers_lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()

    def schedule_queue_refresh(self, project: int, attempt: int = 0) -> None:
        """Re-build the project's queue (:func:`~detector_al.label_studio.project_queue.refresh_queue`) once /predict calls pause.

        Debounced: every call restarts the project's timer, so "Retrieve predictions" over a pool leads to one
        refresh after its last request. Needs the Label Studio URL and a token; a failure is logged.
        """
        if not (self.credentials.url and self.credentials.token) or not self.queue.budget:
            return

        def run() -> None:
            with self._timers_lock:
                if self._timers.get(project) is threading.current_thread():
                    del self._timers[project]
            pending = 0
            try:
                moved, pending, _ = refresh_queue(
                    self.store,
                    self.client().ls,
                    project,
                    self.service.version_for(project),
                    self.queue.budget,
                    self.service.strategy.confidence,
                    cold_start=self.queue.cold_start,
                )
                log.info("project %s: queue re-built, %d tasks moved, %d not written yet", project, moved, pending)
                self.align_project(project)
            except LabelStudioError as exc:  # no credentials, or refused: retrying would not help
                log.warning("project %s: queue not re-built: %s", project, exc)
            except Exception as exc:  # logged, never fatal: the per-task scores are already in queue order
                log.warning("project %s: queue not re-built: %s", project, str(exc).splitlines()[-1][:300])
                pending = 1
            if pending and attempt < 5:  # predictions Label Studio had not stored yet: once more, later
                self.schedule_queue_refresh(project, attempt + 1)

        with self._timers_lock:
            old = self._timers.pop(project, None)
            if old is not None:
                old.cancel()
            timer = threading.Timer(self.queue.refresh_delay_s * 2**attempt, run)
            timer.daemon = True
            timer.name = f"detector-al-queue-{project}"
            self._timers[project] = timer
            timer.start()

    def align_project(self, project: int) -> str | None:
        """Make the project serve this backend's queue now: its ``model_version`` ours, its sampling set the first time
        (:func:`~detector_al.label_studio.publish.configure_project`). Called in /setup (Label Studio calls it on
        connect and before every prediction run, and waits for it) and after each queue refresh.

        - One name for one model in a project: a project whose version names our weights under another name
          (``ingest`` with another model folder) keeps that name, and this backend answers that project under it
          (:meth:`~detector_al.serving.service.PredictionService.set_project_name`); other projects keep theirs, and
          the service its own: two projects that name the same weights differently never rename it.
        - Label Studio accepts a project version only once a prediction of it exists: the first time, one task is
          predicted and imported here, so the project serves our version before "Retrieve predictions" stores the
          rest (the stream never falls back to random sampling meanwhile).
        - A refusal is logged once per project and version, never retried in a loop: the next /setup or queue
          refresh tries again.

        Returns:
            the sampling warning (None when the stream follows the queue, or when Label Studio is not reachable).
        """
        if not (self.credentials.url and self.credentials.token):
            return None
        with self.lock:  # /setup comes twice on connect: one alignment at a time
            try:
                ls = self.client().ls
                version = self._adopt(project, ls.projects.get(id=project).model_version)
                try:
                    warning = configure_project(ls, self.store, project, version)
                except ApiError as exc:
                    if exc.status_code != 400 or not self._anchor(ls, project):
                        raise
                    warning = configure_project(ls, self.store, project, version)
                self._refused.pop((project, version), None)
                return warning
            except Exception as exc:  # logged once, never fatal: predictions still work
                warn_once(
                    self._refused,
                    (project, self.service.model_version),
                    "project %s: could not make it serve model version %s (tried again at the next /setup or queue "
                    "refresh): %s",
                    project,
                    self.service.model_version,
                    str(exc).splitlines()[-1][:300] if str(exc) else type(exc).__name__,
                )
                return None

    def align_project_within(self, project: int, seconds: float) -> None:
        """:meth:`align_project`, waited for at most ``seconds`` (Label Studio gives /setup 3 s); if it takes longer it
        finishes in the background."""
        worker = threading.Thread(target=self.align_project, args=(project,), name="detector-al-align", daemon=True)
        worker.start()
        worker.join(seconds)

    def _adopt(self, project: int, project_version: str | None) -> str:
        """Our version's name in the project: the project's own name when it names the same weights (kept for this
        project only), else ours."""
        ours = self.service.model_version
        if project_version and project_version != ours and names_same_weights(project_version, ours):
            if self.service.version_for(project) != project_version:
                log.info(
                    "project %s: model version %s is %s there: answered under that name", project, ours, project_version
                )
            self.service.set_project_name(project, ours, project_version)
            return project_version
        return ours

    def _anchor(self, ls, project: int, tries: int = 3) -> bool:
        """Predict one unlabeled task now and import its prediction, so that Label Studio knows our version."""
        label_config = self.credentials.label_configs.get(project)
        if not label_config:
            return False
        for n, task in enumerate(ls.tasks.list(project=project, fields="all", page_size=tries)):
            if n >= tries:
                break
            if is_labeled(task):
                continue
            (answer,) = self.service.predict_tasks(
                [{"id": task.id, "data": task.data}],
                label_config,
                project,
                self.credentials.url,
                self.credentials.token,
            )
            if answer.error is None:
                ls.projects.import_predictions(id=project, request=[{"task": task.id, **answer.to_label_studio()}])
                return True
        return False
