"""Ingest's offline outputs: a Label Studio import file, and the auto-accepted images as a YOLO dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from detector_al.io.files import atomic_write
from detector_al.io.yolo_format import yolo_lines
from detector_al.pipelines.ingest_rows import task_payload
from detector_al.queue.build import AUTO_ACCEPT
from detector_al.state.store import Store

OFFLINE_PROJECT = 0
"""The store's project number of an ingest without Label Studio."""


def write_tasks_json(store: Store, out: Path, model_version: str, project: int = OFFLINE_PROJECT) -> int:
    """A Label Studio import file (a JSON list of tasks with predictions and priority fields), streamed."""
    n = 0
    with atomic_write(out) as f:
        f.write("[\n")
        for row in store.pool_rows(project, "error IS NULL", order="confidence IS NULL, confidence"):
            f.write((",\n" if n else "") + json.dumps(task_payload(row, model_version)))
            n += 1
        f.write("\n]\n")
    return n


def export_pseudo_labels(store: Store, out: Path, names: tuple[str, ...], project: int = OFFLINE_PROJECT) -> int:
    """The auto-accepted images as a YOLO dataset (images copied, labels from the pseudo-labels, data.yaml).

    The folder is marked as machine-made (``PSEUDO_LABELS.txt``): these are not human annotations.
    """
    img_dir, lbl_dir = out / "images", out / "labels"
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for row in store.pool_rows(project, f"decision = '{AUTO_ACCEPT}' AND pseudo_labels IS NOT NULL"):
        pl = json.loads(row.pseudo_labels)
        stem = f"{Path(row.path).stem}-{row.key[:8]}"
        src = Path(row.path)
        shutil.copyfile(src, img_dir / f"{stem}{src.suffix.lower()}")
        lines = yolo_lines(pl["xyxy"], pl["class_id"], row.width, row.height)
        with atomic_write(lbl_dir / f"{stem}.txt") as f:
            f.write("\n".join(lines) + "\n")
        n += 1
    names_yaml = "\n".join(f"  {i}: {nm}" for i, nm in enumerate(names))
    with atomic_write(out / "data.yaml") as f:
        f.write(
            f"# CEAL pseudo-labels made by detector-al: model predictions, NOT human annotations\n"
            f"train: images\nval: images\nnames:\n{names_yaml}\n"
        )
    with atomic_write(out / "PSEUDO_LABELS.txt") as f:
        f.write("These labels were produced by a model (CEAL auto-accept), not by annotators.\n")
    return n
