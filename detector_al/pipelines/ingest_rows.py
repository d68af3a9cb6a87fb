"""What ingest writes of one image: its stored row, and the Label Studio task (data fields, pre-annotation and the
score Label Studio serves by) made from that row."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from detector_al.label_studio.config import RectangleTarget
from detector_al.label_studio.regions import to_label_studio_regions
from detector_al.policy.decision import Decision
from detector_al.queue.build import ERROR, label_studio_score
from detector_al.state.store import PoolRow


def task_data(row: PoolRow) -> dict:
    return {
        "image": row.url,
        "al_hash": row.key,
        "al_priority": round(row.priority or 0.0, 6),
        "al_uncertainty": None if row.score is None else round(row.score, 8),
        "al_status": row.decision,
    }


def label_studio_score_of(row: PoolRow) -> float:
    """The prediction score Label Studio serves by: the row's ``confidence`` (``1 - al_priority``, see
    :mod:`detector_al.queue.build`)."""
    return 1.0 if row.confidence is None else row.confidence


def task_payload(row: PoolRow, model_version: str) -> dict:
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


def replace_row(row: PoolRow, **kw) -> PoolRow:
    """``row`` with these fields changed."""
    return replace(row, **kw)


def image_row(d: Decision, content_hash: str, target: RectangleTarget, round_index: int, version: str) -> PoolRow:
    """The stored row of one file's decision (its Label Studio URL and task id are the writer's to add)."""
    if d.error:
        return PoolRow(content_hash, path=d.source, error=d.error, decision=ERROR, model_version=version)
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
    return PoolRow(
        content_hash,
        path=d.source,
        width=d.width,
        height=d.height,
        score=d.score,
        confidence=label_studio_score(d.status, d.confidence),
        decision=d.status,
        round=round_index,
        model_version=version,
        regions=json.dumps(to_label_studio_regions(d.shown, d.width, d.height, target)),
        pseudo_labels=pseudo,
        embedding=d.embedding.astype(np.float32).tobytes(),
        max_confidence=d.max_confidence,
    )


def must_upload(row: PoolRow) -> bool:
    """A new task's image goes through upload: it has no Label Studio URL yet, or it lies under the shared
    local-files root but a browser cannot show it raw (TIFF, HEIC, 16-bit...), so its web copy is uploaded."""
    from detector_al.io.images import needs_web_copy

    return row.url is None or needs_web_copy(row.path)
