"""Label Studio annotations -> :class:`~detector_al.signals.annotator_time.AnnotationTime`: the seconds Label Studio
measured (``lead_time``) and what the annotator started from, recorded in the store as they arrive.

- **The prediction shown** is the one the annotation names (``parent_prediction``: the labeling page sets it when it
  starts from a prediction), else the task's newest prediction made before the annotation, else none (drawn from
  scratch). Its model version, its queue band (:func:`~detector_al.queue.build.queue_band` of its score) and its
  boxes are what the annotator started from.
- **The edit** from its boxes to the result's is :func:`~detector_al.policy.annotator_cost.annotator_actions`: the
  cost model's matching (greedy by IoU), on boxes in fractions of the image (IoU is the same as in pixels). Boxes
  of a label no model class maps to are not counted, as in training.
- **Sources**: the ``ANNOTATION_CREATED``/``ANNOTATION_UPDATED`` webhook (:func:`record_webhook_annotation`: at once
  from the payload and the store's knowledge, then from the task's predictions in Label Studio) and retraining's
  listing of the project's tasks (:func:`record_listed`), which catches what the webhooks missed.

Example:
    >>> a = {"id": 5, "lead_time": 31.5, "was_cancelled": False, "result": []}
    >>> annotation_time(a, 9, None, None).lead_time
    31.5
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from detector_al.label_studio.annotations import as_dict
from detector_al.label_studio.config import RectangleTarget
from detector_al.label_studio.regions import from_label_studio_regions
from detector_al.model.predictions import Detections
from detector_al.policy.annotator_cost import annotator_actions
from detector_al.queue.build import queue_band
from detector_al.signals.annotator_time import NOTHING_SHOWN, AnnotationTime, ShownPrediction
from detector_al.state.annotation_times import LISTING, WEBHOOK, AnnotationTimes
from detector_al.state.store import Store

log = logging.getLogger(__name__)


def seconds(value: Any) -> float | None:
    """A ``lead_time`` as seconds: a finite non-negative number, else None (not measured)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _id(value: Any) -> int | None:
    """An id as Label Studio gives it: a number, or an object with ``id`` (``completed_by`` in listings)."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def timestamp(value: Any) -> dt.datetime | None:
    """Label Studio's time (an ISO string or a datetime) as an aware datetime (naive ones are UTC); None if not one."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _rectangles(result: list) -> int:
    return sum(isinstance(r, dict) and r.get("type") == "rectanglelabels" for r in result)


def _result(obj: dict) -> list:
    result = obj.get("result")
    return result if isinstance(result, list) else []


def regions_to_detections(result: list, target: RectangleTarget) -> Detections | None:
    """A result's boxes of ``target`` (:func:`~detector_al.label_studio.regions.from_label_studio_regions`, in
    fractions of the image) with their classes; None when a region is malformed."""
    try:
        boxes, classes = from_label_studio_regions([r for r in result if isinstance(r, dict)], target)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return Detections(boxes, np.ones(len(boxes), np.float32), classes)


def shown_prediction(prediction: dict, target: RectangleTarget | None) -> ShownPrediction:
    """What a Label Studio prediction shows: its model version, queue band and boxes (only counted without a target)."""
    result = _result(prediction)
    boxes = regions_to_detections(result, target) if target is not None else None
    score = prediction.get("score")
    band = queue_band(float(score)) if isinstance(score, int | float) and not isinstance(score, bool) else None
    return ShownPrediction(
        prediction.get("model_version") or None, band, len(boxes) if boxes is not None else _rectangles(result), boxes
    )


def started_from(annotation: dict, predictions: Iterable[dict]) -> dict | None:
    """The prediction the annotator started from (the module docstring's rule), or None."""
    predictions = list(predictions)
    parent = _id(annotation.get("parent_prediction"))
    for p in predictions:
        if parent is not None and p.get("id") == parent:
            return p
    made = timestamp(annotation.get("created_at"))
    earliest = dt.datetime.min.replace(tzinfo=dt.UTC)
    before = [p for p in predictions if made is None or (timestamp(p.get("created_at")) or earliest) <= made]
    return max(before, key=lambda p: (timestamp(p.get("created_at")) or earliest, _id(p.get("id")) or 0), default=None)


def shown_from(annotation: dict, predictions: Iterable[dict], target: RectangleTarget | None) -> ShownPrediction:
    """:func:`shown_prediction` of :func:`started_from`; :data:`NOTHING_SHOWN` when there was none."""
    p = started_from(annotation, predictions)
    return NOTHING_SHOWN if p is None else shown_prediction(p, target)


def annotation_time(
    annotation: dict, task_id: int, shown: ShownPrediction | None, target: RectangleTarget | None
) -> AnnotationTime | None:
    """One annotation's record; ``shown`` None: what it started from is not known. None for an annotation
    without an id. The edit is known only for a label (not a skip), with ``target`` and the shown boxes."""
    annotation_id = _id(annotation.get("id"))
    if annotation_id is None:
        return None
    result = _result(annotation)
    truth = regions_to_detections(result, target) if target is not None else None
    skipped = bool(annotation.get("was_cancelled"))
    known = not skipped and truth is not None and shown is not None and shown.boxes is not None
    when = timestamp(annotation.get("updated_at") or annotation.get("created_at"))
    return AnnotationTime(
        annotation_id=annotation_id,
        task_id=task_id,
        lead_time=seconds(annotation.get("lead_time")),
        skipped=skipped,
        annotator=_id(annotation.get("completed_by")),
        model_version=shown.model_version if shown else None,
        band=shown.band if shown else None,
        shown=shown.count if shown else None,
        boxes=len(truth) if truth is not None else _rectangles(result),
        edit=annotator_actions(shown.boxes, truth) if known else None,
        updated_at=when.astimezone(dt.UTC).isoformat() if when else None,
    )


def listed_annotation_times(task: Any, target: RectangleTarget | None) -> list[AnnotationTime]:
    """The records of every annotation of a task listed with ``fields="all"`` (its annotations and predictions)."""
    t = as_dict(task)
    predictions = [as_dict(p) for p in t.get("predictions") or []]
    out = []
    for a in map(as_dict, t.get("annotations") or []):
        rec = annotation_time(a, t["id"], shown_from(a, predictions, target), target)
        if rec is not None:
            out.append(rec)
    return out


def record_listed(store: Store, project: int, tasks: Iterable[Any], target: RectangleTarget | None) -> int:
    """Record the annotations of listed tasks (retraining's listing: what the webhooks missed). Never raises (a
    failure is logged: it must not stop a training). Returns how many were recorded."""
    try:
        records = [r for t in tasks for r in listed_annotation_times(t, target)]
        AnnotationTimes(store).record(project, records, LISTING)
        return len(records)
    except Exception as exc:
        log.warning("project %s: annotation times not recorded from the listing: %s", project, exc)
        return 0


def record_webhook_annotation(
    store: Store, project: int, task_id: int, annotation: dict, target: RectangleTarget | None, ls: Any | None = None
) -> AnnotationTime | None:
    """Record an annotation a webhook brought: at once with what the store knows of the task's prediction
    (:meth:`~detector_al.state.annotation_times.AnnotationTimes.shown_from_store`), then, with ``ls`` (the SDK
    client), from the task's predictions in Label Studio (the prediction shown, its boxes, the edit). A Label Studio
    failure is logged and leaves the first record."""
    times = AnnotationTimes(store)
    first = annotation_time(annotation, task_id, times.shown_from_store(project, task_id), target)
    if first is None:
        return None
    times.record(project, [first], WEBHOOK)
    if ls is None:
        return first
    try:
        predictions = [as_dict(p) for p in ls.predictions.list(task=task_id)]
    except Exception as exc:
        log.warning("task %s: its predictions could not be read for the annotation time: %s", task_id, exc)
        return first
    rec = annotation_time(annotation, task_id, shown_from(annotation, predictions, target), target)
    times.record(project, [rec], WEBHOOK)
    return rec
