"""Training settings that decide whether a model learns at all."""

from __future__ import annotations

import torch

from detector_al.training import TrainConfig


def test_one_optimizer_step_per_batch(trained_weights):
    """ultralytics accumulates gradients up to ``nbs`` images; with the default 64, 80 training images got about
    one optimizer step per epoch and the bootstrap model stayed at mAP50 0.27 (0.76 with nbs = batch)."""
    args = torch.load(trained_weights, map_location="cpu", weights_only=False)["train_args"]
    assert args["nbs"] == args["batch"] == TrainConfig().batch
