"""The command line, run in-process: predict and score write one record per input file."""

from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from detector_al.cli.app import app

runner = CliRunner()


def test_predict_writes_one_line_per_file_with_errors_for_bad_ones(trained_weights, sample_data, tmp_path):
    out = tmp_path / "pred.jsonl"
    bad = sample_data / "bad_inputs"
    res = runner.invoke(app, ["predict", str(bad), "--model", str(trained_weights), "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    expected = json.loads((bad / "expected.json").read_text())
    assert {line["image"].rsplit("/", 1)[-1] for line in lines} == set(expected)
    for line in lines:
        name = line["image"].rsplit("/", 1)[-1]
        assert ("error" in line) == (expected[name] == "error"), line
    assert "3 unreadable" in res.output


def test_score_jsonl_csv_and_plot(trained_weights, sample_data, tmp_path):
    pool = sorted((sample_data / "images" / "pool").glob("*.jpg"))[:24]
    out = tmp_path / "queue.jsonl"
    plot = tmp_path / "hist.png"
    args = [
        "score",
        *map(str, pool),
        str(sample_data / "bad_inputs" / "empty.jpg"),
        "--model",
        str(trained_weights),
        "--budget",
        "5",
        "--out",
        str(out),
        "--plot",
        str(plot),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 25
    assert sum(r["decision"] == "query" for r in recs) == 5
    err = [r for r in recs if r["decision"] == "error"]
    assert len(err) == 1 and err[0]["score"] is None and "empty" in err[0]["error"]
    ranks = sorted(r["rank"] for r in recs if r["rank"] is not None)
    assert ranks == list(range(1, 25))
    assert plot.stat().st_size > 1000
    assert "score quantiles" in res.output

    out_csv = tmp_path / "queue.csv"
    res = runner.invoke(app, [*args[:-4], "--out", str(out_csv), "--strategy", "entropy_sum"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 25 and {"image", "score", "decision", "rank"} <= set(rows[0])


def test_unknown_strategy_and_missing_model_are_clear_errors(sample_data, tmp_path):
    pool = str(sample_data / "images" / "pool")
    res = runner.invoke(
        app, ["score", pool, "--model", "x.pt", "--out", str(tmp_path / "o.jsonl"), "--strategy", "bogus"]
    )
    assert res.exit_code != 0 and "bogus" in res.output
    res = runner.invoke(app, ["score", pool, "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "not found" in res.output
    assert not (tmp_path / "o.jsonl").exists()


def test_balance_classes_option(trained_weights, sample_data, tmp_path):
    pool = sorted((sample_data / "images" / "pool").glob("*.jpg"))[:10]
    labeled = tmp_path / "labels"
    labeled.mkdir()
    (labeled / "a.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    base = ["score", *map(str, pool), "--model", str(trained_weights), "--out", str(tmp_path / "q.jsonl")]
    assert runner.invoke(app, [*base, "--balance-classes", str(labeled)]).exit_code == 0
    res = runner.invoke(app, [*base, "--balance-classes", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not a folder" in res.output


def test_unreachable_label_studio_is_a_clear_error(trained_weights, sample_data, tmp_path):
    from detector_al.label_studio.local_server import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    res = runner.invoke(
        app,
        [
            "ingest",
            str(sample_data / "bad_inputs"),
            "--model",
            str(trained_weights),
            "--ls-url",
            dead,
            "--api-key",
            "k",
            "--project",
            "1",
            "--store",
            str(tmp_path / "s.sqlite3"),
        ],
    )
    assert res.exit_code == 2 and "cannot reach Label Studio" in res.output
    res = runner.invoke(app, ["demo", "--ls-url", dead, "--api-key", "k", "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 2 and "cannot reach Label Studio" in res.output
    assert not (tmp_path / "s.sqlite3").exists()
