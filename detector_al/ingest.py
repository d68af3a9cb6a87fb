"""Bulk pre-annotation of an image folder into a prioritised Label Studio queue (or an import file).

The folder is streamed in batches: each batch is hashed, predicted, scored and auto-accepted, its tasks
are created in Label Studio (with pre-annotations and the priority fields ``al_priority``,
``al_uncertainty``, ``al_status``, ``al_hash``) and only then recorded in the SQLite store, so memory
stays flat whatever the folder size, and a run killed at any point resumes: the content hash decides
(Label Studio's ``al_hash`` fields are read back at start, so even a lost store creates no duplicate).

Once every image is scored, the query batch is chosen over the whole project (diverse, by uncertainty)
and only the tasks whose status changed are updated. The "Active learning queue" tab lists the uncertain
tasks by descending ``al_priority``; "Auto-accepted (review)" lists the CEAL pseudo-labelled ones.

Priority: a queried task gets ``al_priority = 1 + (B - i) / B`` for its place ``i`` in the batch of ``B``
(so the batch comes first, in selection order); every other task gets ``al_priority = u / (1 + u)`` for
its uncertainty ``u``: in [0, 1), increasing in ``u``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import requests

from detector_al.detector import Detector
from detector_al.files import atomic_write, file_sha256
from detector_al.label_config import RectangleTarget
from detector_al.ls_client import LabelStudioClient
from detector_al.ls_regions import to_label_studio_regions
from detector_al.progress import track
from detector_al.pseudo_labels import CealConfig, auto_accept, consistency
from detector_al.selection import DEFAULT_CANDIDATE_FACTOR, select_batch
from detector_al.store import ImageRow, Store
from detector_al.uncertainty import get_strategy

log = logging.getLogger(__name__)

QUEUE_TAB = "Active learning queue"
REVIEW_TAB = "Auto-accepted (review)"
OFFLINE_PROJECT = 0


@dataclass
class IngestConfig:
    strategy: str = "mi_aod"
    round_index: int = 0
    budget: int = 50
    ceal: CealConfig = field(default_factory=CealConfig)
    score_threshold: float = 0.25
    batch_size: int = 16
    tasks_per_request: int = 128  # images scored, then created in Label Studio with one import request
    files_root: Path | None = None  # Label Studio's LOCAL_FILES_DOCUMENT_ROOT, when the folder is under it


@dataclass
class IngestReport:
    scanned: int = 0
    new: int = 0
    already_known: int = 0
    created_tasks: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    auto_accepted: int = 0
    queried: int = 0
    elapsed_s: float = 0.0

    def summary(self) -> str:
        rate = self.new / self.elapsed_s if self.elapsed_s else 0.0
        lines = [
            f"{self.scanned} files: {self.new} new ({rate:.1f} img/s), {self.already_known} already ingested, "
            f"{len(self.failed)} unreadable; {self.created_tasks} tasks created; queue: {self.queried} to label, "
            f"{self.auto_accepted} auto-accepted"
        ]
        lines += [f"  unreadable: {p}: {e}" for p, e in self.failed]
        return "\n".join(lines)


def content_hash(path: Path) -> str:
    """The identity of an image file: SHA-256 of its bytes."""
    return file_sha256(path)


def walk_images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder``, recursively, in a stable order, without listing the tree into memory."""
    from detector_al.images import IMAGE_SUFFIXES

    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES):
                yield Path(root) / name


def count_images(folder: Path) -> int:
    return sum(1 for _ in walk_images(folder))


def priority(score: float | None) -> float:
    """``score / (1 + score)``: in [0, 1), increasing in the uncertainty (a queried task gets >= 1)."""
    return 0.0 if score is None else float(score) / (1.0 + float(score))


def local_files_url(path: Path, root: Path | None) -> str | None:
    """``/data/local-files/?d=<path relative to root>`` when ``path`` is under ``root``."""
    if root is None:
        return None
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return f"/data/local-files/?d={quote(rel.as_posix())}"


def task_data(row: ImageRow) -> dict:
    return {
        "image": row.url,
        "al_hash": row.content_hash,
        "al_priority": round(row.priority or 0.0, 6),
        "al_uncertainty": None if row.score is None else round(row.score, 8),
        "al_status": row.decision,
    }


def task_payload(row: ImageRow, model_version: str) -> dict:
    return {
        "data": task_data(row),
        "predictions": [
            {"result": json.loads(row.regions or "[]"), "score": row.confidence, "model_version": model_version}
        ],
    }


class LabelStudioSink:
    """Creates tasks in a Label Studio project (local-files URLs when the folder is shared, else uploads)."""

    def __init__(self, client: LabelStudioClient, project: int, files_root: Path | None, folder: Path) -> None:
        self.client, self.ls, self.project = client, client.ls, project
        self.files_root = files_root
        self.shared = files_root is not None and local_files_url(folder, files_root) is not None
        if self.shared:
            self._ensure_storage(folder)

    def _ensure_storage(self, folder: Path) -> None:
        """Label Studio serves local files only under a local storage of the project."""
        path = str(folder.resolve())
        for st in self.ls.import_storage.local.list(project=self.project):
            if path.startswith(str(st.path).rstrip("/") + "/") or path == str(st.path).rstrip("/"):
                return
        self.ls.import_storage.local.create(
            project=self.project, path=path, title="detector-al ingest", regex_filter=r"^$", use_blob_urls=True
        )

    def known_hashes(self) -> dict[str, int]:
        known = {}
        for t in self.ls.tasks.list(project=self.project, fields="all"):
            h = (t.data or {}).get("al_hash")
            if h:
                known[h] = t.id
        return known

    def url_for(self, path: Path) -> str | None:
        return local_files_url(path, self.files_root) if self.shared else None

    def upload(self, paths: list[Path]) -> list[str]:
        """Upload files without creating tasks; returns their Label Studio URLs."""
        headers = {"Authorization": f"Token {self.client.api_key}"}
        files = {f"file{i}": (p.name, p.open("rb")) for i, p in enumerate(paths)}
        try:
            r = requests.post(
                f"{self.client.url}/api/projects/{self.project}/import",
                headers=headers,
                params={"commit_to_project": "false"},
                files=files,
                timeout=300,
            )
            r.raise_for_status()
        finally:
            for _, fh in files.values():
                fh.close()
        urls = []
        for fid in r.json()["file_upload_ids"]:
            fu = requests.get(f"{self.client.url}/api/import/file-upload/{fid}", headers=headers, timeout=60)
            fu.raise_for_status()
            urls.append("/data/" + fu.json()["file"])
        return urls

    def create(self, payloads: list[dict]) -> list[int]:
        r = self.ls.projects.import_tasks(id=self.project, request=payloads, return_task_ids=True)
        return list(r.task_ids or [])

    def update(self, task_id: int, data: dict) -> None:
        self.ls.tasks.update(id=task_id, data=data)

    def ensure_tabs(self) -> None:
        """Create or update the queue tab and the review tab."""
        number = {"tasks:data.al_priority": "Number", "tasks:data.al_uncertainty": "Number"}
        tabs = {
            QUEUE_TAB: {
                "ordering": ["-tasks:data.al_priority"],
                "columnsDisplayType": number,
                "filters": {
                    "conjunction": "and",
                    "items": [
                        {
                            "filter": "filter:tasks:data.al_status",
                            "operator": "not_equal",
                            "type": "String",
                            "value": "auto_accept",
                        }
                    ],
                },
            },
            REVIEW_TAB: {
                "ordering": ["tasks:data.al_priority"],
                "columnsDisplayType": number,
                "filters": {
                    "conjunction": "and",
                    "items": [
                        {
                            "filter": "filter:tasks:data.al_status",
                            "operator": "equal",
                            "type": "String",
                            "value": "auto_accept",
                        }
                    ],
                },
            },
        }
        hidden = [
            f"tasks:{c}"
            for c in (
                "inner_id",
                "completed_at",
                "cancelled_annotations",
                "total_predictions",
                "annotators",
                "annotations_results",
                "annotations_ids",
                "predictions_results",
                "file_upload",
                "storage_filename",
                "created_at",
                "updated_at",
                "updated_by",
                "avg_lead_time",
                "draft_exists",
                "comment_count",
                "unresolved_comment_count",
                "last_comment_updated_at",
                "comment_authors",
                "data.al_hash",
            )
        ]
        for spec in tabs.values():  # show what the queue is about: image, priority, uncertainty, status, score
            spec["hiddenColumns"] = {"explore": hidden, "labeling": hidden}
        existing = {}
        for v in self.ls.views.list(project=self.project):
            title = (v.data or {}).get("title") if isinstance(v.data, dict) else None
            if title:
                existing[title] = v.id
        for title, spec in tabs.items():
            data = {"title": title, **spec}
            if title in existing:
                self.ls.views.update(id=str(existing[title]), project=self.project, data=data)
            else:
                self.ls.views.create(project=self.project, data=data)


def score_batch(
    det: Detector, paths: list[Path], hashes: list[str], target: RectangleTarget, cfg: IngestConfig, url_of
) -> list[ImageRow]:
    """Predict and score one batch of new files; unreadable ones get a row with ``error``."""
    strategy = get_strategy(cfg.strategy)
    rows = []
    for path, h, p in zip(paths, hashes, det.predict([str(x) for x in paths], cfg.batch_size), strict=True):
        if not p.ok:
            rows.append(ImageRow(h, str(path), error=p.error, decision="error", model_version=det.version))
            continue
        score = float(strategy.score(p))
        verdict = auto_accept(p, consistency(p), cfg.round_index, cfg.ceal)
        shown = p.detections[p.detections.confidence >= cfg.score_threshold]
        regions = to_label_studio_regions(shown, p.width, p.height, target)
        pseudo = None
        if verdict.accepted:
            pl = verdict.pseudo_labels
            pseudo = json.dumps(
                {
                    "xyxy": pl.xyxy.round(2).tolist(),
                    "class_id": pl.class_id.tolist(),
                    "confidence": pl.confidence.round(4).tolist(),
                }
            )
        rows.append(
            ImageRow(
                h,
                str(path),
                url=url_of(path),
                width=p.width,
                height=p.height,
                score=score,
                confidence=round(strategy.confidence(score), 6),
                decision="auto_accept" if verdict.accepted else "rest",
                priority=priority(score),
                round=cfg.round_index,
                model_version=det.version,
                regions=json.dumps(regions),
                pseudo_labels=pseudo,
                embedding=p.embedding.astype(np.float32).tobytes(),
            )
        )
    return rows


def queue_fields(scores: np.ndarray, emb: np.ndarray, budget: int) -> list[tuple[str, float]]:
    """``(al_status, al_priority)`` of each image: the diverse batch picked by :func:`select_batch` gets ``query``
    and ``1 + (B - i) / B`` for its place ``i``; every other image ``rest`` and :func:`priority` of its score."""
    out = [("rest", priority(s)) for s in scores]
    if budget > 0 and len(out):
        for i, j in enumerate(select_batch(np.asarray(scores, np.float64), emb, budget)):
            out[j] = ("query", 1.0 + (budget - i) / budget)
    return out


def choose_queue(store: Store, project: int, budget: int) -> list[tuple[str, str, float]]:
    """(hash, decision, priority) for every scored, non-accepted image: the diverse top batch is ``query``."""
    rows = store.images(project, "error IS NULL AND decision != 'auto_accept'", order="score DESC")
    if not rows:
        return []
    cand = rows[: 2 * DEFAULT_CANDIDATE_FACTOR * budget]  # select_batch keeps 4x budget distinct ones
    emb = np.stack([np.frombuffer(r.embedding, np.float32) for r in cand])
    fields = queue_fields(np.array([r.score for r in cand]), emb, budget)
    fields += [("rest", priority(r.score)) for r in rows[len(cand) :]]
    return [(r.content_hash, d, p) for r, (d, p) in zip(rows, fields, strict=True)]


def ingest(
    folder: Path,
    det: Detector,
    store: Store,
    target: RectangleTarget,
    cfg: IngestConfig,
    sink: LabelStudioSink | None = None,
    project: int = OFFLINE_PROJECT,
) -> IngestReport:
    """Score every image under ``folder`` into ``store`` (and Label Studio when ``sink`` is given)."""
    start = time.perf_counter()
    report = IngestReport()
    known_ls = sink.known_hashes() if sink else {}
    stored = store.image_hashes(project)
    url_of = sink.url_for if sink else (lambda p: local_files_url(p, cfg.files_root) or p.resolve().as_uri())
    total = count_images(folder)
    pending: list[tuple[Path, str, int | None]] = []
    seen: set[str] = set()

    def flush() -> None:
        if not pending:
            return
        rows = score_batch(det, [p for p, _, _ in pending], [h for _, h, _ in pending], target, cfg, url_of)
        existing = {h: t for _, h, t in pending if t is not None}
        good = [_replace(r, task_id=existing.get(r.content_hash)) for r in rows if r.error is None]
        new = [i for i, r in enumerate(good) if r.task_id is None]
        if sink is not None and new:
            need_upload = [i for i in new if good[i].url is None]
            if need_upload:
                urls = sink.upload([Path(good[i].path) for i in need_upload])
                for i, u in zip(need_upload, urls, strict=True):
                    good[i] = _replace(good[i], url=u)
            ids = sink.create([task_payload(good[i], det.version) for i in new])
            for i, t in zip(new, ids, strict=True):
                good[i] = _replace(good[i], task_id=t)
            report.created_tasks += len(ids)
        store.record_images(project, good + [r for r in rows if r.error is not None])
        report.failed += [(r.path, r.error) for r in rows if r.error is not None]
        pending.clear()

    for path in track(walk_images(folder), total, "ingest"):
        report.scanned += 1
        h = content_hash(path)
        if h in seen or h in stored:  # the same bytes twice, or ingested before
            report.already_known += 1
            seen.add(h)
            continue
        seen.add(h)
        if h in known_ls:  # a task exists (a run killed before it could record it): score it, create nothing
            report.already_known += 1
        else:
            report.new += 1
        pending.append((path, h, known_ls.get(h)))
        if len(pending) >= max(cfg.batch_size, cfg.tasks_per_request):
            flush()
    flush()
    report.elapsed_s = time.perf_counter() - start
    for row in store.images(project, "error IS NOT NULL"):
        if (row.path, row.error) not in report.failed:
            report.failed.append((row.path, row.error))

    before = {r.content_hash: r for r in store.images(project, "error IS NULL")}
    queue = choose_queue(store, project, cfg.budget)
    if sink is not None:  # Label Studio first, the store after: a failed update is retried by the next run
        for h, decision, prio in queue:
            old = before.get(h)
            if old and old.task_id and (old.decision != decision or abs((old.priority or 0) - prio) > 1e-9):
                try:
                    sink.update(old.task_id, task_data(_replace(old, decision=decision, priority=prio)))
                except Exception as exc:
                    log.warning("task %s (%s): priority not updated: %s", old.task_id, old.path, exc)
                    continue
            store.set_image_queue(project, [(h, decision, prio)])
        sink.ensure_tabs()
        sink.client.set_model_version(project, det.version)
    else:
        store.set_image_queue(project, queue)
    report.queried = sum(d == "query" for _, d, _ in queue)
    report.auto_accepted = len(store.images(project, "decision = 'auto_accept'"))
    return report


def _replace(row: ImageRow, **kw) -> ImageRow:
    from dataclasses import replace

    return replace(row, **kw)


def write_tasks_json(store: Store, out: Path, model_version: str, project: int = OFFLINE_PROJECT) -> int:
    """A Label Studio import file (a JSON list of tasks with predictions and priority fields), streamed."""
    n = 0
    with atomic_write(out) as f:
        f.write("[\n")
        for row in store.images(project, "error IS NULL", order="priority DESC"):
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
    for row in store.images(project, "decision = 'auto_accept' AND pseudo_labels IS NOT NULL"):
        pl = json.loads(row.pseudo_labels)
        stem = f"{Path(row.path).stem}-{row.content_hash[:8]}"
        src = Path(row.path)
        shutil.copyfile(src, img_dir / f"{stem}{src.suffix.lower()}")
        lines = []
        for (x1, y1, x2, y2), c in zip(pl["xyxy"], pl["class_id"], strict=True):
            w, h = row.width, row.height
            lines.append(f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
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
