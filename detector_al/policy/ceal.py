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
on (:func:`calibrate_ceal`: calibrated, unproven, or off when shown unsafe or untested); the backend does it for every
model version (:mod:`detector_al.pipelines.ceal_gate`), the simulation every round.

Example:
    >>> CealConfig(delta_0=0.01, decay=0.002).threshold(2)
    0.006
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from detector_al.model.geometry import box_iou, same_class_matches
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


@dataclass(frozen=True)
class BoxPseudoConfig:
    """Box-level pseudo-labels for images too dense for image-level acceptance (see :func:`box_pseudo_labels`).

    ``min_confidence = 0.4`` is an uncalibrated default (it cleared 95 % on BCCD's round-0 model of seed 0, but a
    model gets surer as it learns: 84 % over the learning curves). Callers that train on the boxes set it each
    round with :func:`calibrate_box_pseudo_labels` on held-out labeled images.
    """

    min_confidence: float = 0.4
    flip_iou: float = 0.5
    mask_from: float = 0.05  # every other box at or above this confidence (either view) is masked out
    duplicate_iou: float = 0.3


@dataclass(frozen=True)
class BoxPseudoLabels:
    """The boxes taught as objects and the regions (``xyxy``) blanked out so that they teach nothing."""

    boxes: Detections
    masked: np.ndarray


def box_pseudo_labels(pred: ImagePredictions, cfg: BoxPseudoConfig = BoxPseudoConfig()) -> BoxPseudoLabels:
    """The confident boxes that both views agree on, and every doubtful region to mask out.

    ``kept = {b : conf_b >= min_confidence and exists f in flip boxes with class_f = class_b,
    conf_f >= min_confidence, IoU(b, f) >= flip_iou}``. ``masked`` = every other box of either view with
    ``conf >= mask_from`` whose IoU with each kept box is below ``duplicate_iou`` (a duplicate of a kept box
    is the kept object itself). A masked region is neither object nor background in training; an object the
    model does not see at ``mask_from`` still teaches background (the recall the oracle measures).
    """
    det, flip = pred.detections, pred.detections_flip
    strong, strong_flip = det.confidence >= cfg.min_confidence, flip.confidence >= cfg.min_confidence
    agree = np.zeros(len(det), bool)
    if strong.any() and strong_flip.any():
        iou = box_iou(det.xyxy[strong], flip.xyxy[strong_flip])
        same = det.class_id[strong][:, None] == flip.class_id[strong_flip][None, :]
        agree[np.flatnonzero(strong)] = ((iou >= cfg.flip_iou) & same).any(axis=1)
    kept = det[agree]
    doubtful = np.concatenate(
        [det.xyxy[~agree & (det.confidence >= cfg.mask_from)], flip.xyxy[flip.confidence >= cfg.mask_from]]
    ).reshape(-1, 4)
    if len(kept) and len(doubtful):
        doubtful = doubtful[box_iou(doubtful, kept.xyxy).max(axis=1) < cfg.duplicate_iou]
    return BoxPseudoLabels(kept, doubtful.astype(np.float32))


CALIBRATION_GRID = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9)

MIN_CONFIDENT_BOXES = 5
"""The fewest confident boxes (``conf_b >= min_confidence``) the held-out images must hold for CEAL to run unproven.
Chosen on val (docs/annotator_time_pretrained.md, "CEAL's gate needs evidence"): judged on k of run 2's val images and
measured on the rest of val, 5 keeps the sample data's coverage (0.414 -> 0.399 of the images at k = 4, unchanged at
8 and 14) and cuts aquarium's wrong auto-accepted boxes per model from 0.13-0.27 to 0.00 (3: 0.02; 8 and 10
halve the sample data's coverage at k = 4)."""


def wilson_interval(right: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson interval of a proportion ``p = right / n``: ``(centre -+ spread) / (1 + z^2/n)`` with ``centre =
    p + z^2/2n`` and ``spread = z sqrt(p (1 - p) / n + z^2 / 4n^2)`` (``z = 1.96``: two-sided 95 %); ``(0, 1)``
    when ``n = 0``.

    Example:
        >>> [round(x, 3) for x in wilson_interval(95, 100)]
        [0.888, 0.978]
    """
    if n == 0:
        return 0.0, 1.0
    p = right / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - spread) / (1 + z * z / n)), float((centre + spread) / (1 + z * z / n))


def wilson_lower(right: int, n: int, z: float = 1.645) -> float:
    """The one-sided 95 % Wilson lower bound of a proportion (:func:`wilson_interval`'s lower end at ``z = 1.645``);
    0 when ``n = 0``.

    Example:
        >>> round(wilson_lower(95, 100), 3)
        0.901
    """
    return wilson_interval(right, n, z)[0]


def wilson_upper(right: int, n: int, z: float = 1.645) -> float:
    """The one-sided 95 % Wilson upper bound of a proportion (:func:`wilson_interval`'s upper end at ``z = 1.645``);
    1 when ``n = 0``."""
    return wilson_interval(right, n, z)[1]


def calibrate_box_pseudo_labels(
    preds: list[ImagePredictions],
    truths: list[Detections],
    target: float = 0.95,
    base: BoxPseudoConfig = BoxPseudoConfig(),
    grid: tuple[float, ...] = CALIBRATION_GRID,
) -> BoxPseudoConfig | None:
    """This round's box pseudo-label rule, calibrated on held-out labeled images; None when no threshold is safe.

    For each ``t`` of ``grid``, lowest first: the boxes :func:`box_pseudo_labels` keeps at ``min_confidence = t``
    on ``preds`` (the current model on labeled images it was not trained on) are matched to ``truths``; ``right``
    = those matched to a true box of their class (IoU >= 0.5). The first ``t`` with
    ``wilson_lower(right, kept) >= target`` is returned, so the precision is at least ``target`` with 95 %
    confidence (one-sided) on these images; a model too weak for that gets no box pseudo-labels this round.
    """
    for t in grid:
        cfg = replace(base, min_confidence=t)
        right = kept = 0
        for pred, truth in zip(preds, truths, strict=True):
            if pred.ok:
                boxes = box_pseudo_labels(pred, cfg).boxes
                kept += len(boxes)
                right += same_class_matches(boxes, truth)
        if wilson_lower(right, kept) >= target:
            return cfg
    return None


Evidence = dict[float, tuple[int, int, int, int]]
"""Per ``min_confidence``: ``(right, boxes, confident_right, confident_boxes)`` (see :func:`ceal_evidence`)."""


def accepted_boxes(pred: ImagePredictions, truth: Detections, cfg: CealConfig, round_index: int = 0) -> tuple[int, int]:
    """``(right, boxes)``: the pseudo-labels :func:`auto_accept` gives ``pred`` under ``cfg`` (none when it does not
    accept the image) and those matched to a true box of their class (IoU >= 0.5, one to one)."""
    if not pred.ok:
        return 0, 0
    verdict = auto_accept(pred, consistency(pred) if cfg.flip_test else 0.0, round_index, cfg)
    if not verdict.accepted:
        return 0, 0
    return same_class_matches(verdict.pseudo_labels, truth), len(verdict.pseudo_labels)


def ceal_evidence(
    pred: ImagePredictions, truth: Detections, base: CealConfig, grid: tuple[float, ...] = CALIBRATION_GRID
) -> Evidence:
    """One held-out image's evidence at each ``min_confidence = t`` of ``grid`` and at ``base``'s own: its
    :func:`accepted_boxes` ``(right, boxes)``, and ``(confident_right, confident_boxes)``, the same count for every box
    of the image with ``conf_b >= t``, accepted or not (pool the images with :func:`pool_evidence`). None counted
    when ``base`` is disabled: there is nothing to judge."""
    out = {}
    if not base.enabled:
        return out
    for t in {*grid, base.min_confidence}:
        confident = pred.detections[pred.detections.confidence >= t] if pred.ok else None
        seen = (same_class_matches(confident, truth), len(confident)) if confident is not None else (0, 0)
        out[t] = (*accepted_boxes(pred, truth, replace(base, min_confidence=t)), *seen)
    return out


def pool_evidence(images: Iterable[Evidence | None]) -> tuple[Evidence, int]:
    """Images' :func:`ceal_evidence` pooled (every count summed per threshold) and how many images it covers (None:
    an image that could not be read, not counted)."""
    pooled: Evidence = {}
    n = 0
    for found in images:
        if found is None:
            continue
        n += 1
        for t, counts in found.items():
            pooled[t] = tuple(a + b for a, b in zip(pooled.get(t, (0, 0, 0, 0)), counts, strict=True))
    return pooled, n


@dataclass(frozen=True)
class CealCalibration:
    """What one model's held-out human labels say of its CEAL pseudo-labels (:func:`calibrate_ceal`).

    ``verdict``: ``calibrated`` (``min_confidence`` shown safe), ``unproven`` (enough confident held-out boxes to
    look at, too few to prove or refute the target: the settings' threshold is kept), ``unsafe`` (shown below the
    target at the settings' threshold: CEAL off for this model), ``untested`` (fewer than :data:`MIN_CONFIDENT_BOXES`
    confident held-out boxes: nothing seen, nothing auto-accepted; CEAL off), ``off`` (CEAL disabled by the settings).
    The counts are :func:`ceal_evidence`'s at ``min_confidence``; ``min_boxes`` is the evidence the *untested* verdict
    asked for.
    """

    verdict: str
    min_confidence: float | None
    right: int
    boxes: int
    confident_right: int
    confident_boxes: int
    images: int
    target: float = 0.95
    min_boxes: int = MIN_CONFIDENT_BOXES

    @property
    def switches_off(self) -> bool:
        """Whether this verdict switches the settings' CEAL off for the model (``unsafe``, ``untested``)."""
        return self.verdict in ("unsafe", "untested")

    def apply(self, base: CealConfig) -> CealConfig:
        """The CEAL this model runs with: ``base`` at the calibrated threshold, ``base`` switched off when unsafe or
        untested, else ``base`` itself."""
        if self.verdict == "calibrated" and self.min_confidence is not None:
            return replace(base, min_confidence=self.min_confidence)
        if self.switches_off:
            return replace(base, enabled=False)
        return base

    def rejudged(self) -> CealCalibration:
        """The verdict the current rule gives these stored counts (:func:`fallback_verdict`): a gate kept by an older
        release (say, *unproven* on fewer confident boxes than the gate now asks for) is judged as a new one would be.
        *calibrated* and *off* stand: the counts kept are those at the threshold chosen, not at every threshold."""
        if self.verdict not in ("unproven", "unsafe", "untested"):
            return self
        counts = (self.right, self.boxes, self.confident_right, self.confident_boxes)
        return replace(self, verdict=fallback_verdict(*counts, self.target, self.min_boxes))

    def describe(self) -> str:
        """One line for people: the verdict and its evidence."""
        seen = (
            f"{self.right}/{self.boxes} auto-accepted and {self.confident_right}/{self.confident_boxes} confident boxes "
            f"right on {self.images} held-out images"
        )
        return {
            "calibrated": f"on at min_confidence {self.min_confidence}: {seen}",
            "unproven": f"kept at min_confidence {self.min_confidence}, not yet judged: {seen}",
            "unsafe": f"off: at min_confidence {self.min_confidence}, {seen} (shown below {self.target:.0%})",
            "untested": f"off: {seen} (fewer than {self.min_boxes} confident boxes to judge it by)",
            "off": "off by the settings",
        }[self.verdict]


def shown_below(right: int, boxes: int, target: float) -> bool:
    """Whether a precision ``right / boxes`` is below ``target`` with 95 % confidence: ``wilson_upper < target``."""
    return wilson_upper(right, boxes) < target


def shown_unsafe(right: int, boxes: int, confident_right: int, confident_boxes: int, target: float) -> bool:
    """``unsafe_t`` of :func:`calibrate_ceal`: the auto-accepted boxes, or the model's confident boxes at all, are
    :func:`shown_below` ``target``."""
    return shown_below(right, boxes, target) or shown_below(confident_right, confident_boxes, target)


def fallback_verdict(
    right: int, boxes: int, confident_right: int, confident_boxes: int, target: float, min_boxes: int
) -> str:
    """The verdict at the settings' own threshold when no threshold is proven safe: ``unsafe`` when
    :func:`shown_unsafe`, else ``untested`` when ``confident_boxes <
    min_boxes``, else ``unproven``.

    Example:
        >>> fallback_verdict(3, 3, 3, 3, 0.95, 5), fallback_verdict(3, 3, 9, 9, 0.95, 5)
        ('untested', 'unproven')
    """
    if shown_unsafe(right, boxes, confident_right, confident_boxes, target):
        return "unsafe"
    return "untested" if confident_boxes < min_boxes else "unproven"


def calibrate_ceal(
    evidence: Evidence,
    images: int,
    base: CealConfig = CealConfig(),
    target: float = 0.95,
    grid: tuple[float, ...] = CALIBRATION_GRID,
    min_boxes: int = MIN_CONFIDENT_BOXES,
) -> CealCalibration:
    """CEAL's gate for one model, from its :func:`ceal_evidence` pooled over ``images`` held-out labeled images
    (:func:`pool_evidence`).

    With ``(right_t, boxes_t, confident_right_t, confident_boxes_t)`` at ``min_confidence = t`` and the one-sided 95 %
    Wilson bounds, ``unsafe_t = wilson_upper(right_t, boxes_t) < target or wilson_upper(confident_right_t,
    confident_boxes_t) < target`` (the auto-accepted boxes, or the model's confident boxes at all, are shown below
    ``target``; the second sees far more boxes, as a weak model accepts few images):

    - ``calibrated`` at the lowest ``t``, of ``base``'s own ``b`` and the values of ``grid`` above it (the gate never
      makes CEAL more permissive than the settings), with ``wilson_lower(right_t, boxes_t) >= target`` and not
      ``unsafe_t`` (the precision is at least ``target`` with 95 % confidence);
    - else ``unsafe`` when ``unsafe_b`` at ``base``'s own ``b``: this model auto-accepts nothing;
    - else ``untested`` when ``confident_boxes_b < min_boxes``: the held-out images hold too few of the model's
      confident boxes to look at (a weak model, or a handful of labels), and it auto-accepts nothing either;
    - else ``unproven``: ``base`` is kept (enough boxes to look at, too few to prove or refute the target; its
      threshold was chosen on pooled val splits, docs/annotator_time_pretrained.md).

    Example:
        >>> calibrate_ceal({0.6: (1, 2, 30, 60)}, 5, grid=(0.6,)).verdict
        'unsafe'
        >>> calibrate_ceal({0.6: (60, 60, 80, 80)}, 30, grid=(0.6,)).min_confidence
        0.6
        >>> calibrate_ceal({0.6: (3, 3, 9, 9)}, 3, grid=(0.6,)).verdict
        'unproven'
        >>> calibrate_ceal({0.6: (1, 1, 3, 3)}, 1, grid=(0.6,)).verdict
        'untested'
    """
    if not base.enabled:
        return CealCalibration("off", None, 0, 0, 0, 0, images, target, min_boxes)
    b = base.min_confidence
    counts = {t: evidence.get(t, (0, 0, 0, 0)) for t in sorted({b, *(t for t in grid if t > b)})}  # never below b
    unsafe = {t: shown_unsafe(*c, target) for t, c in counts.items()}
    proven = next((t for t, (r, n, _, _) in counts.items() if wilson_lower(r, n) >= target and not unsafe[t]), None)
    if proven is not None:
        return CealCalibration("calibrated", proven, *counts[proven], images, target, min_boxes)
    return CealCalibration(fallback_verdict(*counts[b], target, min_boxes), b, *counts[b], images, target, min_boxes)
