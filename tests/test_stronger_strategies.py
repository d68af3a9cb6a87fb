"""Issue #14 strategies: ENMS, CALD, class-rarity and PPAL-difficulty weighting (known answers and invariants)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import detector_al.policy.ceal
import detector_al.policy.ceal_calibration
import detector_al.policy.formulas.box_consistency
import detector_al.policy.formulas.box_uncertainty
import detector_al.policy.formulas.class_weights
import detector_al.policy.formulas.proportions
import detector_al.policy.strategies
import detector_al.queue.selection
from detector_al.model.predictions import Detections
from detector_al.policy.formulas.box_consistency import cald_score, enms_entropy, js_divergence
from detector_al.policy.formulas.box_uncertainty import binary_entropy, box_entropy
from detector_al.policy.formulas.class_weights import (
    class_difficulty,
    class_weighted_entropy,
    difficulty_weights,
    pool_difficulty,
    rarity_weights,
)
from detector_al.policy.strategies import (
    STRATEGIES,
    build_strategy,
    class_balanced_entropy,
    difficulty_calibrated_entropy,
    get_strategy,
)
from tests.factories import background, pred

H = binary_entropy


@pytest.mark.parametrize(
    "module",
    [
        detector_al.policy.strategies,
        detector_al.policy.formulas.box_uncertainty,
        detector_al.policy.formulas.box_consistency,
        detector_al.policy.formulas.class_weights,
        detector_al.policy.formulas.proportions,
        detector_al.policy.ceal,
        detector_al.policy.ceal_calibration,
        detector_al.queue.selection,
    ],
)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --- ENMS -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("confidence", "class_id", "features", "expected"),
    [
        # ten copies of one uncertain box count once
        ([0.5] * 10, [0] * 10, [[0.5, 0.1]] * 10, H(np.array(0.5))),
        # the same scores in different classes are not redundant
        ([0.5, 0.5], [0, 1], [[0.5, 0.1], [0.5, 0.1]], 2 * H(np.array(0.5))),
        # scored apart (0.5 vs 0.9): both count
        ([0.5, 0.9], [0, 0], [[0.5, 0.0], [0.9, 0.0]], H(np.array(0.5)) + H(np.array(0.9))),
        # the higher-entropy box is kept, its near twin dropped (H(0.5) > H(0.55))
        ([0.55, 0.5], [0, 0], [[0.55], [0.5]], H(np.array(0.5))),
        # redundancy is not transitive through dropped boxes: 0.5 drops 0.58, then 0.66 is kept
        ([0.5, 0.58, 0.66], [0, 0, 0], [[0.5], [0.58], [0.66]], H(np.array(0.5)) + H(np.array(0.66))),
        ([], [], np.zeros((0, 2)), 0.0),
    ],
)
def test_enms_known_values(confidence, class_id, features, expected):
    got = enms_entropy(np.array(confidence), np.array(class_id, np.int64), np.array(features, np.float64), tau=0.1)
    assert got == pytest.approx(float(expected))


@settings(max_examples=80, deadline=None)
@given(
    conf=arrays(np.float64, 12, elements=st.floats(0.01, 0.99)),
    cls=arrays(np.int64, 12, elements=st.integers(0, 2)),
    feats=arrays(np.float64, (12, 3), elements=st.floats(0, 1)),
)
def test_enms_lies_between_the_max_and_the_sum_of_box_entropies(conf, cls, feats):
    score = enms_entropy(conf, cls, feats)
    assert box_entropy(conf, "max") - 1e-12 <= score <= box_entropy(conf, "sum") + 1e-12
    assert enms_entropy(conf, cls, feats, tau=-1.0) == pytest.approx(box_entropy(conf, "sum"))


def crowd(n, conf, flip_conf=None, same_anchor=False):
    """An image with ``n`` class-0 boxes at anchors 10.. (or all at anchor 10)."""
    p1, p2 = background(), background()
    anchors = np.full(n, 10) if same_anchor else np.arange(10, 10 + n)
    p1[anchors, 0] = conf
    p2[anchors, 0] = conf if flip_conf is None else flip_conf
    boxes = np.array([[4 * i, 0, 4 * i + 3, 3] for i in range(n)], np.float32)
    dets = Detections(boxes, np.full(n, conf), np.zeros(n, np.int64), anchor=anchors)
    return pred(p1, p2, dets=dets, source=f"crowd{n}")


def test_enms_registry_counts_a_crowd_of_alike_boxes_once_and_reads_both_views():
    enms, esum = get_strategy("entropy_enms"), get_strategy("entropy_sum")
    many = crowd(20, 0.5)
    assert esum.score(many) == pytest.approx(20 * np.log(2))
    assert enms.score(many) == pytest.approx(np.log(2))
    p = crowd(2, 0.5)
    p.probs_flip[11, 0] = 0.9  # the second box looks different in the flip view: not redundant
    assert enms.score(p) == pytest.approx(2 * np.log(2))


# --- CALD -------------------------------------------------------------------------------------------------------


def test_js_divergence_known_values_and_symmetry():
    p = np.array([[0.9, 0.1, 0.0], [0.2, 0.2, 0.2], [1.0, 0.0, 0.0]])
    q = np.array([[0.9, 0.1, 0.0], [0.4, 0.4, 0.4], [0.0, 1.0, 0.0]])
    js = js_divergence(p, q)
    assert js[0] == pytest.approx(0.0, abs=1e-9)  # identical
    assert js[1] == pytest.approx(0.0, abs=1e-9)  # the same distribution after normalisation
    assert js[2] == pytest.approx(np.log(2), rel=1e-6)  # disjoint: the maximum
    np.testing.assert_allclose(js, js_divergence(q, p))


BOX = np.array([[10.0, 10.0, 30.0, 30.0]])
FAR = np.array([[100.0, 100.0, 120.0, 120.0]])
P = np.array([[0.8, 0.1]])


@pytest.mark.parametrize(
    ("conf", "conf_flip", "flip_boxes", "expected"),
    [
        (0.9, 0.9, BOX, 1 - abs(1 + 0.9 - 1.3)),  # a confident, stable box: bracket 1.9, score 0.4
        (0.3, 0.3, BOX, 1.0),  # bracket exactly 1.3 (CALD's base point): the most informative
        (0.9, 0.9, FAR, 1 - min(1.0, abs(0 + 0.9 - 1.3))),  # no overlapping flip box: IoU 0
        (0.9, 0.9, np.zeros((0, 4)), 1.0),  # the flip view lost the box: CALD's consistency 0
    ],
)
def test_cald_known_values(conf, conf_flip, flip_boxes, expected):
    n = len(flip_boxes)
    got = cald_score(BOX, np.array([conf]), P, flip_boxes, np.full(n, conf_flip), np.repeat(P, n, axis=0))
    assert got == pytest.approx(expected)


def test_cald_matches_each_box_to_its_best_iou_flip_box_and_takes_the_min():
    flip = np.concatenate([FAR, BOX])  # the right match is the second flip box
    probs_flip = np.array([[0.1, 0.8], [0.8, 0.1]])
    got = cald_score(BOX, np.array([0.9]), P, flip, np.array([0.2, 0.9]), probs_flip)
    assert got == pytest.approx(0.4)
    two = np.concatenate([BOX, FAR])  # a second box at bracket 1.3 makes the image maximally uncertain
    got2 = cald_score(two, np.array([0.9, 0.3]), np.repeat(P, 2, 0), two, np.array([0.9, 0.3]), np.repeat(P, 2, 0))
    assert got2 == pytest.approx(1.0)


def test_cald_class_disagreement_moves_the_bracket():
    agree = cald_score(BOX, np.array([0.9]), P, BOX, np.array([0.9]), P)
    swap = cald_score(BOX, np.array([0.9]), P, BOX, np.array([0.9]), P[:, ::-1])
    assert swap > agree  # disagreeing classes pull the bracket from 1.9 toward the base point


def test_cald_registry_uses_the_flip_views_boxes_and_anchor_scores():
    p = crowd(1, 0.9)
    p.detections_flip = p.detections
    assert get_strategy("cald").score(p) == pytest.approx(0.4, abs=1e-6)
    p.detections_flip = Detections.empty()
    assert get_strategy("cald").score(p) == 1.0


# --- class rarity and PPAL difficulty ---------------------------------------------------------------------------


def test_rarity_weights_known_values():
    np.testing.assert_allclose(rarity_weights(np.array([99, 24, 0]), power=1.0), [1.0, 4.0, 100.0])
    np.testing.assert_allclose(rarity_weights(np.array([99, 24, 0])), [1.0, 2.0, 10.0])
    np.testing.assert_allclose(rarity_weights(np.array([7, 7, 7])), [1.0, 1.0, 1.0])


def test_class_weighted_entropy_known_value():
    got = class_weighted_entropy(np.array([0.5, 0.9]), np.array([0, 2]), np.array([1.0, 5.0, 3.0]))
    assert got == pytest.approx(np.log(2) + 3 * float(H(np.array(0.9))))


def one_box(class_id, conf=0.6, n_classes=3):
    p1 = background(n_classes)
    dets = Detections(BOX, np.array([conf]), np.array([class_id]), anchor=np.array([10]))
    return pred(p1, p1.copy(), dets=dets, source=f"box{class_id}")


def test_balanced_entropy_prefers_the_rare_class_and_degrades_to_entropy_sum():
    counts = np.array([200, 50, 0])
    strat = class_balanced_entropy(counts)
    assert strat.score(one_box(2)) > strat.score(one_box(1)) > strat.score(one_box(0))
    assert strat.score(one_box(0)) == pytest.approx(get_strategy("entropy_sum").score(one_box(0)))
    for p in (one_box(0), one_box(2), crowd(5, 0.4)):
        esum = get_strategy("entropy_sum").score(p)
        assert get_strategy("entropy_balanced").score(p) == pytest.approx(esum)
        assert class_balanced_entropy(np.array([3, 3, 3])).score(p) == pytest.approx(esum)
        assert get_strategy("entropy_ppal").score(p) == pytest.approx(esum)


def test_a_class_beyond_the_weights_weighs_one():
    strat = class_balanced_entropy(np.array([10, 0]))  # the model has a third class the counts do not know
    assert strat.score(one_box(2)) == pytest.approx(float(H(np.array(0.6))))


def test_class_difficulty_and_ppal_weights():
    d = class_difficulty(np.array([0.9, 0.7, 0.3, 0.2]), np.array([0, 0, 1, 1]), 3)
    np.testing.assert_allclose(d, [0.2, 0.75, 1.0])
    w = difficulty_weights(np.linspace(0, 1, 11))
    assert w[0] == pytest.approx(1.0) and w[-1] == pytest.approx(1.2)
    assert np.all(np.diff(w) > 0)


def test_ppal_strategy_weighs_the_hard_class_up_from_pool_predictions():
    pool = [one_box(0, conf=0.9), one_box(0, conf=0.8), one_box(1, conf=0.3)]
    np.testing.assert_allclose(pool_difficulty(pool, 3), [0.15, 0.7, 1.0], rtol=1e-6)
    strat = build_strategy("entropy_ppal", pool=pool)
    same_conf = [one_box(0, conf=0.5), one_box(1, conf=0.5)]
    assert strat.score(same_conf[1]) > strat.score(same_conf[0])
    assert strat.score(same_conf[1]) <= 1.2 * np.log(2) + 1e-9
    assert difficulty_calibrated_entropy().score(same_conf[1]) == pytest.approx(np.log(2))


def test_build_strategy_returns_the_registry_entry_without_round_data():
    assert build_strategy("margin") is STRATEGIES["margin"]
    assert build_strategy("entropy_balanced") is STRATEGIES["entropy_balanced"]
    assert build_strategy("entropy_ppal", pool=[]) is STRATEGIES["entropy_ppal"]
    assert build_strategy("entropy_balanced", labeled_counts=np.array([5, 1])) is not STRATEGIES["entropy_balanced"]
    with pytest.raises(ValueError, match="choose one of"):
        build_strategy("nope")


def test_every_new_strategy_is_registered_and_finite_on_an_empty_image():
    empty = pred(background(), background())
    for name in ("entropy_enms", "cald", "entropy_balanced", "entropy_ppal"):
        assert name in STRATEGIES
        assert np.isfinite(STRATEGIES[name].score(empty))
    assert STRATEGIES["entropy_enms"].score(empty) == 0.0
    assert STRATEGIES["cald"].score(empty) == 1.0  # CALD: no box, consistency 0, first in line
