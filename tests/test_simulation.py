"""The experiment end to end on the sample data (tiny models): rows, effort, the training cache, resuming."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from detector_al.cli import app

runner = CliRunner()


def test_simulate_smoke_records_effort_shares_identical_trainings_and_resumes(sample_data, tmp_path):
    out = tmp_path / "sim"
    args = ["simulate", str(sample_data / "data.yaml"), "--out", str(out), "--preset", "smoke"]
    args += ["--variants", "random,random+ceal", "--initial", "6", "--budget", "3", "--imgsz", "64"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["variant"], r["round"], r["labeled"]) for r in runs] == [
        ("random", 0, 6),
        ("random", 1, 9),
        ("random+ceal", 0, 6),
        ("random+ceal", 1, 9),
    ]
    last = runs[1]
    assert len(last["chosen"]) == 3 and last["drawn"] > 0 and last["corrections"] >= 0
    assert {"map50", "map50_95", "val_map50", "val_map50_95"} <= set(last)
    # a 2-epoch model accepts nothing, so random+ceal trains on random's images: one training, not two
    assert runs[3]["pseudo"] == 0 and runs[3]["weights"] == runs[1]["weights"]
    assert len(list((out / "trainings").iterdir())) == 2
    assert "Labels to reach `random`" in res.output
    assert (out / "learning_curves.png").stat().st_size > 0

    again = runner.invoke(app, args)  # resumes: nothing re-run, nothing added
    assert again.exit_code == 0, again.output
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 4


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
