"""CEAL auto-accept: confident images become pseudo-labels for one round, never human annotations.

An image is auto-accepted in round ``t`` when all of these hold:

1. with ``flip_test`` (off by default), its flip-consistency uncertainty (:func:`consistency`, the ``mi_aod``
   score, whatever strategy orders the queue) is below the decaying threshold ``delta_t = max(delta_0 - dr * t,
   0)``. Off, because it bought nothing measurable (``benchmarks/bench_ceal_flip.py``, docs/benchmarks.md: the
   sample pool's auto-accepted boxes are 0.964 right with it and 0.966 without, 111 and 118 images; BCCD accepts
   none either way) and it costs the adapter a second view of every image;
2. every detection is confident: ``conf_b >= min_confidence`` for every box with ``conf_b >= detect_threshold``;
3. it has at least one detection (unless ``accept_empty``: a weak model that sees nothing must not teach
   "nothing here");
4. no anchor sits in the ambiguous band ``band_low <= max_c p_ic < detect_threshold`` unless its box overlaps a
   detection (``IoU >= duplicate_iou``, an NMS duplicate): such an anchor is a likely missed object.

Its pseudo-labels are its detections with ``conf_b >= detect_threshold``. They are recomputed from the
current model every round and live only in the round's training set (the trainer marks them); nothing
here writes them anywhere a human annotation could be mistaken for them.

Whether CEAL runs at all for a model, and at which ``min_confidence``, is judged on labeled images it never trained
on (:func:`~detector_al.policy.ceal_calibration.calibrate_ceal`: calibrated, unproven, or off when shown unsafe or
untested); the backend does it for every model version (:mod:`detector_al.pipelines.ceal_gate`), the simulation every
round. Box-level pseudo-labels for dense images are :mod:`detector_al.policy.box_pseudo_labels`.

Example:
    >>> CealConfig(delta_0=0.01, decay=0.002).threshold(2)
    0.006
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector_al.model.geometry import box_iou
from detector_al.model.predictions import Detections, ImagePredictions
from detector_al.policy.thresholds import SCORE_THRESHOLD


@dataclass(frozen=True)
class CealConfig:
    """Auto-accept settings. ``delta_0`` and ``decay`` are on the scale of the strategy's score.

    ``min_confidence = 0.6`` (0.5 until issue #30): chosen on val splits with the pretrained base's models
    (``benchmarks/bench_ceal_threshold.py``, docs/annotator_time_pretrained.md). The sample data's 20 models: box
    precision 0.933 at 0.5, 0.951 at 0.6 (coverage 0.55 -> 0.49 of the images); on BCCD (dense) and aquarium (models
    at mAP50 0.06-0.17) no threshold of 0.3-0.9 reaches 0.95, and 0.6 accepts less there (aquarium 1.4 % -> 0.8 % of
    the images, precision 0.47 -> 0.56). A weak model's confidence is not a precision: CEAL still fires on it.
    """

    delta_0: float = 0.004
    decay: float = 0.0005
    min_confidence: float = 0.6
    detect_threshold: float = SCORE_THRESHOLD
    band_low: float = 0.1
    duplicate_iou: float = 0.3
    accept_empty: bool = False
    enabled: bool = True
    flip_test: bool = False  # test 1 of the module docstring (needs the flipped view)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"CEAL min_confidence must be in [0, 1], got {self.min_confidence}")

    def threshold(self, round_index: int) -> float:
        """``delta_t = max(delta_0 - dr * t, 0)``."""
        return round(max(self.delta_0 - self.decay * round_index, 0.0), 12)


@dataclass(frozen=True)
class AcceptDecision:
    accepted: bool
    reason: str
    pseudo_labels: Detections


def ambiguous_anchors(pred: ImagePredictions, cfg: CealConfig) -> np.ndarray:
    """Indices of anchors in the ambiguous band that duplicate no detection (likely missed objects)."""
    s = pred.probs.max(axis=1)
    cand = np.flatnonzero((s >= cfg.band_low) & (s < cfg.detect_threshold))
    confident = pred.detections[pred.detections.confidence >= cfg.detect_threshold]
    if cand.size == 0 or len(confident) == 0:
        return cand
    overlap = box_iou(pred.anchor_boxes[cand], confident.xyxy).max(axis=1)
    return cand[overlap < cfg.duplicate_iou]


def consistency(pred: ImagePredictions) -> float:
    """The uncertainty CEAL thresholds: the ``mi_aod`` score of the image (see :mod:`detector_al.policy.strategies`)."""
    from detector_al.policy.strategies import mi_aod_score

    return mi_aod_score(pred.probs, pred.probs_flip, pred.level)


def auto_accept(pred: ImagePredictions, score: float, round_index: int, cfg: CealConfig) -> AcceptDecision:
    """Decide whether ``pred`` is auto-accepted in round ``round_index`` (see the module docstring).

    ``score`` is the image's :func:`consistency` (passed in so that callers that already have it pay once); it is
    read only with ``cfg.flip_test``.
    """
    kept = pred.detections[pred.detections.confidence >= cfg.detect_threshold]
    if not cfg.enabled:
        return AcceptDecision(False, "auto-accept disabled", kept)
    if not len(kept) and not cfg.accept_empty:
        return AcceptDecision(False, "no detection (an empty pseudo-label would teach 'nothing here')", kept)
    delta = cfg.threshold(round_index)
    if cfg.flip_test and not score < delta:
        return AcceptDecision(False, f"score {score:.4g} >= delta_t {delta:.4g}", kept)
    if len(kept) and kept.confidence.min() < cfg.min_confidence:
        return AcceptDecision(False, f"a box at confidence {kept.confidence.min():.2f} < {cfg.min_confidence}", kept)
    missed = ambiguous_anchors(pred, cfg)
    if missed.size:
        return AcceptDecision(False, f"{missed.size} anchors in the ambiguous band (possible missed object)", kept)
    return AcceptDecision(True, "confident", kept)
