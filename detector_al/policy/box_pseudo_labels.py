"""Box-level pseudo-labels: the confident boxes of an image too dense for CEAL's image-level acceptance, each kept
only where the flipped view agrees, every doubtful region masked out, and the threshold calibrated each round on
held-out labeled images (:func:`calibrate_box_pseudo_labels`). The simulation's ``+boxes`` arms use them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from detector_al.model.geometry import box_iou, same_class_matches
from detector_al.model.predictions import Detections, ImagePredictions
from detector_al.policy.formulas.proportions import wilson_lower
from detector_al.policy.thresholds import CALIBRATION_GRID


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
