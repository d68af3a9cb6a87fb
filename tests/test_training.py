"""Training settings that decide whether a model learns at all."""

from __future__ import annotations

import torch

from detector_al.model.training import TrainConfig


def test_one_optimizer_step_per_batch(trained_weights):
    """ultralytics accumulates gradients up to ``nbs`` images; with the default 64, 80 training images got about
    one optimizer step per epoch and the bootstrap model stayed at mAP50 0.27 (0.76 with nbs = batch)."""
    args = torch.load(trained_weights, map_location="cpu", weights_only=False)["train_args"]
    assert args["nbs"] == args["batch"] == TrainConfig().batch


def test_train_out_is_the_folder_the_user_named(sample_data, tmp_path, monkeypatch):
    """`detector-al train data.yaml --out runs/model` (a relative path) writes runs/model/best.pt, nowhere else."""
    from typer.testing import CliRunner

    from detector_al.cli.app import app

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(
        app, ["train", str(sample_data / "data.yaml"), "--out", "runs/model", "--epochs", "1", "--imgsz", "64"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "runs" / "model" / "best.pt").is_file()
    assert (tmp_path / "runs" / "model" / "weights" / "best.pt").is_file()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["model"]
