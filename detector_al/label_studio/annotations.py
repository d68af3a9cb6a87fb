"""Which annotations are labels: the one rule that the store, retraining and ingest apply.

A task is **labeled** when it has an annotation that is neither cancelled (a skip: Label Studio saves it with
``was_cancelled``) nor deleted; its label is the latest such annotation (by ``updated_at``, then ``created_at``, then
id). Label Studio no longer lists a deleted annotation, so on its side only the cancel needs checking; the backend's
store sees deletions as ``ANNOTATIONS_DELETED`` webhooks (:meth:`~detector_al.state.store.Store.record_annotation_event`)
and applies the same rule in SQL (:data:`~detector_al.state.store.LABELED_TASKS`).

Example:
    >>> latest_label({"annotations": [{"id": 1, "result": [], "was_cancelled": True}]}) is None
    True
"""

from __future__ import annotations

from typing import Any


def counts_as_label(annotation: dict) -> bool:
    """An annotation that Label Studio lists is a label unless it is a skip (``was_cancelled``)."""
    return not annotation.get("was_cancelled")


def as_dict(obj: Any) -> dict:
    """A Label Studio object as a dict (SDK objects are pydantic models; listings and webhooks give dicts)."""
    if isinstance(obj, dict):
        return obj
    return obj.model_dump() if hasattr(obj, "model_dump") else obj.dict()


def latest_label(task: Any) -> list[dict] | None:
    """The result of the task's latest annotation that counts as a label (None: the task is not labeled).

    ``task``: a Label Studio task (an SDK object or a dict) listed with its annotations (``fields="all"``)."""
    raw = task.get("annotations") if isinstance(task, dict) else getattr(task, "annotations", None)
    labels = [a for a in map(as_dict, raw or []) if counts_as_label(a)]
    if not labels:
        return None
    best = max(labels, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
    return best.get("result") or []


def is_labeled(task: Any) -> bool:
    """Whether :func:`latest_label` finds a label on the task."""
    return latest_label(task) is not None


def is_labeled_by_count(task: Any) -> bool:
    """:func:`is_labeled` read from Label Studio's own counter, for a task listed without its annotations:
    ``total_annotations`` counts the task's annotations that are not cancelled (deleted ones are gone), the
    annotations :func:`counts_as_label` keeps, so ``total_annotations > 0`` exactly when a label exists."""
    n = task.get("total_annotations") if isinstance(task, dict) else getattr(task, "total_annotations", None)
    return bool(n)
