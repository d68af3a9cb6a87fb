"""The simulation's report: intervals, labels to reach (interpolated, paired by seed, censored), effort."""

import math

import pytest

from detector_al.simulation.report import effort, labels_to_reach, paired_difference, report, savings, t_interval


def _runs(variant, seed, curve, **extra):
    return [
        {"seed": seed, "variant": variant, "round": i, "labeled": n, "map50": m, "map50_95": m / 2, "val_map50": m}
        | extra
        for i, (n, m) in enumerate(curve)
    ]


def test_t_interval_matches_the_t_table():
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])
    assert mean - lo == pytest.approx(hi - mean)
    assert mean == 2.0
    assert hi - mean == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)  # t_{0.975,2}, sd 1
    assert math.isnan(t_interval([1.0])[1])
    assert math.isnan(t_interval([])[0])


def test_labels_to_reach_interpolates_between_budgets():
    curve = {40: 0.5, 60: 0.6, 80: 0.8}
    assert labels_to_reach(curve, 0.7) == pytest.approx(70.0)
    assert labels_to_reach(curve, 0.4) == 40.0
    assert labels_to_reach(curve, 0.9) == math.inf


def test_savings_are_paired_by_seed_and_censored_when_never_reached():
    results = {
        "runs": _runs("random", 0, [(40, 0.5), (60, 0.6), (80, 0.7)])
        + _runs("random", 1, [(40, 0.4), (60, 0.5), (80, 0.9)])
        + _runs("good", 0, [(40, 0.5), (60, 0.7), (80, 0.75)])  # reaches seed 0's 0.7 at 60
        + _runs("good", 1, [(40, 0.4), (60, 0.9), (80, 0.95)])  # reaches seed 1's 0.9 at 60
        + _runs("bad", 0, [(40, 0.5), (60, 0.55), (80, 0.6)])  # never reaches 0.7
        + _runs("bad", 1, [(40, 0.4), (60, 0.5), (80, 0.9)])
    }
    s = savings(results)
    assert s["good"]["per_seed"] == {0: 60.0, 1: 60.0}
    assert s["good"]["saving"][0] == pytest.approx(0.25)
    assert s["bad"]["censored"] == 1 and s["bad"]["per_seed"][0] == math.inf
    assert s["bad"]["saving"][0] == pytest.approx(0.0)
    diff = paired_difference(results, "good", "random")
    assert diff[60][0] == pytest.approx(0.25) and diff[40][0] == pytest.approx(0.0)
    assert "good" in report(results)


def test_effort_sums_rounds_and_pseudo_precision():
    runs = _runs("v+ceal", 0, [(40, 0.5), (60, 0.6)], drawn=10, corrections=4, pseudo_boxes=5, pseudo_right=4)
    e = effort({"runs": runs})["v+ceal"]
    assert e["drawn"][0] == 20 and e["corrections"][0] == 8
    assert e["pseudo_precision"][0] == pytest.approx(0.8)


def test_delta_labels_is_paired_against_the_baselines_own_crossing():
    results = {
        "runs": _runs("random", 0, [(40, 0.5), (60, 0.7), (80, 0.6), (100, 0.7)])  # reaches its 0.7 at 60
        + _runs("v", 0, [(40, 0.5), (60, 0.6), (80, 0.7), (100, 0.8)])  # at 80
        + _runs("never", 0, [(40, 0.5), (60, 0.5), (80, 0.5), (100, 0.5)])
    }
    s = savings(results)
    assert s["v"]["delta_labels"][0] == pytest.approx(20.0)
    assert s["never"]["delta_labels"][0] == pytest.approx(120.0 - 60.0)  # capped one round past the budget


def test_the_calibrated_box_confidence_is_reported_with_the_rounds_that_found_one():
    rows = _runs("random", 0, [(40, 0.5), (60, 0.6)], pseudo_threshold=None)  # every row has the key
    rows += _runs("random+boxes", 0, [(40, 0.5), (60, 0.6), (80, 0.7)])
    for r, t in zip(rows[2:], (None, None, 0.5), strict=True):
        r["pseudo_threshold"] = t
    rows.append({**rows[-1], "seed": 1, "pseudo_threshold": 0.7})
    work = effort({"runs": rows})
    assert work["random"]["box_thresholds"] == "-"
    assert work["random+boxes"]["box_thresholds"] == "0.60 (0.50-0.70), 2/3 rounds"  # round 0 never calibrates
    assert "0.60 (0.50-0.70), 2/3 rounds" in report({"runs": rows})


def test_effort_to_reach_counts_the_corrections_spent_so_far_paired_by_seed():
    # the same mAP per round; "cheap" needs 5 corrections per image, random 10: half the effort to any mAP
    random = _runs("random", 0, [(40, 0.5), (60, 0.6), (80, 0.7)], corrections=200, drawn=200)
    cheap = _runs("cheap", 0, [(40, 0.5), (60, 0.6), (80, 0.7)], corrections=100, drawn=300)
    for rows in (random, cheap):
        rows[0]["corrections"] = rows[0]["drawn"] = 400  # the initial set, drawn by hand by every variant
    results = {"runs": random + cheap}
    by_fixes = savings(results, x="corrections")
    assert by_fixes["random"]["per_seed"] == {0: 800.0}  # 400 + 200 + 200
    assert by_fixes["cheap"]["per_seed"] == {0: 600.0}  # 400 + 100 + 100
    assert by_fixes["cheap"]["delta_labels"][0] == pytest.approx(-200.0)
    assert by_fixes["cheap"]["saving"][0] == pytest.approx(0.25)
    assert savings(results, x="drawn")["cheap"]["per_seed"] == {0: 1000.0}  # more boxes: no saving by hand
    assert savings(results)["cheap"]["saving"][0] == pytest.approx(0.0)  # and none in images
    assert "**Effort to reach" in report(results)
