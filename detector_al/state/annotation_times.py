"""The ``annotation_times`` table: one row per Label Studio annotation, its seconds and what the annotator started
from (:class:`~detector_al.signals.annotator_time.AnnotationTime`), written by the webhook and by retraining's listing.

A row is replaced only by the same annotation seen later (Label Studio's ``updated_at`` is newer), or seen as
recently and knowing more (the edit, where the row lacks it): a webhook's first record from the store's knowledge
never undoes what Label Studio's predictions told. An updated annotation's ``lead_time`` is Label Studio's running
total (its labeling page sends the earlier seconds plus this session's), so the later row holds all the time spent. An annotation deleted in Label Studio (``ANNOTATIONS_DELETED``, in
the ``annotations`` table) counts nowhere.

Example:
    >>> from detector_al.state.store import Store
    >>> times = AnnotationTimes(Store(":memory:"))
    >>> times.record(3, [AnnotationTime(7, 1, 12.5)], WEBHOOK)
    >>> [r.lead_time for r in times.records(3)], times.projects()
    ([12.5], [3])
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from detector_al.signals.annotator_time import (
    BAND_NAMES,
    EDIT_FIELDS,
    AnnotationTime,
    CostFit,
    ShownPrediction,
    actions_from_row,
    fit_cost_model,
    fit_rows,
    upper_outliers,
)
from detector_al.state.store import Store

WEBHOOK, LISTING = "webhook", "listing"
COLUMNS = (
    "project, annotation_id, task_id, lead_time, skipped, annotator, model_version, band, shown, boxes, draw, adjust,"
    ' "delete", relabel, verify, source, ls_updated_at, recorded_at'
)
UPSERT = (
    f"INSERT INTO annotation_times ({COLUMNS}) VALUES ({', '.join('?' * 18)})"
    " ON CONFLICT(project, annotation_id) DO UPDATE SET task_id=excluded.task_id, lead_time=excluded.lead_time,"
    " skipped=excluded.skipped, annotator=excluded.annotator, model_version=excluded.model_version,"
    " band=excluded.band, shown=excluded.shown, boxes=excluded.boxes, draw=excluded.draw, adjust=excluded.adjust,"
    ' "delete"=excluded."delete", relabel=excluded.relabel, verify=excluded.verify, source=excluded.source,'
    " ls_updated_at=excluded.ls_updated_at, recorded_at=excluded.recorded_at"
    " WHERE excluded.ls_updated_at > annotation_times.ls_updated_at"
    " OR (annotation_times.ls_updated_at IS NULL AND excluded.ls_updated_at IS NOT NULL)"
    " OR (excluded.ls_updated_at IS annotation_times.ls_updated_at"
    " AND (excluded.verify IS NOT NULL OR annotation_times.verify IS NULL))"
)


class AnnotationTimes:
    """The annotation times of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, project: int, records: Iterable[AnnotationTime], source: str) -> None:
        """Upsert ``records`` in one transaction (the module docstring says which row wins)."""
        now = time.time()
        rows = [
            (
                project,
                r.annotation_id,
                r.task_id,
                r.lead_time,
                int(r.skipped),
                r.annotator,
                r.model_version,
                r.band,
                r.shown,
                r.boxes,
                *(None if r.edit is None else getattr(r.edit, f) for f in EDIT_FIELDS),
                source,
                r.updated_at,
                now,
            )
            for r in records
        ]
        with self.store.transaction() as c:
            c.executemany(UPSERT, rows)

    def records(self, project: int) -> list[AnnotationTime]:
        """The project's annotations not deleted in Label Studio, by annotation id."""
        rows = self.store.query(
            "SELECT t.* FROM annotation_times t LEFT JOIN annotations a ON a.project = t.project AND"
            " a.annotation_id = t.annotation_id WHERE t.project = ? AND NOT COALESCE(a.deleted, 0)"
            " ORDER BY t.annotation_id",
            (project,),
        )
        return [
            AnnotationTime(
                annotation_id=r["annotation_id"],
                task_id=r["task_id"],
                lead_time=r["lead_time"],
                skipped=bool(r["skipped"]),
                annotator=r["annotator"],
                model_version=r["model_version"],
                band=r["band"],
                shown=r["shown"],
                boxes=r["boxes"] or 0,
                edit=actions_from_row(r[f] for f in EDIT_FIELDS),
                updated_at=r["ls_updated_at"],
            )
            for r in rows
        ]

    def cost_fit(self, project: int) -> tuple[CostFit | None, int]:
        """The project's fitted cost model (:func:`~detector_al.signals.annotator_time.fit_cost_model`; None before it
        has enough annotations) and how many annotations it can use."""
        records = self.records(project)
        rows = fit_rows(records, upper_outliers(records))
        return fit_cost_model(rows), len(rows)

    def projects(self) -> list[int]:
        """The projects with recorded annotations."""
        return [r["project"] for r in self.store.query("SELECT DISTINCT project FROM annotation_times ORDER BY 1")]

    def shown_from_store(self, project: int, task_id: int) -> ShownPrediction | None:
        """What the store knows the task showed: its pool row's version and band, and the boxes the backend showed (None
        where ``ingest`` made the prediction); None when it knows nothing. The boxes themselves come from Label
        Studio."""
        rows = self.store.query(
            "SELECT model_version, decision, n_boxes FROM pool WHERE project = ? AND task_id = ?", (project, task_id)
        )
        if not rows:
            return None
        r = rows[0]
        band = r["decision"] if r["decision"] in BAND_NAMES else None
        return ShownPrediction(r["model_version"], band, r["n_boxes"])
