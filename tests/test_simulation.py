"""The experiment end to end on the sample data (tiny models): rows, effort, the training cache, resuming."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from detector_al.cli.app import app

runner = CliRunner()


def test_simulate_smoke_records_effort_shares_identical_trainings_and_resumes(sample_data, tmp_path):
    out = tmp_path / "sim"
    args = ["simulate", str(sample_data / "data.yaml"), "--out", str(out), "--preset", "smoke"]
    args += ["--variants", "random,random+ceal,random+boxes,oracle", "--initial", "6", "--budget", "3", "--imgsz", "64"]
    args += ["--base", "yolov8n.yaml"]  # random init: a 2-epoch model is sure of nothing, whatever the processor
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["variant"], r["round"], r["labeled"]) for r in runs] == [
        ("random", 0, 6),
        ("random", 1, 9),
        ("random+ceal", 0, 6),
        ("random+ceal", 1, 9),
        ("random+boxes", 0, 6),
        ("random+boxes", 1, 9),
        ("oracle", 0, 6),
        ("oracle", 1, 9),
    ]
    last = runs[1]
    assert len(last["chosen"]) == 3 and last["drawn"] > 0
    # a 2-epoch model from random init gets boxes of 3 images wrong (missed, spurious or relabeled): the corrections
    # are counted against the truth, so there are some (0 is what an effort count that lost its images would say)
    assert last["corrections"] > 0, last
    assert {"map50", "map50_95", "val_map50", "val_map50_95"} <= set(last)
    # a 2-epoch model accepts nothing, so random+ceal trains on random's images: one training, not two
    assert runs[3]["pseudo"] == 0 and runs[3]["weights"] == runs[1]["weights"]
    # and its held-out pseudo boxes (none) prove nothing: CEAL's gate is judged, and not calibrated; random has none
    assert runs[3]["ceal_gate"] in ("unproven", "unsafe", "untested") and runs[1]["ceal_gate"] == "off"
    # nor can its boxes be shown precise on the val split: no threshold, no box pseudo-labels, the same training
    assert runs[5]["pseudo_threshold"] is None and runs[5]["pseudo"] == 0 and runs[5]["weights"] == runs[1]["weights"]
    # the oracle control takes the images whose pre-annotations need the most fixes: no 3 images need more
    assert runs[7]["corrections"] >= runs[1]["corrections"] and runs[7]["chosen"] != runs[1]["chosen"]
    assert len(list((out / "trainings").iterdir())) == 3
    assert "Labels to reach `random`" in res.output
    assert (out / "learning_curves.png").stat().st_size > 0

    again = runner.invoke(app, args)  # resumes: nothing re-run, nothing added
    assert again.exit_code == 0, again.output
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 8


def test_a_round_whose_queue_is_empty_labels_nothing_and_keeps_its_model(sample_data, tmp_path):
    out = tmp_path / "sim"
    args = ["simulate", str(sample_data / "data.yaml"), "--out", str(out), "--preset", "smoke", "--variants", "random"]
    args += ["--initial", "78", "--budget", "3", "--rounds", "2", "--imgsz", "64", "--base", "yolov8n.yaml"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    runs = json.loads((out / "results.json").read_text())["runs"]
    # the 80-image pool: round 1 labels the last 2, round 2 finds nothing to queue
    assert [(r["round"], r["labeled"], len(r["chosen"])) for r in runs] == [(0, 78, 0), (1, 80, 2), (2, 80, 0)]
    assert runs[2]["weights"] == runs[1]["weights"] and runs[2]["train_s"] == 0
    assert runs[2]["drawn"] == 0 and not any(runs[2]["actions"].values()), runs[2]  # nothing to pay for
    assert len(list((out / "trainings").iterdir())) == 2  # round 0 and round 1: no third training


def test_box_pseudo_label_calibration_returns_the_first_threshold_whose_lower_bound_meets_the_target(
    sample_data, trained_weights, tmp_path
):
    """What calibration guarantees for any model: the rule it returns is the lowest threshold of the grid whose
    one-sided 95 % lower bound of box precision on the held-out images meets the target, and None means that no
    threshold of the grid does. Which threshold that is depends on the model, so it is recomputed, not assumed."""
    from detector_al.io.yolo_format import read_yolo_labels
    from detector_al.model.detector import Detector
    from detector_al.model.geometry import same_class_matches
    from detector_al.policy.box_pseudo_labels import BoxPseudoConfig, box_pseudo_labels, calibrate_box_pseudo_labels
    from detector_al.policy.formulas.proportions import wilson_lower
    from detector_al.policy.settings import SCORER_CONF
    from detector_al.policy.thresholds import CALIBRATION_GRID
    from detector_al.simulation.dataset import prepare_dataset

    ds = prepare_dataset(sample_data / "data.yaml", tmp_path)
    det = Detector.load(trained_weights, conf=SCORER_CONF)
    val = list(det.predict([str(p) for p in ds.images("val")]))
    truth = [read_yolo_labels(ds.label_of(Path(q.source)), q.width, q.height) for q in val]

    def lower_bound(t: float) -> float:
        cfg = BoxPseudoConfig(min_confidence=t)
        boxes = [box_pseudo_labels(q, cfg).boxes for q in val]
        return wilson_lower(
            sum(same_class_matches(b, g) for b, g in zip(boxes, truth, strict=True)), sum(map(len, boxes))
        )

    bounds = {t: lower_bound(t) for t in CALIBRATION_GRID}
    for target in (0.5, 0.9, 0.95):
        rule = calibrate_box_pseudo_labels(val, truth, target=target)
        meeting = [t for t in CALIBRATION_GRID if bounds[t] >= target]
        if not meeting:
            assert rule is None, (target, bounds)
        else:
            assert rule is not None and rule.min_confidence == meeting[0], (target, bounds)


def test_simulate_refuses_an_unknown_strategy_before_training(sample_data, tmp_path):
    res = runner.invoke(app, ["simulate", str(sample_data / "data.yaml"), "--out", str(tmp_path), "--variants", "nope"])
    assert res.exit_code == 2
    assert "unknown strategy 'nope'" in res.output
    assert not (tmp_path / "trainings").exists()


def test_simulate_refuses_a_missing_or_unreadable_dataset_with_a_clear_error(tmp_path):
    not_yaml = tmp_path / "notes.md"
    not_yaml.write_text("```bash\nmake demo\n```\n")
    no_train = tmp_path / "data.yaml"
    no_train.write_text("names: [a]\ntrain: images/train\nval: images/val\n")
    for source, says in (
        (tmp_path / "nope", "no such YOLO data.yaml"),
        (not_yaml, "not a YOLO data.yaml"),
        (no_train, "holds no image"),
    ):
        res = runner.invoke(app, ["simulate", str(source), "--out", str(tmp_path / "out")])
        assert res.exit_code == 2, res.output
        assert says in " ".join(res.output.replace("│", " ").split()), res.output  # rich boxes wrap the message
