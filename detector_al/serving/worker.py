"""The single background training worker: takes queued jobs from the store one at a time.

Bursts of triggers coalesce in the store (one queued job per project); the worker runs one job at a time
and publishes its state (phase, job, epoch, elapsed) for ``/health`` and ``/status``. A job that raises is
marked failed with its error and the worker carries on; one that raises :class:`JobWaiting` (a project with too few
labels yet) ends ``waiting`` with its message, which is no failure; jobs left running by a crash are re-queued at
start.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable

from detector_al.pipelines.job_control import JobWaiting
from detector_al.state.store import CANCELLED, DONE, FAILED, WAITING, Store

log = logging.getLogger(__name__)

Report = Callable[..., None]
JobRunner = Callable[[dict, Report], dict | None]


class TrainingWorker:
    """Runs ``run_job(job, report)`` for every queued training job, in a daemon thread.

    ``run_job`` returns a dict of results (``model_version``, metrics ...) or raises; it calls ``report(phase=...,
    epoch=..., epochs=...)`` to publish progress.
    """

    def __init__(self, store: Store, run_job: JobRunner | None, poll_s: float = 2.0) -> None:
        self.store = store
        self.run_job = run_job
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state: dict = {"phase": "idle"}
        self._cancel = threading.Event()  # set to stop the running job, in any phase (its training process is killed)
        self._running: int | None = None

    def start(self) -> None:
        n = self.store.requeue_interrupted()
        if n:
            log.warning("re-queued %d training job(s) interrupted by a restart", n)
        self._thread = threading.Thread(target=self._loop, name="detector-al-trainer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def cancel(self, job_id: int) -> tuple[str, bool] | None:
        """Cancel a training job: a queued one at once, the running one at its next step, whatever its phase (a
        training process is killed at once; the job then reads ``cancelled`` and promotes nothing; one that already
        switched the project to its candidate finishes). Returns ``(status, acted)``: ``("cancelled", True)``,
        ``("cancelling", True)``, or a finished job's status and False (nothing to cancel); None for an unknown job."""
        if self.store.cancel_queued(job_id):
            return CANCELLED, True
        with self._lock:
            if self._running == job_id:
                self._cancel.set()
                return "cancelling", True
        job = self.store.training_job(job_id)
        return None if job is None else (job["status"], False)

    def notify(self) -> None:
        """Wake the worker now (a job was queued)."""
        self._wake.set()

    def state(self) -> dict:
        with self._lock:
            state = dict(self._state)
        if "started" in state:
            state["elapsed_s"] = round(time.time() - state.pop("started"), 1)
        state["queued"] = sum(j["status"] == "queued" for j in self.store.training_jobs(100))
        return state

    def _report(self, **fields) -> None:
        with self._lock:
            self._state.update(fields)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.claim_training()
                if job is None:
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
                    continue
                self._run(job)
            except Exception as exc:
                log.error("training worker: %s; retrying", exc)
                with self._lock:
                    self._state = {"phase": "error", "error": str(exc)}
                self._stop.wait(self.poll_s)

    def _run(self, job: dict) -> None:
        with self._lock:
            self._state = {
                "phase": "starting",
                "job": job["id"],
                "project": job["project"],
                "started": time.time(),
                "reason": job["reason"],
            }
            self._running = job["id"]
            self._cancel.clear()
        log.info("training job %s started (%s)", job["id"], job["reason"])
        try:
            if self.run_job is None:
                raise RuntimeError("no trainer is configured for this backend")
            result = self.run_job({**job, "cancel": self._cancel}, self._report) or {}
        except JobWaiting as exc:  # too few labels yet: said, not failed
            log.info("training job %s waiting: %s", job["id"], exc)
            self.store.finish_training(job["id"], WAITING, error=str(exc))
            last = {"job": job["id"], "status": WAITING, "error": str(exc)}
        except Exception as exc:  # a failed training must never take the server down
            status = CANCELLED if self._cancel.is_set() else FAILED
            log.error("training job %s %s: %s\n%s", job["id"], status, exc, traceback.format_exc())
            self.store.finish_training(job["id"], status, error=f"{type(exc).__name__}: {exc}")
            last = {"job": job["id"], "status": status, "error": str(exc)}
        else:
            self.store.finish_training(job["id"], DONE, model_version=result.get("model_version"), detail=result)
            last = {"job": job["id"], "status": DONE, **{k: v for k, v in result.items() if k != "job"}}
            log.info("training job %s done: %s", job["id"], result)
        with self._lock:
            self._state = {"phase": "idle", "last": last}
            self._running = None
