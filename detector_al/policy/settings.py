"""The policy settings: what the backend, ``ingest``, retraining, ``score`` and the demo decide alike, in one
object (:class:`PolicySettings`, defaults in :data:`POLICY`): the strategy, the box thresholds, the batch budget,
the cold start, diversity and CEAL. Each caller's options default to these fields; none writes its own number."""

from __future__ import annotations

from dataclasses import dataclass, field

from detector_al.policy.ceal import CealConfig
from detector_al.policy.strategies import DEFAULT_STRATEGY, serving_strategy
from detector_al.policy.thresholds import SCORE_THRESHOLD, SCORER_CONF

ENV = {
    "strategy": "STRATEGY",
    "score_threshold": "SCORE_THRESHOLD",
    "budget": "QUEUE_BUDGET",
    "cold_start": "QUEUE_COLD_START",
    "ceal_delta0": "CEAL_DELTA0",
    "ceal_decay": "CEAL_DECAY",
    "ceal_min_confidence": "CEAL_MIN_CONFIDENCE",
    "label_mapping": "LABEL_MAPPING",
}
"""The environment variables of the policy, read alike by the backend (its settings' field names) and by the
commands (``ingest``, ``score``: their options' ``envvar``): one environment configures both the same way."""

QUEUE_BATCH = 5
"""The batch served first, and the labels to retrain after: the backend's ``TRAIN_EVERY`` follows ``QUEUE_BUDGET``
unless set. Issue #30's batch-size runs from the pretrained base (docs/annotator_time_pretrained.md, sessions 16 and
18), tuned on BCCD and aquarium val (10 paired seeds), modelled annotator hours to reach plain labeling's full-budget
mAP50: retraining every 10 labels needed 0.84 [0.76, 0.93] of every 20's (20 until session 16), every 5 labels 0.82
[0.73, 0.91] of every 10's (10 until session 18); on their test splits 0.88 [0.74, 1.02] and 0.81 [0.71, 0.91];
on the sample data's (the confirmation set) 0.89 [0.88, 0.91] and 0.89 [0.81, 0.97]. Random order gained as much
from 20 to 10 and more from 10 to 5 (session 19), so the saving is the retraining's, not the order's. Retraining every 40
labels never reached it on aquarium."""

COLD_START = True
"""The one switch of the cold start: while the model is cold (:func:`~detector_al.queue.selection.use_cold_start`) the
queue's batch is TypiClust's, and it turns to uncertainty by itself once the model is warm (see
:mod:`detector_al.queue.build`). The default of the backend's ``QUEUE_COLD_START``, of ``--cold-start/--no-cold-start``
(``ingest``, ``score``), and of the ingest and retraining configs; False: always the uncertainty batch."""


DIVERSITY = False
"""Whether the uncertainty batch is spread by k-center greedy over the top ``4 x budget`` candidates (True) or is
the top-``budget`` by uncertainty, near-duplicates skipped (False): the default of
:func:`~detector_al.queue.build.build_queue`, hence of the backend, ingest, retraining and ``score``. False is what was
measured best on BCCD (``entropy+cold``; ``mi_aod+div`` tied below it): docs/benchmarks.md."""


@dataclass(frozen=True)
class PolicySettings:
    """One set of policy settings, validated on construction (an unknown or round-weighted strategy, a threshold
    outside [0, 1] or a negative budget is refused with a clear error; CEAL's ``min_confidence`` outside [0, 1] is
    refused by :class:`~detector_al.policy.ceal.CealConfig` itself).

    Attributes:
        strategy: the uncertainty strategy (:data:`~detector_al.policy.strategies.SERVING_STRATEGIES`).
        score_threshold: the lowest box confidence shown to annotators and exported (pre-annotations).
        scorer_conf: the lowest box confidence the detector keeps for the scorers (:data:`SCORER_CONF`).
        budget: the images at the head of the queue (the batch served first): :data:`QUEUE_BATCH`.
        cold_start: :data:`COLD_START`. diversity: :data:`DIVERSITY`.
        ceal: CEAL's auto-accept thresholds.
    """

    strategy: str = DEFAULT_STRATEGY
    score_threshold: float = SCORE_THRESHOLD
    scorer_conf: float = SCORER_CONF
    budget: int = QUEUE_BATCH
    cold_start: bool = COLD_START
    diversity: bool = DIVERSITY
    ceal: CealConfig = field(default_factory=CealConfig)

    def __post_init__(self) -> None:
        serving_strategy(self.strategy)
        for name in ("score_threshold", "scorer_conf"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.budget < 0:
            raise ValueError(f"budget must be >= 0, got {self.budget}")

    @classmethod
    def from_options(
        cls,
        strategy: str | None = None,
        score_threshold: float | None = None,
        budget: int | None = None,
        cold_start: bool | None = None,
        ceal_delta0: float | None = None,
        ceal_decay: float | None = None,
        auto_accept: bool = True,
        ceal_min_confidence: float | None = None,
    ) -> PolicySettings:
        """The settings of an entry point (the backend's environment, a command's options): each value given
        replaces the default; None keeps it. Raises ``ValueError`` for a value the policy refuses."""
        given = {"strategy": strategy, "score_threshold": score_threshold, "budget": budget, "cold_start": cold_start}
        ceal = ceal_config(ceal_delta0, ceal_decay, enabled=auto_accept, min_confidence=ceal_min_confidence)
        return cls(**{k: v for k, v in given.items() if v is not None}, ceal=ceal)


POLICY = PolicySettings()
"""The defaults every caller starts from."""


def ceal_config(
    delta_0: float | None = None,
    decay: float | None = None,
    enabled: bool = True,
    min_confidence: float | None = None,
) -> CealConfig:
    """The default :class:`~detector_al.policy.ceal.CealConfig` with the thresholds given (None: the default).
    Raises ``ValueError`` for a ``min_confidence`` outside [0, 1]."""
    given = {"delta_0": delta_0, "decay": decay, "min_confidence": min_confidence}
    return CealConfig(enabled=enabled, **{k: v for k, v in given.items() if v is not None})


TASKS_PER_REQUEST = 512
"""Tasks ``ingest`` creates in Label Studio per import request: Label Studio 1.23 spends about 1.4 ms a task at 512
and 2.0 ms at 128 (2,048 tasks of 5 regions each, 2 cores; docs/benchmarks.md)."""
