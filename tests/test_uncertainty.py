"""Strategies: known answers and invariants of the MI-AOD score and the baselines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from detector_al.model.predictions import Detections
from detector_al.policy.formulas.box_uncertainty import binary_entropy, box_entropy, box_margin
from detector_al.policy.strategies import (
    STRATEGIES,
    anchor_discrepancy,
    get_strategy,
    mi_aod_score,
    mil_weights,
    random_score,
    unweighted_discrepancy,
)
from tests.factories import GRID, background, levels

OBJ = 40  # an anchor index inside level 0


def scene_with_object(p_view1: float, p_view2: float, seed: int = 0):
    p1, p2 = background(seed=seed), background(seed=seed)
    p1[OBJ, 0], p2[OBJ, 0] = p_view1, p_view2
    return p1, p2


def test_anchor_discrepancy_known_value():
    p1 = np.array([[0.9, 0.1], [0.2, 0.2]])
    p2 = np.array([[0.5, 0.1], [0.2, 0.2]])
    np.testing.assert_allclose(anchor_discrepancy(p1, p2), [0.16 / 2, 0.0])


def test_mil_weights_sum_to_one_per_level_and_favour_objects():
    p1, p2 = scene_with_object(0.8, 0.8)
    lvl = levels()
    w = mil_weights(p1, p2, lvl)
    for i in range(len(GRID)):
        assert w[lvl == i].sum() == pytest.approx(1.0)
    assert w[OBJ] > 0.99


def test_background_discrepancy_barely_moves_mi_aod_but_moves_unweighted_mean():
    p1, p2 = scene_with_object(0.7, 0.4)
    lvl = levels()
    noisy2 = p2.copy()
    bg = np.ones(len(p2), bool)
    bg[OBJ] = False
    rng = np.random.default_rng(1)
    noisy2[bg] = np.clip(noisy2[bg] + rng.uniform(0.0, 0.08, noisy2[bg].shape), 0, 1)  # stays "background" (< 0.1)
    base_w, noisy_w = mi_aod_score(p1, p2, lvl), mi_aod_score(p1, noisy2, lvl)
    base_u, noisy_u = unweighted_discrepancy(p1, p2), unweighted_discrepancy(p1, noisy2)
    assert abs(noisy_w - base_w) / base_w < 0.05
    assert abs(noisy_u - base_u) / base_u > 1.0


def test_adding_background_area_leaves_mi_aod_nearly_unchanged():
    small_grid = GRID
    big_grid = [(32, 32), (16, 16), (8, 8)]
    p1, p2 = scene_with_object(0.7, 0.4)
    q1, q2 = background(grid=big_grid), background(grid=big_grid)
    q1[OBJ, 0], q2[OBJ, 0] = 0.7, 0.4
    s_small = mi_aod_score(p1, p2, levels(small_grid))
    s_big = mi_aod_score(q1, q2, levels(big_grid))
    assert s_big == pytest.approx(s_small, rel=0.02)
    assert unweighted_discrepancy(q1, q2) < 0.5 * unweighted_discrepancy(p1, p2)


def test_disagreed_object_scores_higher_than_consistent_one():
    agree = mi_aod_score(*scene_with_object(0.6, 0.6), levels())
    disagree = mi_aod_score(*scene_with_object(0.8, 0.4), levels())
    assert disagree > 10 * max(agree, 1e-9)


TINY = [(4, 4), (2, 2), (1, 1)]
probs = arrays(np.float64, (21, 3), elements=st.floats(0, 1))


@settings(max_examples=60, deadline=None)
@given(p1=probs, p2=probs, temperature=st.floats(0.005, 1.0))
def test_mi_aod_is_symmetric_in_the_views_and_bounded(p1, p2, temperature):
    s12 = mi_aod_score(p1, p2, levels(TINY), temperature)
    s21 = mi_aod_score(p2, p1, levels(TINY), temperature)
    assert s12 == pytest.approx(s21, rel=1e-9, abs=1e-12)
    assert 0.0 <= s12 <= 1.0


def test_identical_views_score_zero():
    p = background(noise=0.3)
    assert mi_aod_score(p, p, levels()) == 0.0


@pytest.mark.parametrize(
    ("confidence", "how", "expected"),
    [
        ([0.5], "sum", np.log(2)),
        ([0.5, 0.5], "sum", 2 * np.log(2)),
        ([0.5, 0.99], "max", np.log(2)),
        ([], "mean", 0.0),
    ],
)
def test_box_entropy(confidence, how, expected):
    assert box_entropy(np.array(confidence), how) == pytest.approx(expected)


def test_binary_entropy_peaks_at_half():
    h = binary_entropy(np.array([0.0, 0.1, 0.5, 0.9, 1.0]))
    assert h.argmax() == 2 and h[0] == pytest.approx(0, abs=1e-9) and h[1] == pytest.approx(h[3])


def test_margin_is_high_when_top_two_classes_tie():
    tie = box_margin(np.array([[0.5, 0.5, 0.0]]))
    clear = box_margin(np.array([[0.9, 0.05, 0.0]]))
    assert tie == pytest.approx(1.0) and clear == pytest.approx((1 - 0.85) ** 2)


def test_random_is_deterministic_and_uniformish():
    vals = np.array([random_score(f"img{i}") for i in range(2000)])
    assert random_score("img3") == vals[3]
    assert 0.45 < vals.mean() < 0.55
    assert random_score("img3", seed=1) != vals[3]


def test_registry_names_and_errors():
    from tests.factories import pred

    p1, p2 = scene_with_object(0.8, 0.4)
    dets = Detections(np.array([[0, 0, 10, 10]]), np.array([0.6]), np.array([0]), anchor=np.array([OBJ]))
    p = pred(p1, p2, dets=dets)
    for name, strategy in STRATEGIES.items():
        value = strategy.score(p)
        assert np.isfinite(value), name
    assert get_strategy("mi_aod").score(p) == pytest.approx(mi_aod_score(p1, p2, levels()))
    with pytest.raises(ValueError, match="choose one of: mi_aod"):
        get_strategy("nope")
