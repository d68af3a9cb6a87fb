"""The box confidence thresholds, written once: what annotators are shown, what the scorers see, and what the
pseudo-label calibrations try."""

SCORE_THRESHOLD = 0.25
"""The lowest box confidence shown to annotators and exported (the pre-annotation), and the detector's own default."""

SCORER_CONF = 0.05
"""The lowest box confidence the detector keeps for scoring: the uncertainty scorers see low-confidence boxes too
(the boxes shown and exported are cut at :data:`SCORE_THRESHOLD`)."""

CALIBRATION_GRID = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9)
"""The ``min_confidence`` values the pseudo-label calibrations try, lowest first (CEAL's gate, box pseudo-labels)."""
