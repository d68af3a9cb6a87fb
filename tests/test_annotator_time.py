"""Annotator time: robust statistics, the projection, the NNLS cost fit (recovering known seconds), the record of an
annotation from Label Studio objects, the store's rows, and the webhook -> /status path (TestClient)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from detector_al.label_studio.config import parse_label_config
from detector_al.label_studio.lead_times import (
    annotation_time,
    listed_annotation_times,
    record_listed,
    seconds,
    shown_from,
    started_from,
)
from detector_al.policy.annotator_cost import ACTION_SECONDS, Actions, CostModel
from detector_al.queue.build import AUTO_ACCEPT, QUERY, REST
from detector_al.signals.annotator_time import (
    MIN_FIT,
    AnnotationTime,
    export,
    fit_cost_model,
    nnls,
    project_time,
    summary,
    upper_outliers,
)
from detector_al.state.annotation_times import LISTING, WEBHOOK, AnnotationTimes
from detector_al.state.store import Store

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="circle"/><Label value="square"/></RectangleLabels></View>'
)
TARGET = parse_label_config(CONFIG, ("circle", "square"))


def region(x, y, w, h, label="circle") -> dict:
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]},
    }


def timed(seconds_list, **kw) -> list[AnnotationTime]:
    return [AnnotationTime(i, i, t, **kw) for i, t in enumerate(seconds_list)]


# ---- robust statistics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lead_times", "outliers"),
    [
        ([10, 20, 30, 40, 50], []),
        ([10, 20, 30, 40, 50, 3600], [5]),  # a tab left open
        ([30, 31, 29, 30, 32, 30, 900, 28], [6]),
        ([2, 30, 31, 29, 30], []),  # fast is not an outlier: only the high side is
        ([30, 30, 30, 30, 45], []),  # MAD 0: its floor keeps 1.5x in
        ([30, 30, 30, 30, 120], [4]),
        ([5, 4000], []),  # fewer than 3: none
    ],
)
def test_upper_outliers_follow_the_modified_z_score_of_log_seconds(lead_times, outliers):
    assert np.flatnonzero(upper_outliers(timed(lead_times))).tolist() == outliers


def test_the_issue_check_five_annotations_have_median_30():
    recs = timed([10, 20, 30, 40, 50])
    assert summary(recs, upper_outliers(recs)) == {"annotations": 5, "median_s": 30.0, "mean_s": 30.0, "outliers": 0}


def test_skips_are_time_spent_not_labels_and_untimed_annotations_count_nowhere():
    recs = [
        *timed([10, 20, 30, 40, 50]),
        AnnotationTime(10, 10, 100.0, skipped=True),
        AnnotationTime(11, 11, None),  # imported: no lead_time
        AnnotationTime(12, 12, None, skipped=True),
    ]
    t = project_time(recs, {QUERY: 0, REST: 0, AUTO_ACCEPT: 0})
    assert (t["annotations"], t["median_s"], t["skipped"], t["without_lead_time"]) == (5, 30.0, 1, 2)
    assert t["spent_h"] == pytest.approx((150 + 100) / 3600, abs=1e-3)


def test_an_outlier_counts_as_a_typical_annotation_in_the_time_spent():
    recs = timed([10, 20, 30, 40, 50, 3600])
    t = project_time(recs, {})
    assert (t["annotations"], t["median_s"], t["mean_s"], t["outliers"]) == (6, 35.0, 30.0, 1)
    assert t["spent_h"] == pytest.approx(6 * 30 / 3600, abs=1e-3)


def test_groups_by_model_version_and_queue_band():
    recs = [
        *(AnnotationTime(i, i, 20.0, model_version="v1", band=QUERY) for i in range(3)),
        *(AnnotationTime(10 + i, 10 + i, 10.0, model_version="v2", band=AUTO_ACCEPT) for i in range(2)),
        AnnotationTime(20, 20, 60.0),  # started from no (known) prediction
    ]
    t = project_time(recs, {})
    assert {k: v["median_s"] for k, v in t["by_model_version"].items()} == {"v1": 20.0, "v2": 10.0, "none": 60.0}
    assert {k: v["annotations"] for k, v in t["by_band"].items()} == {"batch": 3, "auto_accepted": 2, "none": 1}


def test_the_projection_prices_each_band_at_its_own_recent_rate_or_the_overall_one():
    recs = [
        *(AnnotationTime(i, i, 40.0, band=QUERY) for i in range(5)),
        *(AnnotationTime(10 + i, 10 + i, 10.0, band=REST) for i in range(5)),
        AnnotationTime(30, 30, 4.0, band=AUTO_ACCEPT),  # one is too few for a band rate: the overall mean is used
    ]
    overall = (5 * 40 + 5 * 10 + 4) / 11
    p = project_time(recs, {QUERY: 2, REST: 10, AUTO_ACCEPT: 3})["projection"]
    assert p["tasks"] == 15 and p["tasks_by_band"] == {"batch": 2, "uncertain": 10, "auto_accepted": 3}
    assert p["seconds_per_task"]["auto_accepted"] == pytest.approx(overall, abs=0.01)
    assert p["hours"] == pytest.approx((2 * 40 + 10 * 10 + 3 * overall) / 3600, abs=0.01)
    assert project_time(timed([10, 20]), {REST: 5})["projection"]["hours"] is None  # too few to know a rate


def test_seconds_per_box_drawn_and_kept_come_from_the_images_that_only_drew_or_only_kept():
    recs = [
        AnnotationTime(1, 1, 60.0, edit=Actions(1, draw=2)),
        AnnotationTime(2, 2, 90.0, edit=Actions(1, draw=3)),
        AnnotationTime(3, 3, 8.0, edit=Actions(1, verify=4)),
        AnnotationTime(4, 4, 50.0, edit=Actions(1, draw=1, verify=1)),  # mixed: in neither
    ]
    assert project_time(recs, {})["per_box"] == {"drawn_s": 30.0, "kept_s": 2.0, "drawn_images": 2, "kept_images": 1}


# ---- the fit -------------------------------------------------------------------------------------------------


def brute_force_nnls(a, b):
    """The least-squares solution over every subset of free columns that is non-negative: the best of them."""
    best, best_res = np.zeros(a.shape[1]), np.sum(b**2)
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            x = np.zeros(a.shape[1])
            x[list(cols)] = np.linalg.lstsq(a[:, cols], b, rcond=None)[0]
            res = np.sum((a @ x - b) ** 2)
            if x.min() >= -1e-12 and res < best_res - 1e-9:
                best, best_res = x, res
    return best


@pytest.mark.parametrize("seed", range(8))
def test_nnls_finds_the_best_non_negative_solution(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(20, 5))
    b = rng.normal(size=20) * 3
    x = nnls(a, b)
    assert x.min() >= 0
    np.testing.assert_allclose(x, brute_force_nnls(a, b), atol=1e-6)


TRUE_SECONDS = [
    {"look_image": 3.0, "draw_box": 25.5, "adjust_box": 7.0, "delete_box": 2.0, "change_class": 3.0, "verify_box": 1.6},
    {"look_image": 6.0, "draw_box": 12.0, "adjust_box": 4.0, "delete_box": 1.0, "change_class": 5.0, "verify_box": 0.5},
]


def constructed(truth: dict, n: int, seed: int, noise: float) -> list[AnnotationTime]:
    """Annotations whose lead_time is the cost model's seconds of random action counts, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    cost = CostModel(**truth)
    out = []
    for i in range(n):
        a = Actions(1, *rng.poisson([1.5, 0.8, 0.6, 0.4, 3.0]).tolist())
        out.append(AnnotationTime(i, i, max(cost.seconds(a) + rng.normal(0, noise), 0.0), edit=a))
    return out


@pytest.mark.parametrize("truth", TRUE_SECONDS)
def test_the_fit_recovers_known_per_action_seconds(truth):
    fit = fit_cost_model(constructed(truth, 400, seed=1, noise=2.0))
    assert fit is not None and fit.annotations == 400 and fit.not_fitted == ()
    for action, true in truth.items():
        assert fit.seconds[action] == pytest.approx(true, abs=1.0), action
        assert fit.low[action] <= fit.seconds[action] <= fit.high[action]
    exact = fit_cost_model(constructed(truth, 60, seed=2, noise=0.0))
    for action, true in truth.items():
        assert exact.seconds[action] == pytest.approx(true, abs=1e-6)


def test_the_95_percent_interval_covers_the_true_seconds_about_95_percent_of_the_time():
    covered = []
    for seed in range(20):
        truth = TRUE_SECONDS[seed % 2]
        fit = fit_cost_model(constructed(truth, 200, seed=100 + seed, noise=2.0))
        covered += [fit.low[a] <= true <= fit.high[a] for a, true in truth.items()]
    assert 0.85 <= np.mean(covered) <= 1.0, np.mean(covered)  # 120 intervals; nominal 0.95


def test_no_fit_below_the_minimum_and_rare_actions_keep_the_literature(tmp_path):
    assert fit_cost_model(constructed(TRUE_SECONDS[1], MIN_FIT - 1, seed=0, noise=1.0)) is None
    rows = [
        AnnotationTime(i, i, 5.0 + 10.0 * d + 1.0 * v, edit=Actions(1, draw=d, verify=v))
        for i, (d, v) in enumerate(itertools.product(range(6), range(6)))
    ]
    fit = fit_cost_model(rows)
    assert set(fit.not_fitted) == {"adjust_box", "delete_box", "change_class"}
    assert fit.seconds == pytest.approx({"look_image": 5.0, "draw_box": 10.0, "verify_box": 1.0})
    path = tmp_path / "cost.json"
    path.write_text(json.dumps(export(fit, 3)))
    model = CostModel.from_file(path)  # what simulate --cost-model and entropy_roi:FILE read
    assert (model.draw_box, model.verify_box, model.look_image) == pytest.approx((10.0, 1.0, 5.0))
    assert (model.adjust_box, model.delete_box) == (CostModel().adjust_box, CostModel().delete_box)


def test_status_shows_the_fit_beside_the_literature_once_there_are_enough_annotations():
    cm = project_time(constructed(TRUE_SECONDS[1], MIN_FIT, seed=3, noise=0.5), {})["cost_model"]
    assert cm["annotations"] == MIN_FIT and cm["fitted"] is not None
    assert set(cm["fitted"]) == {s for _, s in ACTION_SECONDS} == set(cm["literature"])
    assert all(f["low"] <= f["seconds"] <= f["high"] for f in cm["fitted"].values())
    assert project_time(timed([10, 20]), {})["cost_model"]["fitted"] is None


# ---- from Label Studio objects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12, 12.0), (0.5, 0.5), (0, 0.0), (None, None), (-3, None), (math.nan, None), (math.inf, None), ("9", None)],
)
def test_lead_time_is_a_finite_non_negative_number_or_nothing(value, expected):
    assert seconds(value) == expected
    assert seconds(True) is None


PREDICTION = {
    "id": 70,
    "model_version": "v1-abc",
    "score": 0.05,
    "created_at": "2026-12-06T10:00:00Z",
    "result": [region(10, 10, 20, 20), region(50, 50, 10, 10, "square"), region(80, 5, 10, 10)],
}


@pytest.mark.parametrize(
    ("result", "edit"),
    [
        (PREDICTION["result"], Actions(1, verify=3)),  # submitted as shown
        ([], Actions(1, delete=3)),
        (
            [region(10, 10, 20, 20), region(50.5, 50.5, 10, 10), region(30, 70, 10, 10)],  # relabel, delete, draw
            Actions(1, draw=1, delete=1, relabel=1, verify=1),
        ),
        ([region(10, 10, 20, 30), *PREDICTION["result"][1:]], Actions(1, adjust=1, verify=2)),  # IoU 0.67 < 0.7
        ([region(10, 10, 20, 24), *PREDICTION["result"][1:]], Actions(1, verify=3)),  # IoU 0.83: tight, kept
    ],
)
def test_the_edit_from_the_prediction_shown_is_the_cost_models_matching(result, edit):
    ann = {"id": 1, "lead_time": 30, "result": result, "created_at": "2026-12-06T10:05:00Z"}
    rec = annotation_time(ann, 9, shown_from(ann, [PREDICTION], TARGET), TARGET)
    assert rec.edit == edit
    assert (rec.model_version, rec.band, rec.shown, rec.boxes) == ("v1-abc", QUERY, 3, len(result))


def test_the_prediction_started_from_is_the_parent_else_the_newest_made_before():
    older = {**PREDICTION, "id": 60, "created_at": "2026-12-06T09:00:00Z", "model_version": "v0"}
    later = {**PREDICTION, "id": 80, "created_at": "2026-12-06T11:00:00Z", "model_version": "v2"}
    preds = [older, PREDICTION, later]
    made = "2026-12-06T10:30:00+00:00"
    assert started_from({"created_at": made}, preds)["id"] == 70
    assert started_from({"created_at": made, "parent_prediction": 60}, preds)["id"] == 60
    assert started_from({"created_at": "2026-12-06T08:00:00Z"}, preds) is None  # all made after it
    assert started_from({}, preds)["id"] == 80
    scratch = annotation_time(
        {"id": 2, "lead_time": 40, "result": [region(1, 1, 5, 5)]}, 9, shown_from({}, [], TARGET), TARGET
    )
    assert scratch.edit == Actions(1, draw=1) and scratch.model_version is None and scratch.shown == 0


def test_a_skip_has_no_edit_and_a_malformed_result_no_boxes_to_match():
    skip = annotation_time(
        {"id": 3, "lead_time": 9, "was_cancelled": True}, 9, shown_from({}, [PREDICTION], TARGET), TARGET
    )
    assert skip.skipped and skip.edit is None and skip.lead_time == 9.0
    malformed = {"type": "rectanglelabels", "from_name": "label", "value": {"rectanglelabels": ["circle"]}}
    bad = {"id": 4, "lead_time": 9, "result": [malformed, 7]}
    rec = annotation_time(bad, 9, shown_from({}, [PREDICTION], TARGET), TARGET)
    assert rec.edit is None and rec.lead_time == 9.0
    assert annotation_time({"lead_time": 3}, 9, None, TARGET) is None  # no id: nothing to record


def test_a_listed_task_gives_every_annotation_and_the_listing_is_recorded():
    task = {
        "id": 9,
        "predictions": [PREDICTION],
        "annotations": [
            {"id": 1, "lead_time": 12.0, "result": PREDICTION["result"], "completed_by": {"id": 4, "email": "a@b"}},
            {"id": 2, "lead_time": 7.0, "was_cancelled": True, "result": []},
        ],
    }
    recs = listed_annotation_times(task, TARGET)
    assert [(r.annotation_id, r.skipped, r.annotator) for r in recs] == [(1, False, 4), (2, True, None)]
    store = Store(":memory:")
    assert record_listed(store, 5, [task], TARGET) == 2
    assert record_listed(store, 5, [{"no": "id"}], TARGET) == 0  # a failure is logged, never raised
    assert [r.edit for r in AnnotationTimes(store).records(5)] == [Actions(1, verify=3), None]


# ---- the store -----------------------------------------------------------------------------------------------


def test_a_row_is_replaced_by_a_newer_version_or_by_more_knowledge_never_by_less():
    store = Store(":memory:")
    times = AnnotationTimes(store)
    base = AnnotationTime(1, 9, 30.0, model_version="v1", band=REST, shown=2, updated_at="2026-12-06T10:00:00+00:00")
    with_edit = AnnotationTime(**{**base.__dict__, "edit": Actions(1, verify=2)})
    times.record(3, [with_edit], LISTING)
    times.record(3, [base], WEBHOOK)  # the same version knowing less (the store's guess): kept as it was
    assert times.records(3)[0].edit == Actions(1, verify=2)
    newer = AnnotationTime(**{**base.__dict__, "lead_time": 45.0, "updated_at": "2026-12-06T11:00:00+00:00"})
    times.record(3, [newer], WEBHOOK)
    times.record(3, [with_edit], LISTING)  # an older version arriving late: ignored
    (row,) = times.records(3)
    assert (row.lead_time, row.edit, row.band) == (45.0, None, REST)
    store.record_event("ANNOTATIONS_DELETED", 3, None, None, deleted_annotations=[1])
    store.record_event("ANNOTATION_CREATED", 3, 9, 1)  # (annotations rows exist once an event named them)
    store.record_event("ANNOTATIONS_DELETED", 3, None, None, deleted_annotations=[1])
    assert times.records(3) == []  # deleted in Label Studio: counts nowhere


# ---- webhook -> /status --------------------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path, trained_weights):
    from fastapi.testclient import TestClient

    from ml_backend.main import create_app
    from ml_backend.settings import Settings

    with TestClient(create_app(Settings(model_dir=tmp_path / "models", model_path=str(trained_weights)))) as c:
        yield c


def test_webhook_annotations_reach_status_with_their_median(client):
    project = {"id": 7, "label_config": CONFIG}
    for i, t in enumerate([10, 20, 30, 40, 50]):
        body = {
            "action": "ANNOTATION_CREATED",
            "project": project,
            "task": {"id": 100 + i},
            "annotation": {"id": 500 + i, "lead_time": t, "result": [region(10, 10, 20, 20)], "completed_by": 1},
        }
        assert client.post("/webhook", json=body).status_code == 200
    for body in (
        {"annotation": {"id": 600, "lead_time": 80, "was_cancelled": True, "result": []}, "task": {"id": 200}},
        {"annotation": {"id": 601, "lead_time": "soon", "result": []}, "task": {"id": 201}},  # no measurement
        {"annotation": {"id": 602, "lead_time": -4, "result": []}, "task": {"id": 202}},
    ):
        assert (
            client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": project, **body}).status_code
            == 200
        )
    status = client.get("/status").json()["annotator_time"]
    t = status["projects"]["7"]
    assert (t["annotations"], t["median_s"], t["mean_s"], t["skipped"], t["without_lead_time"]) == (5, 30, 30, 1, 2)
    assert t["by_model_version"] == {"none": {"annotations": 5, "median_s": 30.0, "mean_s": 30.0, "outliers": 0}}
    assert "median" in status["statistic"]
    assert "per_box" in t and "projection" in t and t["cost_model"]["fitted"] is None
    assert client.get("/cost-model", params={"project": 7}).status_code == 404
    page = client.get("/dashboard").text
    assert 'id="annotator-time"' in page and "30.0 s" in page


# ---- the exported file: simulate --cost-model and entropy_roi:FILE -------------------------------------------


@pytest.fixture
def exported(tmp_path):
    """A backend store whose project 3 has enough timed annotations, and the file `detector-al cost-model` wrote."""
    from typer.testing import CliRunner

    from detector_al.cli.app import app

    truth = {
        "look_image": 2.0,
        "draw_box": 40.0,
        "adjust_box": 5.0,
        "delete_box": 1.0,
        "change_class": 4.0,
        "verify_box": 0.5,
    }
    AnnotationTimes(Store(tmp_path / "models" / "detector_al.sqlite3")).record(
        3, constructed(truth, 80, seed=5, noise=0.5), WEBHOOK
    )
    runner = CliRunner()
    out = tmp_path / "cost.json"
    args = ["cost-model", "--model-dir", str(tmp_path / "models"), "--out", str(out)]
    res = runner.invoke(app, [*args, "--project", "3"])
    assert res.exit_code == 0, res.output
    assert "draw_box" in res.output and "literature" in res.output
    refused = runner.invoke(app, [*args, "--project", "4"])  # nothing recorded: no fit, a clear message
    assert refused.exit_code == 2 and "the fit needs 30" in refused.output
    return out, truth


def test_the_exported_file_prices_like_the_fitted_seconds(exported):
    path, truth = exported
    model = CostModel.from_file(path)
    for action, true in truth.items():
        assert getattr(model, action) == pytest.approx(true, abs=0.5), action
    assert json.loads(path.read_text())["annotations"] == 80


def test_entropy_roi_takes_the_fitted_file_wherever_a_strategy_is_named(exported, tmp_path):
    from types import SimpleNamespace

    from detector_al.policy.formulas.box_uncertainty import box_entropy
    from detector_al.policy.formulas.cost_aware import expected_seconds
    from detector_al.policy.strategies import get_strategy, serving_strategy
    from detector_al.simulation.config import parse_variant

    path, _ = exported
    name = f"entropy_roi:{path}"
    conf = np.array([0.9, 0.4, 0.1], np.float32)
    pred = SimpleNamespace(detections=SimpleNamespace(confidence=conf))
    fitted, literature = serving_strategy(name), serving_strategy("entropy_roi")
    value = box_entropy(conf, "sum")
    assert fitted.score(pred) == pytest.approx(value / expected_seconds(conf, cost=CostModel.from_file(path)))
    assert literature.score(pred) == pytest.approx(value / expected_seconds(conf))
    assert fitted.score(pred) != pytest.approx(literature.score(pred))
    assert get_strategy(name).name == name and parse_variant(f"{name}+cold") == (name, {"cold"})
    with pytest.raises(ValueError, match="cannot read the cost-model file"):
        serving_strategy(f"entropy_roi:{tmp_path / 'absent.json'}")


def test_simulate_accepts_the_exported_file_as_cost_model_and_in_a_variant(exported, tmp_path):
    from typer.testing import CliRunner

    from detector_al.cli.app import app

    path, _ = exported
    args = ["simulate", str(tmp_path / "no-dataset"), "--out", str(tmp_path / "sim"), "--cost-model", str(path)]
    res = CliRunner().invoke(app, [*args, "--variants", f"random,entropy_roi:{path}"])
    assert res.exit_code == 2 and "DATASET" in res.output, res.output  # both accepted: only the dataset is missing
    bad = CliRunner().invoke(app, [*args[:-2], "--cost-model", str(tmp_path / "absent.json")])
    assert bad.exit_code == 2 and "--cost-model" in bad.output


def test_the_dashboard_plots_seconds_per_version_and_shows_the_fit_beside_the_literature():
    from detector_al.policy.ceal import CealConfig
    from detector_al.signals.dashboard import project_overview
    from ml_backend.dashboard_page import render

    store = Store(":memory:")
    records = constructed(TRUE_SECONDS[1], 40, seed=4, noise=0.5)
    versions = [AnnotationTime(**{**r.__dict__, "model_version": f"v{r.annotation_id % 2}"}) for r in records]
    AnnotationTimes(store).record(3, versions, WEBHOOK)
    store.set_project(3, round=1)
    overview = project_overview(store, 3, "v1", {}, CealConfig(), ("circle", "square"))
    assert set(overview["annotator_time"]["by_model_version"]) == {"v0", "v1"}
    page = render([overview], "v1", None)
    start = page.index('id="annotator-time"')
    card = page[start : page.index('<div class="card"', start)]
    assert card.count("<rect") == 2  # one bar per model version
    assert "draw_box" in card and "literature s" in card and 'href="cost-model?project=3"' in card
