"""CEAL auto-accept: the decaying threshold and the checks that block acceptance."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from detector_al.model.geometry import box_iou
from detector_al.model.predictions import Detections
from detector_al.policy.ceal import CealConfig, auto_accept
from tests.factories import background, pred

CFG = CealConfig(delta_0=0.01, decay=0.002, min_confidence=0.5, detect_threshold=0.25, band_low=0.1)


def confident_scene(extra_anchor_p: float | None = None, extra_box=(60, 60, 80, 80), conf: float = 0.9):
    p = background()
    boxes = np.tile(np.array([[0, 0, 1, 1]], np.float32), (len(p), 1))
    p[10, 0] = conf
    boxes[10] = [10, 10, 30, 30]
    p[11, 0] = 0.2  # an NMS duplicate of the detected box: in the band, but overlapping it
    boxes[11] = [11, 11, 31, 31]
    if extra_anchor_p is not None:
        p[50, 1] = extra_anchor_p
        boxes[50] = extra_box
    dets = Detections(np.array([[10, 10, 30, 30]]), np.array([conf]), np.array([0]), anchor=np.array([10]))
    return pred(p, p.copy(), dets=dets, boxes=boxes)


@pytest.mark.parametrize(("t", "expected"), [(0, 0.01), (1, 0.008), (4, 0.002), (5, 0.0), (9, 0.0)])
def test_threshold_decays_linearly_and_stops_at_zero(t, expected):
    assert CFG.threshold(t) == pytest.approx(expected)


def test_confident_image_is_accepted_with_its_detections_as_pseudo_labels():
    d = auto_accept(confident_scene(), score=0.001, round_index=0, cfg=CFG)
    assert d.accepted, d.reason
    assert len(d.pseudo_labels) == 1 and d.pseudo_labels.class_id[0] == 0


@pytest.mark.parametrize("band_p", [0.1, 0.15, 0.24])
def test_object_in_the_ambiguous_band_blocks_acceptance(band_p):
    d = auto_accept(confident_scene(extra_anchor_p=band_p), score=0.0, round_index=0, cfg=CFG)
    assert not d.accepted and "ambiguous" in d.reason


def test_below_band_does_not_block():
    assert auto_accept(confident_scene(extra_anchor_p=0.05), 0.0, 0, CFG).accepted


def test_with_the_flip_test_a_score_above_threshold_blocks_and_threshold_tightens_with_rounds():
    scene, flip_test = confident_scene(), replace(CFG, flip_test=True)
    assert auto_accept(scene, 0.007, 0, flip_test).accepted
    assert not auto_accept(scene, 0.007, 2, flip_test).accepted  # delta_2 = 0.006
    assert auto_accept(scene, 0.007, 2, CFG).accepted  # off (the default): the consistency is not read
    assert auto_accept(scene, float("nan"), 2, CFG).accepted


def test_unconfident_detection_blocks():
    d = auto_accept(confident_scene(conf=0.4), 0.0, 0, CFG)
    assert not d.accepted and "confidence" in d.reason


def test_empty_image_is_not_accepted_by_default():
    p = background()
    empty = pred(p, p.copy())
    assert not auto_accept(empty, 0.0, 0, CFG).accepted
    assert auto_accept(empty, 0.0, 0, CealConfig(accept_empty=True)).accepted


def test_disabled():
    assert not auto_accept(confident_scene(), 0.0, 0, CealConfig(enabled=False)).accepted


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 50 / 150, 0.0])


def test_box_pseudo_labels_keep_flip_agreed_confident_boxes_and_mask_the_doubtful(tmp_path):
    from PIL import Image

    from detector_al.model.predictions import ImagePredictions
    from detector_al.policy.box_pseudo_labels import box_pseudo_labels
    from detector_al.simulation.training import write_masked

    det = Detections(
        np.array([[10, 10, 30, 30], [50, 50, 70, 70], [80, 10, 95, 25], [11, 11, 31, 31], [40, 80, 60, 95]]),
        np.array([0.9, 0.9, 0.7, 0.2, 0.3]),  # agreed, class disagrees, flip misses, duplicate, weak
        np.array([0, 1, 0, 0, 2]),
    )
    flip = Detections(
        np.array([[10, 11, 30, 31], [50, 50, 70, 70], [5, 60, 15, 70]]), np.array([0.8, 0.9, 0.1]), np.array([0, 2, 1])
    )
    probs = np.zeros((4, 3), np.float32)
    p = ImagePredictions("img", 100, 100, det, flip, probs, probs, np.zeros(4, np.int64), np.zeros((4, 4), np.float32))
    out = box_pseudo_labels(p)
    assert out.boxes.xyxy.tolist() == [[10, 10, 30, 30]]
    masked = {tuple(b) for b in out.masked.tolist()}
    assert masked == {(50, 50, 70, 70), (80, 10, 95, 25), (40, 80, 60, 95), (5, 60, 15, 70)}  # no kept duplicate

    src = tmp_path / "a.png"
    Image.new("RGB", (100, 100), (255, 0, 0)).save(src)
    write_masked(src, tmp_path / "b.png", out.masked)
    img = Image.open(tmp_path / "b.png")
    assert img.getpixel((60, 60)) == (114, 114, 114) and img.getpixel((20, 20)) == (255, 0, 0)


def _held_out_image(conf: float, right: bool):
    """One held-out image: a box both views agree on at ``conf``, of the true class when ``right``."""
    from detector_al.model.predictions import ImagePredictions

    box = Detections(np.array([[10, 10, 30, 30]]), np.array([conf]), np.array([0 if right else 1]))
    probs = np.zeros((4, 3), np.float32)
    pred = ImagePredictions("x", 100, 100, box, box, probs, probs, np.zeros(4, np.int64), np.zeros((4, 4), np.float32))
    return pred, Detections(np.array([[10, 10, 30, 30]]), np.ones(1), np.array([0]))


def test_the_box_pseudo_label_threshold_is_the_lowest_whose_held_out_precision_is_surely_high_enough():
    from detector_al.policy.box_pseudo_labels import calibrate_box_pseudo_labels
    from detector_al.policy.formulas.proportions import wilson_lower

    # 100 right boxes at 0.65, 20 wrong ones at 0.42: at 0.4 the precision is 83 %; from 0.45 on, 100 %
    images = [_held_out_image(0.65, True) for _ in range(100)] + [_held_out_image(0.42, False) for _ in range(20)]
    preds, truths = zip(*images, strict=True)
    rule = calibrate_box_pseudo_labels(list(preds), list(truths))
    assert rule is not None and rule.min_confidence == 0.45
    assert wilson_lower(100, 100) >= 0.95 > wilson_lower(100, 120)
    # a handful of right boxes is not enough evidence: no rule, no box pseudo-labels this round
    assert calibrate_box_pseudo_labels(list(preds[:20]), list(truths[:20])) is None
