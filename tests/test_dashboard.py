"""The dashboard and its signals: the stopping rule and the label review on hand-built boxes, and the page (and
/status, its twin) for a project with no training, one mid-training and one after several rounds."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from detector_al.model.predictions import Detections
from detector_al.signals.label_errors import LabelErrors, find_label_errors
from detector_al.signals.stopping import agreement, stop_set, stopping_state
from detector_al.state.signals import Signals, boxes_from_json, boxes_to_json
from detector_al.state.store import PoolRow
from ml_backend.main import create_app
from ml_backend.settings import Settings


def dets(boxes, classes, conf=None) -> Detections:
    b = np.array(boxes, np.float32).reshape(-1, 4)
    c = np.ones(len(b), np.float32) if conf is None else np.array(conf, np.float32)
    return Detections(b, c, np.array(classes, np.int64))


A = dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])


@pytest.mark.parametrize(
    ("a", "b", "f1"),
    [
        ([A], [A], 1.0),
        ([A], [dets([[0, 0, 10, 10]], [0])], 2 * 1 / 3),
        ([A], [dets([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 0])], 0.0),  # same places, classes swapped
        ([Detections.empty()], [Detections.empty()], 1.0),  # neither sees anything: agreement
        ([A, Detections.empty()], [A, dets([[50, 50, 60, 60]], [0])], 2 * 2 / 5),
    ],
)
def test_agreement_is_the_box_f1_of_two_models(a, b, f1):
    assert agreement(a, b) == pytest.approx(f1)


@pytest.mark.parametrize(
    ("history", "stop", "streak"),
    [
        ([], False, 0),
        ([0.95], False, 1),
        ([0.95, 0.92], True, 2),
        ([0.95, 0.92, 0.5], False, 0),
        ([0.5, 0.9, 0.9], True, 2),
    ],
)
def test_the_signal_fires_after_patience_rounds_at_or_above_the_threshold(history, stop, streak):
    s = stopping_state(history, threshold=0.9, patience=2)
    assert (s["stop"], s["streak"], s["rounds"]) == (stop, streak, len(history))


def test_the_stop_set_is_fixed_and_stable_as_tasks_arrive():
    first = stop_set(1, range(100), size=10)
    assert first == stop_set(1, reversed(range(100)), size=10) and len(first) == 10
    grown = stop_set(1, range(200), size=10)
    assert len(set(first) & set(grown)) >= 3  # new tasks enter only where their hash is smaller
    assert stop_set(2, range(100), size=10) != first  # seeded by the project


HUMAN = dets([[0, 0, 100, 100], [200, 200, 300, 300]], [0, 1])


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (dets([[0, 0, 100, 100], [200, 200, 300, 300]], [0, 1], [0.9, 0.9]), (0, 0, 0)),  # agrees
        (dets([[400, 400, 480, 480]], [0], [0.8]), (1, 0, 0)),  # a confident box nobody drew
        (dets([[400, 400, 480, 480]], [0], [0.3]), (0, 0, 0)),  # not confident: no flag
        (dets([[0, 0, 100, 100]], [1], [0.9]), (0, 1, 0)),  # same place, another class
        (dets([[60, 0, 160, 100]], [0], [0.9]), (0, 0, 1)),  # the human box is off the object (IoU 0.25)
    ],
)
def test_label_errors_find_overlooked_swapped_and_badly_located_boxes(model, expected):
    e = find_label_errors(model, HUMAN)
    assert (e.overlooked, e.swapped, e.located) == expected
    flagged = sum(expected)
    assert (e.score > 0) is (flagged > 0)


def test_boxes_round_trip_through_the_store_format():
    d = dets([[1.234, 2, 3, 4]], [2], [0.5])
    back = boxes_from_json(boxes_to_json(d))
    np.testing.assert_allclose(back.xyxy, [[1.23, 2, 3, 4]])
    assert back.class_id.tolist() == [2] and len(boxes_from_json(boxes_to_json(Detections.empty()))) == 0


@pytest.fixture
def backend(tmp_path, trained_weights):
    s = Settings(
        model_dir=tmp_path / "models", model_path=str(trained_weights), basic_auth_user="u", basic_auth_pass="p"
    )
    with TestClient(create_app(s, run_job=lambda job, report: {})) as c:
        c.auth = ("u", "p")
        yield c


def test_before_any_project_the_page_says_what_to_do_and_status_has_both_objects(backend):
    r = backend.get("/dashboard")
    assert r.status_code == 200 and "No project yet" in r.text
    st = backend.get("/status").json()
    assert st["dashboard"] == "/dashboard"
    assert st["stopping"]["projects"] == {} and st["label_errors"]["projects"] == {} and "rule" in st["stopping"]
    assert TestClient(backend.app).get("/dashboard").status_code == 401  # behind the same basic auth


def _fill(store, version, project=7, rounds=((20, 0.41, True), (40, 0.55, True), (60, 0.58, False), (80, 0.63, True))):
    rng = np.random.default_rng(0)
    decisions = ["query"] * 5 + ["rest"] * 30 + ["auto_accept"] * 5
    store.record_predictions(
        project,
        [
            PoolRow(
                task_id=i,
                path=f"{i}.jpg",
                model_version=version,
                round=1,
                score=float(rng.gamma(2, 0.5)),
                confidence=0.2,
                decision=d,
                n_boxes=2,
            )
            for i, d in enumerate(decisions)
        ],
    )
    bad = PoolRow(task_id=99, path="bad.jpg", model_version=version, round=1, decision="error", error="truncated")
    store.record_predictions(project, [bad])
    for t in (200, 201, 202):
        store.record_event("ANNOTATION_CREATED", project, t, t)
    for k, (labeled, m, promoted) in enumerate(rounds):
        job, _ = store.enqueue_training(project, "START_TRAINING")
        store.claim_training()
        detail = {"labeled": labeled, "pseudo_labeled": k, "candidate": {"map50": m, "map50_95": m / 2}}
        detail |= {"serving": {"version": "v0", "map50": m - 0.05}, "promoted": promoted, "class_counts": [10, 5, 0]}
        store.finish_training(job, "done", model_version=f"v{k + 1}-0000000{k}", detail=detail)
    signals = Signals(store)
    for k, value in enumerate((0.7, 0.91, 0.95)):
        signals.record_agreement(project, f"v{k + 2}-x", f"v{k + 1}-x", value, 50, 40 + 20 * k)
    signals.record_label_errors(project, version, {200: (LabelErrors(1, 0, 0, 0.9), False), 201: (LabelErrors(), True)})


def test_after_several_rounds_the_page_shows_the_curve_versions_queue_stopping_and_label_errors(backend):
    state = backend.app.state.backend
    _fill(state.store, state.service.model_version)
    html = backend.get("/dashboard").text
    for version in ("v1-00000000", "v2-00000001", "v3-00000002", "v4-00000003"):
        assert version in html
    assert "kept the serving model" in html and html.count("<circle") >= 4 + 3  # curve points, agreement points
    assert ">35</div>" in html and ">5</div>" in html and ">3</div>" in html and ">1</div>" in html  # queue counts
    assert "STOP: more labels" in html and "1 of 2" in html  # flagged label errors: 1 of the 2 checked
    assert "circle" in html and "star" in html  # labels per class, the missing rare class shown as 0
    st = backend.get("/status").json()
    assert st["stopping"]["projects"]["7"]["stop"] is True and st["label_errors"]["projects"]["7"]["flagged"] == 1
    assert backend.get("/dashboard", params={"project": 8}).text.count("<section") == 0


def test_mid_training_the_page_shows_the_live_job_with_an_eta_and_refreshes(backend):
    state = backend.app.state.backend
    _fill(state.store, state.service.model_version, rounds=())
    state.worker._report(phase="training", project=7, job=3, epoch=4, epochs=10, started=0.0)
    state.worker._state["started"] = __import__("time").time() - 40  # 40 s for 4 epochs: 60 s to go
    html = backend.get("/dashboard").text
    assert "epoch 4 of 10" in html and 'http-equiv="refresh"' in html
    eta = float(html.split("ETA ")[1].split(" s")[0])
    assert 55 <= eta <= 70
    assert "no training yet" in html and "not measured yet" not in html  # agreements exist from _fill


def test_a_project_filled_by_ingest_shows_its_queue_before_any_prediction_request(backend):
    """``ingest`` records its tasks in the store's pool, not as /predict answers: they count all the same."""

    state = backend.app.state.backend
    v = state.service.model_version
    rows = [PoolRow(f"h{i}", i, f"{i}.jpg", score=0.1 * i, decision=d, model_version=v) for i, d in
            enumerate(["query", "query", "rest", "auto_accept"])]  # fmt: skip
    rows.append(PoolRow("bad", path="bad.jpg", error="truncated"))  # unreadable: no task
    state.store.record_ingested(9, rows)
    state.store.set_project(9, round=0)
    state.store.record_event("ANNOTATION_CREATED", 9, 2, 20)  # task 2 labeled since
    html = backend.get("/dashboard", params={"project": 9}).text
    queue = html[html.index('id="queue"') : html.index('id="stopping"')]
    assert [int(x.split("</div>")[0]) for x in queue.split('class="num">')[1:5]] == [
        2,
        1,
        1,
        1,
    ]  # queued, auto, labeled, failed


def test_the_versions_show_what_each_candidate_was_judged_on_and_the_rule(backend, tmp_path):
    """Each version says where it was judged (held-out images: the rule; a job from before it: its training images),
    and the page states the promotion rule with this backend's numbers."""
    state = backend.app.state.backend
    store = state.store
    store.set_project(7, round=1)
    for detail in (
        {"labeled": 6, "validated_on": "images/human", "val_images": 1},  # judged on what it trained on (old job)
        {"labeled": 15, "validated_on": "images/val", "val_images": 4},
    ):
        job, _ = store.enqueue_training(7, "START_TRAINING")
        store.claim_training()
        store.finish_training(job, "done", model_version=f"v{job}-0000000{job}", detail={**detail, "promoted": True})
    html = backend.get("/dashboard").text
    assert "<th>judged on</th>" in html
    assert "4 held-out images" in html and "its training images (before the rule)" in html
    rule = html[html.index('id="promotion-rule"') :]
    assert "never trained on" in rule and "holds 3 images" in rule and "0.005 + 0.05 / sqrt(n)" in rule
    s = Settings(model_dir=tmp_path / "m2", model_path=str(state.settings.model_path), train_min_val_images=5)
    with TestClient(create_app(s, run_job=lambda job, report: {})) as other:
        other.app.state.backend.store.set_project(7, round=0)
        assert "holds 5 images" in other.get("/dashboard").text  # the backend's own setting


def html_text(page: str) -> str:
    """The page with its character references read (``&quot;`` -> ``"``), as a person reads its text."""
    import html

    return html.unescape(page)


def test_the_training_card_says_when_the_project_retrains_and_why_a_job_waits(backend, tmp_path):
    """The cadence (TRAIN_EVERY, by default the batch) with the annotations counted since the last trigger, and a
    job that ended for too few labels shown as waiting, with what it needs."""
    from detector_al.pipelines.retrain_dataset import TooFewLabels, check_splits
    from detector_al.policy.settings import QUEUE_BATCH
    from detector_al.state.store import WAITING

    state = backend.app.state.backend
    _fill(state.store, state.service.model_version, rounds=())  # 3 annotations
    job, _ = state.store.enqueue_training(7, f"{QUEUE_BATCH} new or updated annotations")
    state.store.claim_training()
    with pytest.raises(TooFewLabels) as too_few:
        check_splits(10, 9, 1, min_labeled=2, min_val_images=3, project=7)
    state.store.finish_training(job, WAITING, error=str(too_few.value))
    html = html_text(backend.get("/dashboard").text)
    card = html[html.index('id="training"') : html.index('id="scores"')]
    assert (
        f"after every {QUEUE_BATCH} new or updated annotations (TRAIN_EVERY): 3 counted, {QUEUE_BATCH - 3} to go"
        in card
    )
    assert f"<td>{job}</td><td>waiting</td>" in card and "Label about 10 more tasks" in card
    s = Settings(model_dir=tmp_path / "m2", model_path=str(state.settings.model_path), train_every=0)
    with TestClient(create_app(s, run_job=lambda job, report: {})) as other:
        other.app.state.backend.store.set_project(7, round=0)
        assert 'only when "Start Training" is pressed (TRAIN_EVERY=0)' in html_text(other.get("/dashboard").text)


def test_the_dashboard_signals_docstring_examples_run():
    import doctest

    import detector_al.signals.dashboard

    result = doctest.testmod(detector_al.signals.dashboard)
    assert result.attempted > 0 and result.failed == 0
