"""What a retraining learns about the loop itself (run by :class:`~detector_al.pipelines.retrain.Retrainer`):

- **label review**: the new model predicts every labeled image; :func:`~detector_al.signals.label_errors.find_label_errors`
  flags likely errors in the human boxes; the scores go to the store and to Label Studio (the task's
  ``al_label_error`` field, which the "Possible label errors" tab orders by: the open-source Data Manager does not
  show a prediction's ``mislabeling``);
- **stopping signal**: on promotion, the old and the new model predict the project's stop set and their agreement is
  recorded (:mod:`detector_al.signals.stopping`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from detector_al.io.fetch.cache import Pins
from detector_al.label_studio.regions import from_label_studio_regions
from detector_al.label_studio.task_sink import LABEL_ERROR_FIELD
from detector_al.model.predictions import Detections
from detector_al.pipelines.retrain_pool import BATCH, batched
from detector_al.signals.label_errors import LabelErrors, find_label_errors
from detector_al.signals.stopping import agreement, stop_set
from detector_al.state.signals import Signals

log = logging.getLogger(__name__)


def shown_boxes(pred, threshold: float) -> Detections:
    """A prediction's boxes as annotators see them (confidence >= ``threshold``); none for an unreadable image."""
    if not pred.ok:
        return Detections.empty()
    d = pred.detections
    return d[d.confidence >= threshold]


def review_labels(
    service,
    signals: Signals,
    project: int,
    labeled: list,
    target,
    images,
    model,
    in_sample: Callable[[int], bool],
    check: Callable[[], None] = lambda: None,
) -> dict:
    """Flag likely errors of the human labels with ``model``; store them (replacing the last review) and return
    ``{"checked", "flagged"}``. ``labeled``: :class:`~detector_al.pipelines.retrain_pool.LabeledTask` s; ``images``:
    the job's :class:`~detector_al.pipelines.retrain_pool.TaskImages` (a batch fetched and pinned at a time);
    ``in_sample(task id)``: trained on it; ``check``: the job's cancel and time limit, between batches."""
    found: dict[int, tuple[LabelErrors, bool]] = {}
    for batch in batched(labeled, BATCH):
        check()
        with Pins() as pins:
            fetched = images.fetch(batch, pins)
            preds = service.predict_paths(
                [str(p) for _, p in fetched], lambda _, pred: pred if pred.ok else None, model
            )
        for (task, _), pred in zip(fetched, preds, strict=True):
            if pred is None:
                continue
            boxes, classes = from_label_studio_regions(task.result, target)
            scale = np.array([pred.width, pred.height, pred.width, pred.height], np.float32)
            human = Detections(np.asarray(boxes, np.float32).reshape(-1, 4) * scale, np.ones(len(classes)), classes)
            found[int(task.id)] = (find_label_errors(pred.detections, human), in_sample(int(task.id)))
    signals.record_label_errors(project, model.version, found)
    return {"checked": len(found), "flagged": sum(e.score > 0 for e, _ in found.values())}


def publish_label_errors(ls, project: int, labeled: list, found: dict) -> None:
    """Write each reviewed task's error score into its data (``al_label_error``), best effort, one task at a time
    (``labeled``: objects with ``id`` and ``data``)."""
    for task in labeled:
        row = found.get(int(task.id))
        score = round(row["score"], 4) if row else 0.0
        if (task.data or {}).get(LABEL_ERROR_FIELD, 0.0) == score:
            continue
        try:
            ls.tasks.update(id=task.id, data={**(task.data or {}), LABEL_ERROR_FIELD: score})
        except Exception as exc:
            log.warning("task %s: label-error score not written: %s", task.id, exc)


def measure_agreement(
    service,
    signals: Signals,
    project: int,
    task_ids: Callable[[], Iterable[int]],
    image_of: Callable[[int, Pins], Path | None],
    old,
    new,
    threshold: float,
    labeled: int,
) -> float | None:
    """On promotion: the old and the new model's boxes on the project's stop set (chosen the first time from
    ``task_ids()``, streamed), stored per version, and their agreement recorded. ``image_of(task id, pins)``: the
    task's image, pinned while the set is predicted. Returns the agreement (None without a stop set)."""
    ids = signals.stop_set(project) or stop_set(project, task_ids())
    with Pins() as pins:
        members = [(i, p) for i in ids if (p := image_of(i, pins)) is not None]
        if not members:
            return None
        boxes = {}
        for model in (old, new):
            known = signals.stop_boxes(project, model.version)
            missing = [(i, p) for i, p in members if i not in known]
            if missing:
                got = service.predict_paths(
                    [str(p) for _, p in missing], lambda _, pr: shown_boxes(pr, threshold), model
                )
                fresh = {i: b for (i, _), b in zip(missing, got, strict=True)}
                signals.record_stop_boxes(project, model.version, fresh)
                known = {**known, **fresh}
            boxes[model.version] = known
    common = [i for i, _ in members if i in boxes[old.version] and i in boxes[new.version]]
    value = agreement([boxes[old.version][i] for i in common], [boxes[new.version][i] for i in common])
    signals.record_agreement(project, new.version, old.version, value, len(common), labeled)
    return value
