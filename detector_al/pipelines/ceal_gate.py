"""CEAL's gate, one per model version: judged on the human validation split, kept with the version, restored at start.

Every retraining scores its human validation split (labels no model of the project trains on: a task is there when
``sha256(task id) mod 5 == 0``, :func:`~detector_al.pipelines.retrain_dataset.in_validation`) twice: with the serving
model before that model writes the round's pseudo-labels, and with the candidate before it re-scores the pool.
:func:`~detector_al.policy.ceal_calibration.calibrate_ceal` decides from the pseudo boxes right there whether CEAL runs
for that model, and at which threshold: a model whose held-out pseudo-labels are shown below 95 % precise, or whose
held-out images hold too few of its confident boxes to judge it by, auto-accepts nothing, in its pseudo-labels and in
its queue. The verdict goes into the version's ``meta.json`` (key ``ceal``) and to the service
(:meth:`~detector_al.serving.service.PredictionService.set_ceal`); :func:`restore` reads it back when a backend starts,
so a restart serves the same decisions.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path

from detector_al.io.images import list_images
from detector_al.io.yolo_format import read_yolo_labels
from detector_al.pipelines.job_control import JobControl
from detector_al.pipelines.retrain_pool import BATCH, batched
from detector_al.policy.ceal import CealConfig
from detector_al.policy.ceal_calibration import CealCalibration, Evidence, calibrate_ceal, ceal_evidence, pool_evidence
from detector_al.policy.settings import PolicySettings
from detector_al.state.registry import ModelRegistry

log = logging.getLogger(__name__)


def judge_on_validation(service, detector, root: Path, control: JobControl) -> CealCalibration:
    """:func:`~detector_al.policy.ceal_calibration.calibrate_ceal` of ``detector`` on a retraining dataset's
    validation split (``root/images/val``, labels in ``root/labels/val``), a batch at a time on the service's
    inference thread; only the per-threshold counts stay in memory."""
    base = service.config.policy.ceal
    if not base.enabled:
        return calibrate_ceal({}, 0, base)  # "off": nothing to judge
    labels = root / "labels" / "val"

    def evidences():
        for batch in batched(list_images(root / "images" / "val"), BATCH):
            control.check()
            yield from service.predict_paths(
                [str(p) for p in batch], lambda _, p: evidence_of(p, labels, base), detector
            )

    return calibrate_ceal(*pool_evidence(evidences()), base)


def evidence_of(pred, labels: Path, base: CealConfig) -> Evidence | None:
    """One held-out image's :func:`~detector_al.policy.ceal_calibration.ceal_evidence` against its YOLO label file in
    ``labels`` (``<image stem>.txt``); None for an image that could not be read."""
    if not pred.ok:
        return None
    return ceal_evidence(
        pred, read_yolo_labels(labels / f"{Path(pred.source).stem}.txt", pred.width, pred.height), base
    )


def record(service, registry: ModelRegistry, version: str, calibration: CealCalibration) -> None:
    """Run ``version`` with ``calibration`` from now on, and keep it in the version's ``meta.json``."""
    service.set_ceal(version, calibration)
    if version in registry.versions():
        registry.update_meta(version, ceal=asdict(calibration))
    log.info("CEAL for %s: %s", version, calibration.describe())


def stored(registry: ModelRegistry, version: str | None) -> CealCalibration | None:
    """The gate kept for ``version`` in ``registry``, its counts judged by the current rule
    (:meth:`~detector_al.policy.ceal_calibration.CealCalibration.rejudged`); None: never judged, or not a version of
    it."""
    meta = registry.meta(version) if version in registry.versions() else {}
    if not meta.get("ceal"):
        return None
    try:
        kept = CealCalibration(**meta["ceal"])
    except TypeError:  # written by another release: judged again at the next training
        log.warning("%s: CEAL gate in meta.json not understood (%s); the settings' CEAL applies", version, meta["ceal"])
        return None
    now = kept.rejudged()
    if now.verdict != kept.verdict:
        log.info("%s: CEAL gate kept as %s, %s under the current rule", version, kept.verdict, now.verdict)
    return now


def restore(service, registry: ModelRegistry, version: str) -> CealCalibration | None:
    """:func:`stored`, handed to the service."""
    calibration = stored(registry, version)
    if calibration is not None:
        service.set_ceal(version, calibration)
    return calibration


def gated_policy(policy: PolicySettings, registry: ModelRegistry, version: str | None) -> PolicySettings:
    """``policy`` with the CEAL ``version`` runs with (its :func:`stored` gate applied; unchanged when none):
    ``ingest`` with a backend's retrained weights decides as the backend does."""
    calibration = stored(registry, version)
    return policy if calibration is None else replace(policy, ceal=calibration.apply(policy.ceal))
