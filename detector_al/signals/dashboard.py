"""What the backend's dashboard shows of a project, as data (``GET /status`` serves the same): the model versions
and the learning curve, the training jobs, the queue, labels per class, the stopping signal and the label review.

Every figure comes from the store (:mod:`detector_al.state`): no call to Label Studio, so the page is as fast on a
project of 10,000 tasks as on one of ten (one indexed query per table).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import numpy as np

from detector_al.pipelines.retrain_dataset import promotion_rule
from detector_al.policy.ceal import CealConfig
from detector_al.policy.ceal_calibration import CealCalibration
from detector_al.queue.build import AUTO_ACCEPT, ERROR, QUERY, REST
from detector_al.signals.annotator_time import STATISTIC, project_time
from detector_al.signals.stopping import DEFAULT_PATIENCE, DEFAULT_THRESHOLD
from detector_al.state.annotation_times import AnnotationTimes
from detector_al.state.signals import Signals
from detector_al.state.store import DONE, Store


def learning_curve(store: Store, project: int) -> list[dict]:
    """One point per finished training of the project: labels it used (human, pseudo), its metrics on the human
    validation split, the serving model's, and whether it was promoted (and why not)."""
    points = []
    for r in reversed(store.project_jobs(project, DONE, limit=None)):
        d = json.loads(r["detail"] or "{}")
        cand, serving = d.get("candidate") or {}, d.get("serving") or {}
        points.append(
            {
                "job": r["id"],
                "version": r["model_version"],
                "labeled": d.get("labeled"),
                "pseudo_labeled": d.get("pseudo_labeled", 0),
                "map50": cand.get("map50"),
                "map50_95": cand.get("map50_95"),
                "serving_version": serving.get("version"),
                "serving_map50": serving.get("map50"),
                "serving_map50_95": serving.get("map50_95"),
                "promoted": bool(d.get("promoted")),
                "validated_on": d.get("validated_on"),
                "val_images": d.get("val_images"),
                "class_counts": d.get("class_counts"),
                "agreement": d.get("agreement"),
                "finished_at": r["finished_at"],
            }
        )
    return points


def queue_counts(store: Store, project: int, version: str | None) -> dict:
    """Tasks of the project by where they stand: labeled, queued (the batch and the rest), auto-accepted, failed;
    and the unlabeled tasks' uncertainty scores (for the histogram), of the serving version: one row of the project's
    pool each (files ``ingest`` could not read count as failed)."""
    rows = store.unlabeled_scores(project, version)
    labeled = store.labeled_count(project)
    decisions = [r["decision"] for r in rows if not r["failed"]]
    scores = [r["score"] for r in rows if r["score"] is not None and not r["failed"]]
    return {
        "labeled": labeled,
        "batch": decisions.count(QUERY),
        "queued": sum(d not in (AUTO_ACCEPT, ERROR) for d in decisions),
        "auto_accepted": decisions.count(AUTO_ACCEPT),
        "failed": sum(r["failed"] for r in rows),
        "scores": scores,
    }


def remaining_by_band(queue: dict) -> dict[str, int]:
    """:func:`queue_counts`' unlabeled tasks per queue band: the batch, the rest, the auto-accepted."""
    return {QUERY: queue["batch"], REST: queue["queued"] - queue["batch"], AUTO_ACCEPT: queue["auto_accepted"]}


def live_job(worker_state: dict, project: int) -> dict | None:
    """The running training of this project: phase, epoch of epochs, elapsed and an ETA (elapsed per finished epoch
    times the epochs left; None before the first epoch)."""
    if worker_state.get("project") != project or worker_state.get("phase") in (None, "idle", "error"):
        return None
    epoch, epochs, elapsed = worker_state.get("epoch"), worker_state.get("epochs"), worker_state.get("elapsed_s", 0.0)
    eta = elapsed / epoch * (epochs - epoch) if epoch and epochs and epoch < epochs else None
    return {**worker_state, "eta_s": None if eta is None else round(eta, 1)}


def retraining_cadence(train_every: int, counted: int) -> str:
    """When the project retrains by itself, in words: after every ``train_every`` new or updated annotations
    (``TRAIN_EVERY``), ``counted`` of them so far; 0: only when someone presses "Start Training".

    Example:
        >>> retraining_cadence(10, 3)
        'by itself after every 10 new or updated annotations (TRAIN_EVERY): 3 counted, 7 to go; or "Start Training"'
        >>> retraining_cadence(0, 3)
        'only when "Start Training" is pressed (TRAIN_EVERY=0)'
    """
    if train_every <= 0:
        return 'only when "Start Training" is pressed (TRAIN_EVERY=0)'
    to_go = max(train_every - counted, 0)
    return (
        f"by itself after every {train_every} new or updated annotations (TRAIN_EVERY): {counted} counted, "
        f'{to_go} to go; or "Start Training"'
    )


def project_overview(
    store: Store,
    project: int,
    version: str | None,
    worker_state: dict,
    ceal: CealConfig,
    names: tuple[str, ...],
    stop_threshold: float = DEFAULT_THRESHOLD,
    stop_patience: int = DEFAULT_PATIENCE,
    promotion: str | None = None,
    ceal_gate: CealCalibration | None = None,
    train_every: int = 0,
) -> dict:
    """Everything the dashboard shows of one project (see the module docstring); ``promotion``: the promotion rule
    as a sentence (:func:`~detector_al.pipelines.retrain_dataset.promotion_rule`; default: with its defaults);
    ``train_every``: the backend's ``TRAIN_EVERY``."""
    info = store.project(project)
    signals = Signals(store)
    curve = learning_curve(store, project)
    counts = next((p["class_counts"] for p in reversed(curve) if p["class_counts"]), None)
    queue = queue_counts(store, project, version)
    scores = np.asarray(queue.pop("scores"), np.float64)
    return {
        "project": project,
        "round": info["round"],
        "model_version": version,
        "sampling_warning": info["sampling_warning"],
        "curve": curve,
        "promotion_rule": promotion or promotion_rule(),
        "live_job": live_job(worker_state, project),
        "retraining": retraining_cadence(train_every, info["annotations_since_training"]),
        "jobs": [
            {k: j[k] for k in ("id", "status", "reason", "requested_at", "finished_at", "error", "model_version")}
            | {"promoted": bool(json.loads(j["detail"] or "{}").get("promoted"))}
            for j in store.project_jobs(project, limit=10)
        ],
        "queue": queue,
        "scores": histogram(scores),
        "ceal_threshold": ceal.threshold(info["round"]) if ceal.enabled else None,
        "ceal": ceal_summary(ceal_gate, ceal),
        "labels_per_class": None if counts is None else dict(zip(names, counts, strict=False)),
        "stopping": signals.stopping(project, stop_threshold, stop_patience),
        "label_errors": signals.label_errors(project),
        "annotator_time": project_time(AnnotationTimes(store).records(project), remaining_by_band(queue)),
        "generated_at": time.time(),
    }


def ceal_summary(gate: CealCalibration | None, ceal: CealConfig) -> str:
    """What auto-accept does with the serving model, in words: its gate's verdict
    (:mod:`~detector_al.pipelines.ceal_gate`), or the settings' threshold until a retraining judges it."""
    if gate is not None:
        return gate.describe()
    if not ceal.enabled:
        return "off by the settings"
    return f"at min_confidence {ceal.min_confidence} (the settings'); judged on held-out labels at the next training"


def histogram(scores: np.ndarray, bins: int = 30) -> dict:
    """``{"edges", "counts", "n"}`` of the scores (log-spaced bins when they span decades, as entropy sums do)."""
    if len(scores) == 0:
        return {"edges": [], "counts": [], "n": 0}
    lo, hi = float(scores.min()), float(scores.max())
    if hi <= lo:
        hi = lo + 1e-9
    counts, edges = np.histogram(scores, bins=bins, range=(lo, hi))
    return {"edges": edges.round(6).tolist(), "counts": counts.tolist(), "n": len(scores)}


def status_signals(store: Store, stop_threshold: float, stop_patience: int) -> tuple[dict, dict]:
    """``/status``'s ``stopping`` and ``label_errors`` objects: the rule and, per project, its state."""
    signals = Signals(store)
    projects = [p["project"] for p in store.projects()]
    stopping = {
        "rule": f"stop when the box-level F1 of consecutive models on the stop set stays >= {stop_threshold} for "
        f"{stop_patience} promotions",
        "threshold": stop_threshold,
        "patience": stop_patience,
        "projects": {str(p): signals.stopping(p, stop_threshold, stop_patience) for p in projects},
    }
    label_errors = {
        "rule": "a confident model box with no human box (overlooked), of another class (swapped), or off the human"
        " box (located); score = sum of the flagged boxes' confidences",
        "projects": {str(p): signals.label_errors(p, limit=5) for p in projects},
    }
    return stopping, label_errors


def status_annotator_time(store: Store, version: str | None) -> dict:
    """``/status``'s ``annotator_time``: how its figures are computed and, per project,
    :func:`~detector_al.signals.annotator_time.project_time` (the queue left is the serving version's)."""
    times = AnnotationTimes(store)
    projects = sorted({p["project"] for p in store.projects()} | set(times.projects()))
    return {
        "statistic": STATISTIC,
        "projects": {
            str(p): project_time(times.records(p), remaining_by_band(queue_counts(store, p, version))) for p in projects
        },
    }


def status_ceal(service) -> dict:
    """``/status``'s ``ceal``: what auto-accept runs with for the serving version, and its gate's evidence (None until
    a retraining judged it)."""
    gate, ceal = service.ceal_calibration(), service.ceal_for()
    return {
        "version": service.model_version,
        "enabled": ceal.enabled,
        "min_confidence": ceal.min_confidence,
        "summary": ceal_summary(gate, ceal),
        "gate": None if gate is None else asdict(gate),
    }
