"""CEAL's gate: a model whose held-out pseudo-labels are shown wrong auto-accepts nothing, and a restart keeps that."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from detector_al.model.predictions import Detections
from detector_al.policy.ceal import CealConfig, auto_accept
from detector_al.policy.ceal_calibration import MIN_CONFIDENT_BOXES, calibrate_ceal, ceal_evidence, pool_evidence
from detector_al.policy.formulas.proportions import wilson_lower, wilson_upper
from detector_al.state.store import Store
from ml_backend.main import create_app
from ml_backend.settings import Settings
from tests.test_pseudo_labels import confident_scene

SAMPLE_ROOT = Path(__file__).resolve().parent.parent / "sample_data"


def held_out(n: int, right: bool) -> dict:
    """Pooled evidence of ``n`` held-out images, each accepted with one box at 0.9, of the true class when ``right``."""
    truth = Detections(np.array([[10, 10, 30, 30]]), np.ones(1), np.array([0 if right else 1]))
    pooled, images = pool_evidence([ceal_evidence(confident_scene(), truth, CealConfig())] * n + [None])
    assert images == n  # an unreadable image (None) is not counted
    return pooled


def test_the_gate_is_calibrated_off_untested_or_unproven_as_the_held_out_boxes_say():
    base = CealConfig()
    assert auto_accept(confident_scene(), 0.0, 0, base).accepted  # the scene CEAL accepts under the settings

    proven = calibrate_ceal(held_out(80, True), 80, base)
    assert proven.verdict == "calibrated" and proven.min_confidence == base.min_confidence  # never below the settings
    assert wilson_lower(proven.right, proven.boxes) >= 0.95 and proven.apply(base) == base
    # the settings' threshold shown too loose (wrong boxes at 0.6-0.7), a higher one safe: CEAL runs there
    right = Detections(np.array([[10, 10, 30, 30]]), np.ones(1), np.array([0]))
    wrong = Detections(np.array([[10, 10, 30, 30]]), np.ones(1), np.array([1]))
    pooled, n = pool_evidence(
        [ceal_evidence(confident_scene(conf=0.95), right, base)] * 80
        + [ceal_evidence(confident_scene(conf=0.65), wrong, base)] * 20
    )
    tighter = calibrate_ceal(pooled, n, base)
    assert pooled[0.6][:2] == (80, 100) and pooled[0.7][:2] == (80, 80)
    assert tighter.verdict == "calibrated" and tighter.min_confidence == 0.7
    assert tighter.apply(base).min_confidence == 0.7

    wrong = calibrate_ceal(held_out(6, False), 6, base)
    assert wrong.verdict == "unsafe" and (wrong.right, wrong.boxes) == (0, 6)
    assert not wrong.apply(base).enabled
    assert not auto_accept(confident_scene(), 0.0, 0, wrong.apply(base)).accepted

    # a weak model accepts no held-out image (an object in the ambiguous band), but its confident boxes are wrong
    truth = Detections(np.array([[10, 10, 30, 30]]), np.ones(1), np.array([1]))
    blocked = confident_scene(extra_anchor_p=0.2)
    assert not auto_accept(blocked, 0.0, 0, base).accepted
    weak = calibrate_ceal(*pool_evidence([ceal_evidence(blocked, truth, base)] * 6), base)
    assert weak.verdict == "unsafe" and (weak.boxes, weak.confident_right, weak.confident_boxes) == (0, 0, 6)

    few = calibrate_ceal(held_out(6, True), 6, base)  # 6/6 right: too few to prove or refute 95 %
    assert few.verdict == "unproven" and few.apply(base) == base
    assert wilson_lower(6, 6) < 0.95 <= wilson_upper(6, 6)
    # fewer confident held-out boxes than the gate needs to look at (a handful of labels, or a weak model that is
    # seldom sure): nothing seen, nothing auto-accepted
    assert MIN_CONFIDENT_BOXES == 5
    unseen = calibrate_ceal(held_out(4, True), 4, base)
    assert unseen.verdict == "untested" and unseen.confident_boxes == 4 and unseen.switches_off
    assert not unseen.apply(base).enabled and unseen.describe().startswith("off:")
    assert calibrate_ceal(*pool_evidence([]), base).verdict == "untested"  # no held-out image at all
    assert calibrate_ceal(held_out(4, True), 4, base, min_boxes=4).verdict == "unproven"
    fewer = calibrate_ceal(held_out(2, True), 2, base, min_boxes=3)
    assert fewer.verdict == "untested" and "fewer than 3 confident boxes" in fewer.describe()  # the rule it ran under

    assert calibrate_ceal(held_out(80, False), 80, CealConfig(enabled=False)).verdict == "off"


def _client(model_dir: Path, weights) -> TestClient:
    return TestClient(
        create_app(Settings(model_dir=model_dir, model_path=str(weights), local_files_document_root=SAMPLE_ROOT))
    )


def _auto_accepted(client: TestClient, model_dir: Path, paths: list[Path], project: int, config: str) -> list[str]:
    client.app.state.backend.store.set_project(project, round=0)  # as Label Studio's first webhook makes it
    tasks = [{"id": 1000 * project + i, "data": {"image": str(p)}} for i, p in enumerate(paths)]
    r = client.post("/predict", json={"tasks": tasks, "project": f"{project}.1", "label_config": config})
    assert r.status_code == 200, r.text
    rows = Store(model_dir / "detector_al.sqlite3").predictions(project)
    assert len(rows) == len(paths)
    return sorted(r["path"] for r in rows if r["decision"] == "auto_accept")


def _validation_split(root: Path, sample_data: Path, shift: int) -> None:
    """``root/images/val`` and ``root/labels/val`` as a retraining writes them: the sample val images with their true
    labels, every class id shifted by ``shift`` (an annotator who calls every object something else)."""
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    n_classes = 3
    for img in sorted((sample_data / "images" / "val").glob("*.jpg")):
        (root / "images" / "val" / img.name).symlink_to(img)
        lines = (sample_data / "labels" / "val" / f"{img.stem}.txt").read_text().split("\n")
        shifted = [f"{(int(x.split()[0]) + shift) % n_classes} {x.split(' ', 1)[1]}" for x in lines if x.strip()]
        (root / "labels" / "val" / f"{img.stem}.txt").write_text("".join(f"{x}\n" for x in shifted))


@pytest.mark.parametrize("shift", [0, 1])
def test_a_model_shown_unsafe_auto_accepts_nothing_and_a_restart_keeps_it(
    tmp_path, trained_weights, sample_data, shift
):
    from detector_al.pipelines.ceal_gate import judge_on_validation, record
    from detector_al.pipelines.job_control import JobControl

    config = (sample_data / "label_config.xml").read_text()
    pool = sorted((sample_data / "images" / "pool").glob("*.jpg"))[:24]
    model_dir = tmp_path / "models"
    with _client(model_dir, trained_weights) as client:
        before = _auto_accepted(client, model_dir, pool, 1, config)
        status = client.get("/status").json()["ceal"]
        assert status["gate"] is None and status["enabled"] and "judged on held-out labels" in status["summary"]
        backend = client.app.state.backend
        _validation_split(tmp_path / "job", sample_data, shift)
        gate = judge_on_validation(backend.service, backend.service.detector, tmp_path / "job", JobControl(None, None))
        record(backend.service, backend.registry, backend.service.model_version, gate)
    assert before, "the shipped model auto-accepts some of the sample pool under the settings"
    assert gate.images == len(list((sample_data / "images" / "val").glob("*.jpg")))
    if shift:  # every pseudo box is of another class than the held-out label: shown unsafe
        assert gate.verdict == "unsafe" and gate.right == 0 and gate.boxes > 0
    else:  # whatever the verdict, it is the one its evidence gives
        right, boxes = gate.right, gate.boxes
        assert gate.verdict != "unsafe" or wilson_upper(right, boxes) < 0.95
        assert gate.verdict != "calibrated" or wilson_lower(right, boxes) >= 0.95

    with _client(model_dir, trained_weights) as client:  # a restart: the gate is read back from the version's meta
        status = client.get("/status").json()["ceal"]
        assert status["gate"]["verdict"] == gate.verdict and status["enabled"] == (not gate.switches_off)
        after = _auto_accepted(client, model_dir, pool, 2, config)
        page = client.get("/dashboard").text
    assert f"Auto-accept: {gate.describe()}" in page.replace("&#x27;", "'")
    if gate.switches_off:
        assert after == [] and status["summary"].startswith("off:")
    elif gate.verdict == "unproven":
        assert after == before


def test_ingest_runs_a_version_with_the_gate_its_training_kept(tmp_path):
    from dataclasses import asdict

    from detector_al.pipelines.ceal_gate import gated_policy, stored
    from detector_al.policy.ceal_calibration import CealCalibration
    from detector_al.policy.settings import POLICY
    from detector_al.state.registry import ModelRegistry

    registry = ModelRegistry(tmp_path / "models")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    version = registry.add(weights)
    assert gated_policy(POLICY, registry, version) == POLICY  # never judged: the settings' CEAL
    unsafe = CealCalibration("unsafe", 0.6, 1, 4, 10, 40, 8)
    registry.update_meta(version, ceal=asdict(unsafe))
    assert stored(registry, version) == unsafe and registry.meta(version)["version"] == version  # the rest kept
    policy = gated_policy(POLICY, registry, version)
    assert not policy.ceal.enabled and policy.strategy == POLICY.strategy
    assert gated_policy(POLICY, registry, "v9-00000000") == POLICY  # not a version of this registry
    # kept by the release before the untested verdict: unproven on 3 confident boxes, judged again as untested (off)
    older = {k: v for k, v in asdict(CealCalibration("unproven", 0.6, 3, 3, 3, 3, 2)).items() if k != "min_boxes"}
    registry.update_meta(version, ceal=older)
    assert stored(registry, version).verdict == "untested" and not gated_policy(POLICY, registry, version).ceal.enabled
    enough = CealCalibration("unproven", 0.6, 3, 3, 9, 9, 3)  # enough confident boxes: it stays unproven, CEAL on
    registry.update_meta(version, ceal=asdict(enough))
    assert stored(registry, version) == enough and gated_policy(POLICY, registry, version) == POLICY
    registry.update_meta(version, ceal={"verdict": "unsafe", "from": "another release"})
    assert gated_policy(POLICY, registry, version) == POLICY  # not understood: judged again at the next training
