"""CEAL's gate: whether a model's CEAL pseudo-labels are right often enough, judged on held-out human labels.

Each held-out image gives its :func:`ceal_evidence` (the boxes CEAL would auto-accept at each threshold, and the
model's confident boxes, each counted right or not against the truth); :func:`pool_evidence` sums them, and
:func:`calibrate_ceal` gives the verdict (:class:`CealCalibration`): calibrated, unproven, or off when shown unsafe
or untested. The backend judges every model version (:mod:`detector_al.pipelines.ceal_gate`), the simulation every
round.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from detector_al.model.geometry import same_class_matches
from detector_al.model.predictions import Detections, ImagePredictions
from detector_al.policy.ceal import CealConfig, auto_accept, consistency
from detector_al.policy.formulas.proportions import shown_below, wilson_lower
from detector_al.policy.thresholds import CALIBRATION_GRID

MIN_CONFIDENT_BOXES = 5
"""The fewest confident boxes (``conf_b >= min_confidence``) the held-out images must hold for CEAL to run unproven.
Chosen on val (docs/annotator_time_pretrained.md, "CEAL's gate needs evidence"): judged on k of run 2's val images and
measured on the rest of val, 5 keeps the sample data's coverage (0.414 -> 0.399 of the images at k = 4, unchanged at
8 and 14) and cuts aquarium's wrong auto-accepted boxes per model from 0.13-0.27 to 0.00 (3: 0.02; 8 and 10
halve the sample data's coverage at k = 4)."""


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
            f"{self.right}/{self.boxes} auto-accepted and {self.confident_right}/{self.confident_boxes} confident "
            f"boxes right on {self.images} held-out images"
        )
        return {
            "calibrated": f"on at min_confidence {self.min_confidence}: {seen}",
            "unproven": f"kept at min_confidence {self.min_confidence}, not yet judged: {seen}",
            "unsafe": f"off: at min_confidence {self.min_confidence}, {seen} (shown below {self.target:.0%})",
            "untested": f"off: {seen} (fewer than {self.min_boxes} confident boxes to judge it by)",
            "off": "off by the settings",
        }[self.verdict]


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
