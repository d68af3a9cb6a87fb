"""Box-set consistency scores: whether an image's boxes repeat each other (ENMS) or survive the flip (CALD).

Unlike the per-box formulas of :mod:`detector_al.policy.formulas.box_uncertainty`, these compare boxes with one another: ENMS
counts redundant boxes of the image once, CALD matches every box to the flip view's boxes and scores how far
their overlap and class scores are from the most informative agreement.
"""

from __future__ import annotations

import numpy as np

from detector_al.model.geometry import box_iou
from detector_al.policy.formulas.box_uncertainty import EPS, binary_entropy

DEFAULT_ENMS_TAU = 0.1  # max-abs distance of two boxes' class-score vectors below which they are redundant
DEFAULT_CALD_BASE_POINT = 1.3  # CALD's --bp


def enms_entropy(
    confidence: np.ndarray, class_id: np.ndarray, features: np.ndarray, tau: float = DEFAULT_ENMS_TAU
) -> float:
    """Box entropy with entropy-based NMS (ENMS, Wu et al. CVPR 2022): redundant instances count once.

    Greedy over the boxes ``b`` with ``H_b = H(conf_b)``: take the remaining box ``b*`` of highest ``H_b``, keep it,
    and drop it and every remaining box ``b`` with ``class_b = class_b*`` and ``max_k |f_bk - f_b*k| <= tau``;
    repeat until none remains. ``score = sum_{b kept} H_b``.

    The paper compares instance features by cosine similarity. Our per-box features are the class-score vectors
    of the box's anchor (the registry passes ``f_b = [p1[a_b], p2[a_b]]``, both views): with a handful of classes
    the cosine of two same-class score vectors is ~1 whatever the scores (``[0.9, 0.01, 0.01]`` against
    ``[0.5, 0.05, 0.01]``: 0.996), which would keep one box per class. The max-abs distance ``tau`` instead calls
    two boxes redundant when the model scores them alike in both views (every entry within ``tau``): fifty red
    cells at confidence 0.9 count once, a red cell at 0.4 counts apart. It measures how the model *scores* two
    boxes, not how they *look*.

    Args:
        confidence: (N,) box confidences.
        class_id: (N,) box classes.
        features: (N, F) per-box features compared by the max-abs distance.
        tau: redundancy threshold on that distance.

    Example:
        >>> f = np.array([[0.5], [0.52], [0.9]])
        >>> round(enms_entropy(np.array([0.5, 0.52, 0.9]), np.array([0, 0, 0]), f), 3)  # H(0.5) + H(0.9)
        1.018
    """
    h = binary_entropy(np.asarray(confidence, np.float64))
    order = np.argsort(-h, kind="stable")
    alive = np.ones(len(h), bool)
    total = 0.0
    for b in order:
        if not alive[b]:
            continue
        total += float(h[b])
        redundant = (class_id == class_id[b]) & (np.max(np.abs(features - features[b]), axis=1) <= tau)
        alive &= ~redundant
        alive[b] = False
    return total


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon divergence (nats, in [0, ln 2]) of score vectors normalised to distributions.

    ``P = p / sum p``, ``Q = q / sum q``, ``M = (P + Q) / 2``, ``JS = KL(P || M) / 2 + KL(Q || M) / 2`` (as
    ``scipy.stats.entropy`` computes it, which normalises its inputs the same way).

    Example:
        >>> js_divergence(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])).round(4).tolist()
        [0.6931]
    """
    p = np.clip(np.asarray(p, np.float64), EPS, None)
    q = np.clip(np.asarray(q, np.float64), EPS, None)
    p = p / p.sum(axis=1, keepdims=True)
    q = q / q.sum(axis=1, keepdims=True)
    m = (p + q) / 2.0
    return 0.5 * np.sum(p * np.log(p / m), axis=1) + 0.5 * np.sum(q * np.log(q / m), axis=1)


def cald_score(
    xyxy: np.ndarray,
    confidence: np.ndarray,
    class_probs: np.ndarray,
    xyxy_flip: np.ndarray,
    confidence_flip: np.ndarray,
    class_probs_flip: np.ndarray,
    base_point: float = DEFAULT_CALD_BASE_POINT,
) -> float:
    """CALD's consistency uncertainty (Yu et al. 2022, code we1pingyu/CALD) with the flip as the augmentation.

    For every box ``j`` of the image, ``k = argmax_k IoU(b_j, b'_k)`` over the flip view's boxes (already mapped
    back onto the image), and, exactly as CALD's ``get_uncertainty`` computes it,

    ``m_j = | IoU(b_j, b'_k) + (1 - JS(p_j, p'_k)) * (s_j + s'_k) / 2 - beta |``

    with ``p, p'`` the class-score vectors of the two boxes' anchors (:func:`js_divergence`), ``s, s'`` their
    confidences (CALD's ``prob_max``: the confidence weighting) and ``beta`` = 1.3 (CALD's ``--bp``). The bracket
    lies in [0, 2] (2: the same confident box in both views); ``beta`` marks the most informative consistency.
    CALD's image consistency is ``c = min(1, min_j m_j)`` (it starts from 1 and takes the min over boxes), and it
    labels the *lowest* ``c`` first; an image with no box in either view gets ``c = 0`` (first in line).
    Our uncertainty is ``score = 1 - c`` in [0, 1]. Unlike CALD we use every box (it subsamples 50 of > 40).

    The flip is a weak augmentation for mirror-symmetric objects (cells, fish seen from the side, balls): their
    boxes and scores barely change under it, so CALD is blind to the model's doubts about them; scale or colour
    views would see more.

    Example:
        >>> b = np.array([[0.0, 0.0, 10.0, 10.0]]); p = np.array([[0.8, 0.1]])
        >>> round(cald_score(b, np.array([0.8]), p, b, np.array([0.8]), p), 3)  # |1 + 0.8 - 1.3| = 0.5
        0.5
    """
    if len(xyxy) == 0 or len(xyxy_flip) == 0:
        return 1.0
    iou = box_iou(np.asarray(xyxy, np.float64), np.asarray(xyxy_flip, np.float64))
    k = np.argmax(iou, axis=1)
    best = iou[np.arange(len(k)), k]
    agree = (1.0 - js_divergence(class_probs, class_probs_flip[k])) * (confidence + confidence_flip[k]) / 2.0
    m = np.abs(best + agree - base_point)
    return float(1.0 - min(1.0, float(m.min())))
