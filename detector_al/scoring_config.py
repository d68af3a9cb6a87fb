"""What every caller of the one policy (:mod:`detector_al.decision`) sets the same way: the lowest box
confidence the detector keeps for the scorers, and CEAL's thresholds from optional overrides."""

from __future__ import annotations

from dataclasses import replace

from detector_al.pseudo_labels import CealConfig

SCORER_CONF = 0.05
"""The lowest box confidence the detector keeps: the uncertainty scorers see low-confidence boxes too (the
boxes shown and exported are cut at the score threshold, 0.25 by default)."""


def ceal_config(delta_0: float | None = None, decay: float | None = None, enabled: bool = True) -> CealConfig:
    """The default :class:`~detector_al.pseudo_labels.CealConfig` with the thresholds given (None: the default)."""
    ceal = CealConfig(enabled=enabled)
    if delta_0 is not None:
        ceal = replace(ceal, delta_0=delta_0)
    if decay is not None:
        ceal = replace(ceal, decay=decay)
    return ceal
