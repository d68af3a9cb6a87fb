"""The file stream ``score`` and ``ingest`` consume: hashes, skips, duplicates, unreadable files, order; and the Ray
path giving the same records (a local Ray, 1 and 2 workers)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detector_al.io.files import file_sha256
from detector_al.policy.decision import DecisionPolicy
from detector_al.queue.build import ERROR
from detector_al.scoring.file_stream import scored_files

POLICY = DecisionPolicy("entropy_sum")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(sample_data, tmp_path) -> list[Path]:
    """Ten pool images, a copy of the first (the same bytes), a dangling link, a text file named .jpg."""
    pool = sorted((sample_data / "images" / "pool").glob("*.jpg"))[:10]
    paths = [shutil.copy(p, tmp_path / p.name) for p in pool]
    paths = [Path(p) for p in paths]
    copy = tmp_path / "copy_of_first.jpg"
    shutil.copy(paths[0], copy)
    link = tmp_path / "gone.jpg"
    link.symlink_to(tmp_path / "does-not-exist.jpg")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    return [*paths[:5], copy, link, text, *paths[5:]]


def test_the_stream_keeps_order_skips_known_hashes_and_duplicates_and_fails_bad_files_alone(detector, folder):
    known = file_sha256(folder[1])
    out = list(scored_files(detector, folder, POLICY, batch_size=3, skip={known}))
    assert [f.path for f in out] == [str(p) for p in folder]
    by_name = {Path(f.path).name: f for f in out}
    assert by_name[folder[1].name].decision is None  # ingested before
    assert by_name["copy_of_first.jpg"].decision is None  # the same bytes as the first file
    assert by_name["copy_of_first.jpg"].content_hash == out[0].content_hash
    gone = by_name["gone.jpg"]
    assert gone.content_hash is None and gone.decision.status == ERROR and "cannot read" in gone.decision.error
    notes = by_name["notes.jpg"]
    assert notes.content_hash == file_sha256(folder[7]) and notes.decision.status == ERROR
    scored = [f for f in out if f.decision is not None and f.decision.status != ERROR]
    assert len(scored) == 9 and all(f.content_hash == file_sha256(f.path) for f in scored)


def test_the_stream_gives_what_predict_and_decide_give(detector, folder):
    images = [p for p in folder if p.name not in ("gone.jpg", "notes.jpg")]
    out = list(scored_files(detector, images, POLICY, batch_size=4, hash_files=False))
    assert all(f.content_hash is None and f.decision is not None for f in out)  # no hashing: nothing skipped
    direct = [POLICY(p) for p in detector.predict([str(p) for p in images], batch_size=4)]
    assert [f.decision.score for f in out] == [d.score for d in direct]
    assert [f.decision.status for f in out] == [d.status for d in direct]


needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason='Ray is an optional extra: pip install "detector-al[ray]"'
)


@needs_ray
@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ray_gives_the_plain_paths_records(detector, folder, workers):
    from detector_al.scoring.ray_stream import ModelSpec, RayOptions, ray_scored_files

    known = {file_sha256(folder[2])}
    plain = list(scored_files(detector, folder, POLICY, batch_size=4, skip=known))
    on_ray = list(
        ray_scored_files(folder, ModelSpec.of(detector), POLICY, RayOptions(workers=workers, batch_size=4), skip=known)
    )
    assert [f.path for f in on_ray] == [f.path for f in plain]
    assert [f.content_hash for f in on_ray] == [f.content_hash for f in plain]
    for a, b in zip(plain, on_ray, strict=True):
        assert (a.decision is None) == (b.decision is None)
        if a.decision is not None:
            assert_same_decision(a.decision, b.decision)


def assert_same_decision(a, b):
    """The same decision up to float noise: another process runs other thread counts, so sums add up in another
    order (differences of 1e-7 in scores, 1e-5 px in boxes were seen)."""
    assert (a.source, a.status, a.error) == (b.source, b.status, b.error)
    if a.error is None:
        assert b.score == pytest.approx(a.score, rel=1e-4, abs=1e-6)
        np.testing.assert_array_equal(a.shown.class_id, b.shown.class_id)
        np.testing.assert_allclose(a.shown.xyxy, b.shown.xyxy, atol=1e-2)
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)


@needs_ray
@pytest.mark.slow
def test_score_on_ray_writes_the_plain_queue_file(trained_weights, folder, tmp_path):
    def score(*extra):
        out = tmp_path / f"queue{len(extra)}.jsonl"
        cmd = [sys.executable, "-m", "detector_al", "score", str(folder[0].parent), "-m", str(trained_weights)]
        subprocess.run([*cmd, "--out", str(out), "--budget", "3", *extra], cwd=REPO, check=True, capture_output=True)
        return out.read_text()

    plain = [json.loads(line) for line in score().splitlines()]
    on_ray = [json.loads(line) for line in score("--ray", "--ray-workers", "2").splitlines()]
    assert len(plain) == 13 and sum(r["decision"] == "query" for r in plain) == 3
    assert [(r["image"], r["decision"], r["rank"]) for r in on_ray] == [
        (r["image"], r["decision"], r["rank"]) for r in plain
    ]
    for a, b in zip(plain, on_ray, strict=True):
        assert (a["score"] is None) == (b["score"] is None)
        if a["score"] is not None:
            assert b["score"] == pytest.approx(a["score"], rel=1e-4, abs=1e-6)


def test_ray_flags_without_ray_say_how_to_install(monkeypatch, trained_weights, folder, tmp_path):
    from typer.testing import CliRunner

    from detector_al.cli.app import app
    from detector_al.scoring import ray_stream

    monkeypatch.setattr(ray_stream, "ray_available", lambda: False)
    args = ["score", str(folder[0]), "-m", str(trained_weights), "--out", str(tmp_path / "q.jsonl"), "--ray"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "detector-al[ray]" in result.output
    assert not (tmp_path / "q.jsonl").exists()


def test_pool_shape_follows_the_clusters_resources():
    from detector_al.scoring.ray_stream import RayOptions, pool_shape

    assert pool_shape(RayOptions(), {"CPU": 8.0}) == (8, 1, 0.0)
    assert pool_shape(RayOptions(), {"CPU": 32.0, "GPU": 4.0}) == (4, 8, 1.0)
    assert pool_shape(RayOptions(gpus_per_worker=0.5), {"CPU": 32.0, "GPU": 2.0}) == (4, 8, 0.5)
    assert pool_shape(RayOptions(workers=3), {"CPU": 8.0}) == (3, 2, 0.0)
    assert pool_shape(RayOptions(workers=4), {"CPU": 2.0}) == (4, 1, 0.0)
    # --ray-workers on a GPU cluster: the GPUs shared out among them (never workers x 1 GPU), the user's fraction kept
    assert pool_shape(RayOptions(workers=4), {"CPU": 8.0, "GPU": 1.0}) == (4, 2, 0.25)
    assert pool_shape(RayOptions(workers=2), {"CPU": 8.0, "GPU": 4.0}) == (2, 4, 1.0)
    assert pool_shape(RayOptions(workers=3, gpus_per_worker=0.5), {"CPU": 6.0, "GPU": 2.0}) == (3, 2, 0.5)
