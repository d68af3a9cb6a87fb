"""Bulk pre-annotation of an image folder into a prioritised Label Studio queue (or an import file).

The folder is streamed in batches: each batch is hashed, predicted, scored and auto-accepted, its tasks
are created in Label Studio (with pre-annotations and the priority fields ``al_priority``,
``al_uncertainty``, ``al_status``, ``al_hash``) and only then recorded in the SQLite store, so memory
stays flat whatever the folder size, and a run killed at any point resumes: the content hash decides
(Label Studio's ``al_hash`` fields are read back at start, so even a lost store creates no duplicate).

Once every image is scored, the query batch is chosen over the whole project (diverse, by uncertainty)
and only the tasks whose status changed are updated. The "Active learning queue" tab lists the uncertain
tasks by descending ``al_priority``; "Auto-accepted (review)" lists the CEAL pseudo-labelled ones.

The queue (:func:`detector_al.queue.build_queue`) reaches annotators through Label Studio's "Uncertainty
sampling", which ingest sets on the project: each task's prediction ``score`` is its queue band's score
(:func:`detector_al.queue.label_studio_score`), and ``al_priority = 1 - score`` orders the tabs the same way.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import requests

from detector_al.decision import decide
from detector_al.detector import Detector
from detector_al.files import atomic_write, file_sha256
from detector_al.images import iter_images
from detector_al.label_config import RectangleTarget
from detector_al.ls_client import LabelStudioClient
from detector_al.ls_queue import TaskQueueUpdate, configure_project, publish_queue
from detector_al.ls_regions import to_label_studio_regions
from detector_al.progress import track
from detector_al.pseudo_labels import CealConfig
from detector_al.queue import AUTO_ACCEPT, QUERY, QueueEntry, build_queue, label_studio_score, priority
from detector_al.store import ImageRow, Store
from detector_al.uncertainty import get_strategy
from detector_al.yolo_format import yolo_lines

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
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why): unreadable or not uploaded
    not_uploaded: int = 0  # of ``failed``: readable, but Label Studio refused the file (retried by the next run)
    converted: int = 0  # files uploaded as a web copy (TIFF, HEIC, 16-bit...)
    auto_accepted: int = 0
    queried: int = 0
    elapsed_s: float = 0.0

    def summary(self) -> str:
        rate = self.new / self.elapsed_s if self.elapsed_s else 0.0
        unreadable = len(self.failed) - self.not_uploaded
        lines = [
            f"{self.scanned} files: {self.new} new ({rate:.1f} img/s), {self.already_known} already ingested, "
            f"{len(self.failed)} failed ({unreadable} unreadable, {self.not_uploaded} refused by Label Studio); "
            f"{self.created_tasks} tasks created ({self.converted} uploaded as web copies); "
            f"queue: {self.queried} to label, {self.auto_accepted} auto-accepted"
        ]
        lines += [f"  failed: {p}: {e}" for p, e in self.failed]
        return "\n".join(lines)


def content_hash(path: Path) -> str:
    """The identity of an image file: SHA-256 of its bytes."""
    return file_sha256(path)


def walk_images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder``, recursively, streamed (:func:`detector_al.images.iter_images`)."""
    return iter_images(folder)


def _must_upload(row: ImageRow) -> bool:
    """A new task's image goes through upload: it has no Label Studio URL yet, or it lies under the shared
    local-files root but a browser cannot show it raw (TIFF, HEIC, 16-bit...), so its web copy is uploaded."""
    from detector_al.images import needs_web_copy

    return row.url is None or needs_web_copy(row.path)


def count_images(folder: Path) -> int:
    return sum(1 for _ in walk_images(folder))


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


def label_studio_score_of(row: ImageRow) -> float:
    """The prediction score Label Studio serves by: ``1 - al_priority`` (see :mod:`detector_al.queue`)."""
    return 1.0 - (row.priority or 0.0)


def task_payload(row: ImageRow, model_version: str) -> dict:
    return {
        "data": task_data(row),
        "predictions": [
            {"result": json.loads(row.regions or "[]"), "score": label_studio_score_of(row), "model_version": model_version}
        ],
    }


UPLOAD_FILES_PER_REQUEST = 50
"""Files per upload request: Django refuses more than ``DATA_UPLOAD_MAX_NUMBER_FILES`` (100 by default)."""
UPLOAD_BYTES_PER_REQUEST = 64 * 2**20
"""Bytes per upload request (Label Studio refuses more than ``DATA_UPLOAD_MAX_MEMORY_SIZE``, 250 MB by default)."""


@dataclass
class Upload:
    """What became of one file sent to Label Studio: its URL there, or why it was not taken."""

    url: str | None = None
    error: str | None = None
    converted: bool = False  # sent as a web copy (TIFF, HEIC, 16-bit...)


class UploadFailed(RuntimeError):
    """Label Studio refused an upload request (or a file could not be read); the message says why."""


def _size_text(path: Path) -> str:
    try:
        n = path.stat().st_size
    except OSError:
        return "unknown size"
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def _label_studio_reason(r: requests.Response) -> str:
    """The reason in a Label Studio error answer (its validation errors, else its detail), in one line."""
    try:
        body = r.json()
    except ValueError:
        return " ".join(r.text.split())[:300] or r.reason
    if isinstance(body, dict):
        errors = body.get("validation_errors")
        if isinstance(errors, dict):
            msgs = [str(m) for v in errors.values() for m in (v if isinstance(v, list) else [v])]
            if msgs:
                return "; ".join(msgs)[:300]
        return str(body.get("detail") or body)[:300]
    return str(body)[:300]


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

    def upload(self, paths: list[Path]) -> list[Upload]:
        """Upload files without creating tasks: one :class:`Upload` per path, in order (a URL, or why not).

        Files a browser or Label Studio cannot take (:func:`~detector_al.images.needs_web_copy`: TIFF, HEIC,
        16-bit...) are sent as a web copy (:func:`~detector_al.images.to_web_image`, same pixels and size as
        the detector sees), made in a temporary folder that is removed afterwards. Files go in requests of at
        most :data:`UPLOAD_FILES_PER_REQUEST` files and :data:`UPLOAD_BYTES_PER_REQUEST` bytes; Label Studio
        refuses a whole request for one file it does not take, so a refused request is retried file by file
        and only the file refused alone fails, with Label Studio's reason.

        Raises:
            requests.RequestException: Label Studio cannot be reached, or refuses the API key (401/403).
        """
        from detector_al.images import ImageLoadError, needs_web_copy, to_web_image

        results = [Upload() for _ in paths]
        with tempfile.TemporaryDirectory(prefix="detector-al-upload-") as tmp:
            chunk: list[tuple[int, Path]] = []
            size = 0
            for i, path in enumerate(paths):
                try:
                    if needs_web_copy(path):
                        src = to_web_image(path, Path(tmp) / str(i))  # a folder each: same stems do not clash
                        results[i].converted = True
                    else:
                        src = path
                    n = src.stat().st_size
                except (ImageLoadError, OSError) as exc:
                    results[i].error = f"not uploaded: {exc}"
                    continue
                if chunk and (len(chunk) >= UPLOAD_FILES_PER_REQUEST or size + n > UPLOAD_BYTES_PER_REQUEST):
                    self._upload_chunk(chunk, results, Path(tmp))
                    chunk, size = [], 0
                chunk.append((i, src))
                size += n
            if chunk:
                self._upload_chunk(chunk, results, Path(tmp))
        return results

    def _upload_chunk(self, chunk: list[tuple[int, Path]], results: list[Upload], tmp: Path) -> None:
        """Upload one request's files into ``results``; a refused request is retried one file at a time."""
        try:
            urls = self._post_files([src for _, src in chunk])
        except UploadFailed as exc:
            if len(chunk) == 1:
                i, src = chunk[0]
                results[i].error = f"{exc} (file of {_size_text(src)})"
            else:
                log.warning("Label Studio refused %d files in one request (%s); retrying one by one", len(chunk), exc)
                for item in chunk:
                    self._upload_chunk([item], results, tmp)
                return
        else:
            for (i, _), url in zip(chunk, urls, strict=True):
                results[i].url = url
        for i, _ in chunk:  # web copies are not needed once sent
            shutil.rmtree(tmp / str(i), ignore_errors=True)

    def _http(self) -> requests.Session:
        """A ``requests`` session carrying Label Studio's auth (the client's own when it has one)."""
        http = getattr(self.client, "http", None)
        if http is None:  # a client without an authenticated session of its own
            http = self.__dict__.get("_session")
            if http is None:
                http = self._session = requests.Session()
                http.headers["Authorization"] = f"Token {self.client.api_key}"
        return http

    def _post_files(self, srcs: list[Path]) -> list[str]:
        """One multipart import request (files only, no tasks); the uploaded files' Label Studio URLs.

        Raises:
            UploadFailed: Label Studio refused the request (any error status but 401/403), or a file vanished.
        """
        http = self._http()
        with ExitStack() as stack:
            files = {}
            for k, p in enumerate(srcs):
                try:
                    files[f"file{k}"] = (p.name, stack.enter_context(p.open("rb")))
                except OSError as exc:
                    raise UploadFailed(f"not uploaded: {exc}") from None
            r = http.post(
                f"{self.client.url}/api/projects/{self.project}/import",
                params={"commit_to_project": "false"},
                files=files,
                timeout=300,
            )
        if r.status_code in (401, 403):
            r.raise_for_status()
        if r.status_code >= 400:
            raise UploadFailed(f"upload refused by Label Studio ({r.status_code}): {_label_studio_reason(r)}")
        urls = []
        for fid in r.json()["file_upload_ids"]:
            fu = http.get(f"{self.client.url}/api/import/file-upload/{fid}", timeout=60)
            fu.raise_for_status()
            urls.append("/data/" + fu.json()["file"])
        return urls

    def create(self, payloads: list[dict]) -> list[int]:
        r = self.ls.projects.import_tasks(id=self.project, request=payloads, return_task_ids=True)
        return list(r.task_ids or [])

    def publish(self, model_version: str, updates: list[TaskQueueUpdate]) -> list[tuple[int, str]]:
        """Make the project serve the queue: its model version and sampling, then the tasks' queue numbers."""
        failed = publish_queue(self.ls, self.project, model_version, updates)
        configure_project(self.ls, self.project, model_version, first_time=True)
        return failed

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
        d = decide(p, strategy, cfg.round_index, cfg.ceal, cfg.score_threshold)
        if d.error:
            rows.append(ImageRow(h, str(path), error=d.error, decision="error", model_version=det.version))
            continue
        regions = to_label_studio_regions(d.shown, d.width, d.height, target)
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
        rows.append(
            ImageRow(
                h,
                str(path),
                url=url_of(path),
                width=d.width,
                height=d.height,
                score=d.score,
                confidence=round(d.confidence, 6),
                decision=d.status,
                priority=priority(label_studio_score(d.status, d.confidence)),
                round=cfg.round_index,
                model_version=det.version,
                regions=json.dumps(regions),
                pseudo_labels=pseudo,
                embedding=d.embedding.astype(np.float32).tobytes(),
            )
        )
    return rows


def plan_queue(store: Store, project: int, budget: int, confidence) -> list[tuple[ImageRow, QueueEntry]]:
    """Every scored image of the project with its place in :func:`~detector_al.queue.build_queue`'s queue."""
    rows = store.images(project, "error IS NULL", order="score DESC")
    if not rows:
        return []
    entries = build_queue(
        np.array([r.score for r in rows], np.float64),
        np.array([r.decision == AUTO_ACCEPT for r in rows]),
        np.stack([np.frombuffer(r.embedding, np.float32) for r in rows]),
        budget,
        confidence,
    )
    return list(zip(rows, entries, strict=True))


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
        refused: set[int] = set()  # readable, but not taken by Label Studio: not stored, so the next run retries
        if sink is not None and new:
            need_upload = [i for i in new if _must_upload(good[i])]
            if need_upload:
                done = sink.upload([Path(good[i].path) for i in need_upload])
                for i, up in zip(need_upload, done, strict=True):
                    if up.url is None:
                        refused.add(i)
                        report.failed.append((good[i].path, up.error or "not uploaded"))
                        report.not_uploaded += 1
                    else:
                        good[i] = _replace(good[i], url=up.url)
                        report.converted += up.converted
                new = [i for i in new if i not in refused]
            ids = sink.create([task_payload(good[i], det.version) for i in new]) if new else []
            for i, t in zip(new, ids, strict=True):
                good[i] = _replace(good[i], task_id=t)
            report.created_tasks += len(ids)
        good = [r for i, r in enumerate(good) if i not in refused]
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

    queue = plan_queue(store, project, cfg.budget, get_strategy(cfg.strategy).confidence)
    changed = [
        (row, e) for row, e in queue if row.decision != e.status or abs((row.priority or 0.0) - e.priority) > 1e-12
    ]
    failed: set[int] = set()
    if sink is not None:  # Label Studio first, the store after: a failed update is retried by the next run
        updates = [
            TaskQueueUpdate(row.task_id, e.score, task_data(_replace(row, decision=e.status, priority=e.priority)))
            for row, e in changed
            if row.task_id
        ]
        failed = {t for t, _ in sink.publish(det.version, updates)}
        sink.ensure_tabs()
    store.set_image_queue(
        project, [(row.content_hash, e.status, e.priority) for row, e in changed if row.task_id not in failed]
    )
    report.queried = sum(e.status == QUERY for _, e in queue)
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
