"""What the loop learns about itself, in the store's SQLite file: the stop set's boxes per model version, the
agreement of consecutive models (the stopping signal, :mod:`detector_al.signals.stopping`), and the likely errors of human
labels (:mod:`detector_al.signals.label_errors`)."""

from __future__ import annotations

import json
import time

import numpy as np

from detector_al.model.predictions import Detections
from detector_al.signals.label_errors import LabelErrors
from detector_al.signals.stopping import stopping_state
from detector_al.state.store import Store


def boxes_to_json(d: Detections) -> str:
    """``[[x1, y1, x2, y2, confidence, class], ...]`` (pixels, 2 decimals)."""
    rows = np.column_stack([d.xyxy, d.confidence, d.class_id]).round(2).tolist() if len(d) else []
    return json.dumps(rows)


def boxes_from_json(text: str) -> Detections:
    a = np.array(json.loads(text), np.float32).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int64))


class Signals:
    """The stopping signal's and the label review's rows of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- stopping ------------------------------------------------------------------------------------------
    def record_stop_boxes(self, project: int, version: str, boxes: dict[int, Detections]) -> None:
        with self.store.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO stop_boxes (project, task_id, model_version, boxes) VALUES (?,?,?,?)",
                [(project, t, version, boxes_to_json(d)) for t, d in boxes.items()],
            )

    def stop_boxes(self, project: int, version: str) -> dict[int, Detections]:
        rows = self.store.query(
            "SELECT task_id, boxes FROM stop_boxes WHERE project = ? AND model_version = ?", (project, version)
        )
        return {r["task_id"]: boxes_from_json(r["boxes"]) for r in rows}

    def stop_set(self, project: int) -> list[int]:
        """The stop set's task ids as first recorded (those of the oldest version with boxes)."""
        rows = self.store.query(
            "SELECT task_id FROM stop_boxes WHERE project = ? AND model_version = (SELECT model_version FROM"
            " stop_boxes WHERE project = ? ORDER BY rowid LIMIT 1) ORDER BY task_id",
            (project, project),
        )
        return [r["task_id"] for r in rows]

    def record_agreement(
        self, project: int, version: str, previous: str, value: float, images: int, labeled: int | None
    ) -> None:
        with self.store.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO agreements (project, model_version, previous_version, agreement, images,"
                " labeled, measured_at) VALUES (?,?,?,?,?,?,?)",
                (project, version, previous, value, images, labeled, time.time()),
            )

    def agreements(self, project: int) -> list[dict]:
        rows = self.store.query("SELECT * FROM agreements WHERE project = ? ORDER BY measured_at", (project,))
        return [dict(r) for r in rows]

    def stopping(self, project: int, threshold: float, patience: int) -> dict:
        """:func:`~detector_al.signals.stopping.stopping_state` over the project's agreements, with their history."""
        history = self.agreements(project)
        state = stopping_state([h["agreement"] for h in history], threshold, patience)
        return {**state, "history": history}

    # ---- label errors --------------------------------------------------------------------------------------
    def record_label_errors(self, project: int, version: str, found: dict[int, tuple[LabelErrors, bool]]) -> None:
        """Replace the project's label-error rows by this training's (task -> (errors, in_sample))."""
        now = time.time()
        with self.store.transaction() as c:
            c.execute("DELETE FROM label_errors WHERE project = ?", (project,))
            c.executemany(
                "INSERT INTO label_errors (project, task_id, model_version, score, kinds, in_sample, updated_at)"
                " VALUES (?,?,?,?,?,?,?)",
                [(project, t, version, e.score, json.dumps(e.kinds), int(ins), now) for t, (e, ins) in found.items()],
            )

    def label_errors(self, project: int, limit: int = 20) -> dict:
        """``{"checked", "flagged", "flagged_out_of_sample", "model_version", "top": [rows, highest score first]}``."""
        q = self.store.query
        checked = q("SELECT COUNT(*) n, MAX(model_version) v FROM label_errors WHERE project = ?", (project,))[0]
        flagged = q(
            "SELECT COUNT(*) n, SUM(NOT in_sample) o FROM label_errors WHERE project = ? AND score > 0", (project,)
        )[0]
        top = q(
            "SELECT task_id, score, kinds, in_sample FROM label_errors WHERE project = ? AND score > 0"
            " ORDER BY score DESC, task_id LIMIT ?",
            (project, limit),
        )
        return {
            "checked": checked["n"],
            "flagged": flagged["n"],
            "flagged_out_of_sample": flagged["o"] or 0,
            "model_version": checked["v"],
            "top": [{**dict(r), "kinds": json.loads(r["kinds"])} for r in top],
        }
