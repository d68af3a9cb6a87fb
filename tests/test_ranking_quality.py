"""The screen's statistics: AUC (ties count half), its bootstrap interval, rank correlation."""

import numpy as np
import pytest

from detector_al.simulation.ranking_quality import auc, auc_interval, spearman


def test_auc_counts_pairs_and_half_ties():
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0]), np.array([1.0, 2.0])) == pytest.approx(0.25)
    assert np.isnan(auc(np.array([]), np.array([1.0])))


def test_auc_interval_brackets_a_perfect_ranking_and_spearman_sees_order():
    score = np.arange(40, dtype=float)
    wrong = score >= 20
    lo, hi = auc_interval(score, wrong, np.random.default_rng(0), n=200)
    assert lo == hi == 1.0
    assert spearman(score, score**3) == pytest.approx(1.0)
    assert spearman(score, -score) == pytest.approx(-1.0)
