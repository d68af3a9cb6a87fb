"""The box confidence thresholds, written once: what annotators are shown, and what the scorers see."""

SCORE_THRESHOLD = 0.25
"""The lowest box confidence shown to annotators and exported (the pre-annotation), and the detector's own default."""

SCORER_CONF = 0.05
"""The lowest box confidence the detector keeps for scoring: the uncertainty scorers see low-confidence boxes too
(the boxes shown and exported are cut at :data:`SCORE_THRESHOLD`)."""
