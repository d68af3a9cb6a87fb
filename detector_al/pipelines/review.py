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
from collections.abc import Callable
from pathlib import Path

import numpy as np

from detector_al.label_studio.regions import from_label_studio_regions
from detector_al.label_studio.task_sink import LABEL_ERROR_FIELD
from detector_al.model.predictions import Detections
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
    image_of: Callable[[object], Path | None],
    model,
    in_sample: Callable[[int], bool],
) -> dict:
    """Flag likely errors of the human labels with ``model``; store them (replacing the last review) and return
    ``{"checked", "flagged"}``. ``labeled``: ``(task, result)`` pairs; ``in_sample(task id)``: trained on it."""
    tasks, paths = [], []
    for task, result in labeled:
        p = image_of(task)
        if p is not None:
            tasks.append((task, result))
            paths.append(str(p))
    preds = service.predict_paths(paths, lambda _, pred: pred if pred.ok else None, model)
    found: dict[int, tuple[LabelErrors, bool]] = {}
    for (task, result), pred in zip(tasks, preds, strict=True):
        if pred is None:
            continue
        boxes, classes = from_label_studio_regions(result, target)
        scale = np.array([pred.width, pred.height, pred.width, pred.height], np.float32)
        human = Detections(np.asarray(boxes, np.float32).reshape(-1, 4) * scale, np.ones(len(classes)), classes)
        found[int(task.id)] = (find_label_errors(pred.detections, human), in_sample(int(task.id)))
    signals.record_label_errors(project, model.version, found)
    return {"checked": len(found), "flagged": sum(e.score > 0 for e, _ in found.values())}


def publish_label_errors(ls, project: int, labeled: list, found: dict) -> None:
    """Write each reviewed task's error score into its data (``al_label_error``), best effort, one task at a time."""
    for task, _ in labeled:
        row = found.get(int(task.id))
        score = round(row["score"], 4) if row else 0.0
        if (task.data or {}).get(LABEL_ERROR_FIELD, 0.0) == score:
            continue
        try:
            ls.tasks.update(id=task.id, data={**(task.data or {}), LABEL_ERROR_FIELD: score})
        except Exception as exc:
            log.warning("task %s: label-error score not written: %s", task.id, exc)


def measure_agreement(
    service, signals: Signals, project: int, tasks: list, image_of, old, new, threshold: float, labeled: int
) -> float | None:
    """On promotion: the old and the new model's boxes on the project's stop set (chosen from ``tasks`` the first
    time), stored per version, and their agreement recorded. Returns it (None without a stop set)."""
    ids = signals.stop_set(project) or stop_set(project, [t.id for t in tasks])
    by_id = {t.id: t for t in tasks}
    members = [(i, p) for i in ids if i in by_id and (p := image_of(by_id[i])) is not None]
    if not members:
        return None
    boxes = {}
    for model in (old, new):
        known = signals.stop_boxes(project, model.version)
        missing = [(i, p) for i, p in members if i not in known]
        if missing:
            got = service.predict_paths([str(p) for _, p in missing], lambda _, pr: shown_boxes(pr, threshold), model)
            fresh = {i: b for (i, _), b in zip(missing, got, strict=True)}
            signals.record_stop_boxes(project, model.version, fresh)
            known = {**known, **fresh}
        boxes[model.version] = known
    common = [i for i, _ in members if i in boxes[old.version] and i in boxes[new.version]]
    value = agreement([boxes[old.version][i] for i in common], [boxes[new.version][i] for i in common])
    signals.record_agreement(project, new.version, old.version, value, len(common), labeled)
    return value
