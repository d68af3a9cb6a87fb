"""What ingest writes of one image: its stored row, and the Label Studio task (data fields, pre-annotation and the
score Label Studio serves by) made from that row."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from detector_al.label_studio.config import RectangleTarget
from detector_al.label_studio.regions import to_label_studio_regions
from detector_al.policy.decision import Decision
from detector_al.queue.build import ERROR, label_studio_score, priority
from detector_al.state.store import ImageRow


def task_data(row: ImageRow) -> dict:
    return {
        "image": row.url,
        "al_hash": row.content_hash,
        "al_priority": round(row.priority or 0.0, 6),
        "al_uncertainty": None if row.score is None else round(row.score, 8),
        "al_status": row.decision,
    }


def label_studio_score_of(row: ImageRow) -> float:
    """The prediction score Label Studio serves by: ``1 - al_priority`` (see :mod:`detector_al.queue.build`)."""
    return 1.0 - (row.priority or 0.0)


def task_payload(row: ImageRow, model_version: str) -> dict:
    return {
        "data": task_data(row),
        "predictions": [
            {
                "result": json.loads(row.regions or "[]"),
                "score": label_studio_score_of(row),
                "model_version": model_version,
            }
        ],
    }


def replace_row(row: ImageRow, **kw) -> ImageRow:
    """``row`` with these fields changed."""
    return replace(row, **kw)


def image_row(d: Decision, content_hash: str, target: RectangleTarget, round_index: int, version: str) -> ImageRow:
    """The stored row of one file's decision (its Label Studio URL and task id are the writer's to add)."""
    if d.error:
        return ImageRow(content_hash, d.source, error=d.error, decision=ERROR, model_version=version)
    pseudo = None
    if d.accepted:
        pl = d.pseudo_labels
        pseudo = json.dumps(
            {
                "xyxy": pl.xyxy.round(2).tolist(),
                "class_id": pl.class_id.tolist(),
                "confidence": pl.confidence.round(4).tolist(),
            }
        )
    return ImageRow(
        content_hash,
        d.source,
        width=d.width,
        height=d.height,
        score=d.score,
        confidence=round(d.confidence, 6),
        decision=d.status,
        priority=priority(label_studio_score(d.status, d.confidence)),
        round=round_index,
        model_version=version,
        regions=json.dumps(to_label_studio_regions(d.shown, d.width, d.height, target)),
        pseudo_labels=pseudo,
        embedding=d.embedding.astype(np.float32).tobytes(),
        max_confidence=d.max_confidence,
    )


def must_upload(row: ImageRow) -> bool:
    """A new task's image goes through upload: it has no Label Studio URL yet, or it lies under the shared
    local-files root but a browser cannot show it raw (TIFF, HEIC, 16-bit...), so its web copy is uploaded."""
    from detector_al.io.images import needs_web_copy

    return row.url is None or needs_web_copy(row.path)
