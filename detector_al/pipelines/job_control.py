"""Cancel and time limit of a whole job (a retraining): checked between every step, not only during training; and
the early end of a job that cannot run yet (:class:`JobWaiting`).

The worker sets ``cancel`` (``POST /jobs/<id>/cancel``); the job calls :meth:`JobControl.check` between steps (each
page of tasks it lists, each batch it predicts, each phase) and hands :meth:`JobControl.remaining` to its training
process as that process's limit, so ``TRAIN_TIMEOUT_S`` bounds the job from its start to its end.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


class JobCancelled(RuntimeError):
    """The job was cancelled, or ran past its time limit: it stops where it is, and promotes nothing."""


class JobWaiting(RuntimeError):
    """The job cannot do its work yet and nothing is wrong (a retraining before the project has enough labels): it
    stops before its work and ends ``waiting`` with this message, a failure for no one (no back-off)."""


@dataclass
class JobControl:
    """A running job's cancel event and deadline (``timeout_s`` from its start; None: none)."""

    cancel: threading.Event | None = None
    timeout_s: float | None = None
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float | None:
        """Seconds left before the time limit (None without one; 0 when past it)."""
        if self.timeout_s is None:
            return None
        return max(self.timeout_s - (time.monotonic() - self.started), 0.0)

    def check(self) -> None:
        """Raise :class:`JobCancelled` when the job was cancelled or is past its time limit; else return."""
        if self.cancel is not None and self.cancel.is_set():
            raise JobCancelled("cancelled")
        if self.timeout_s is not None and time.monotonic() - self.started > self.timeout_s:
            raise JobCancelled(f"ran past its time limit of {self.timeout_s:g} s (TRAIN_TIMEOUT_S)")
