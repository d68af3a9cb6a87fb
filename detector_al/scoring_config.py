"""What every caller of the one policy (:mod:`detector_al.decision`) sets the same way: the lowest box
confidence the detector keeps for the scorers, CEAL's thresholds from optional overrides, and whether the queue
starts cold."""

from __future__ import annotations

from dataclasses import replace

from detector_al.pseudo_labels import CealConfig

SCORER_CONF = 0.05
"""The lowest box confidence the detector keeps: the uncertainty scorers see low-confidence boxes too (the
boxes shown and exported are cut at the score threshold, 0.25 by default)."""

COLD_START = True
"""The one switch of the cold start: while the model is cold (:func:`~detector_al.selection.use_cold_start`) the
queue's batch is TypiClust's, and it turns to uncertainty by itself once the model is warm (see
:mod:`detector_al.queue`). The default of the backend's ``QUEUE_COLD_START``, of ``--cold-start/--no-cold-start``
(``ingest``, ``score``), and of the ingest and retraining configs; False: always the uncertainty batch."""


DIVERSITY = False
"""Whether the uncertainty batch is spread by k-center greedy over the top ``4 x budget`` candidates (True) or is
the top-``budget`` by uncertainty, near-duplicates skipped (False): the default of
:func:`~detector_al.queue.build_queue`, hence of the backend, ingest, retraining and ``score``. False is what was
measured best on BCCD (``entropy+cold``; ``mi_aod+div`` tied below it): docs/benchmarks.md."""


def ceal_config(delta_0: float | None = None, decay: float | None = None, enabled: bool = True) -> CealConfig:
    """The default :class:`~detector_al.pseudo_labels.CealConfig` with the thresholds given (None: the default)."""
    ceal = CealConfig(enabled=enabled)
    if delta_0 is not None:
        ceal = replace(ceal, delta_0=delta_0)
    if decay is not None:
        ceal = replace(ceal, decay=decay)
    return ceal
