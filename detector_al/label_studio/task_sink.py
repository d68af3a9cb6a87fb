"""Label Studio as the destination of ingest: the project's local-files storage or uploads, tasks, the tabs.

Uploads go through Label Studio's import endpoint (the UI's Import does the same): files a browser or
Label Studio cannot take (TIFF, HEIC, 16-bit...) are sent as web copies (:func:`detector_al.io.images.to_web_image`),
a request holds at most :data:`UPLOAD_FILES_PER_REQUEST` files and :data:`UPLOAD_BYTES_PER_REQUEST` bytes,
and a refused request is retried file by file so that one bad file fails alone.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import requests

from detector_al.label_studio.annotations import is_labeled_by_count
from detector_al.label_studio.client import LabelStudioClient, LabelStudioError
from detector_al.queue.build import AUTO_ACCEPT

log = logging.getLogger(__name__)

QUEUE_TAB = "Active learning queue"
REVIEW_TAB = "Auto-accepted (review)"
LABEL_ERROR_TAB = "Possible label errors"
LABEL_ERROR_FIELD = "al_label_error"
"""Task data field: the likely-error score of the task's human label (:mod:`detector_al.signals.label_errors`)."""
HIDDEN_COLUMNS = [  # the tabs show what the queue is about: image, priority, uncertainty, status, score
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


def find_or_create_project(client: LabelStudioClient, title: str, label_config: str) -> int:
    """The id of the project with this title (the first, if several), created with ``label_config`` if none.

    Raises:
        LabelStudioError: Label Studio refused to create it (a title under 3 characters, a config it rejects), with
            Label Studio's reason.
    """
    from label_studio_sdk.core.api_error import ApiError

    found = [p for p in client.ls.projects.list(title=title) if p.title == title]
    if found:
        return found[0].id
    try:
        return client.ls.projects.create(title=title, label_config=label_config).id
    except ApiError as exc:
        if exc.status_code is None or exc.status_code >= 500 or exc.status_code in (401, 403):
            raise
        raise LabelStudioError(f"Label Studio refused to create project {title!r}: {_api_reason(exc.body)}") from None


def tab_specs() -> dict[str, dict]:
    """The Data Manager tabs, by title: the queue (not auto-accepted, by descending ``al_priority``) and the
    review tab (auto-accepted, most confident first)."""

    def tab(ordering: str, operator: str) -> dict:
        status = {
            "filter": "filter:tasks:data.al_status",
            "operator": operator,
            "type": "String",
            "value": AUTO_ACCEPT,
        }
        return {
            "ordering": [ordering],
            "columnsDisplayType": {"tasks:data.al_priority": "Number", "tasks:data.al_uncertainty": "Number"},
            "filters": {"conjunction": "and", "items": [status]},
            "hiddenColumns": {"explore": HIDDEN_COLUMNS, "labeling": HIDDEN_COLUMNS},
        }

    return {QUEUE_TAB: tab("-tasks:data.al_priority", "not_equal"), REVIEW_TAB: tab("tasks:data.al_priority", "equal")}


def label_error_tab() -> dict:
    """The "Possible label errors" tab: labeled tasks whose label the model doubts, most doubtful first."""
    flagged = {"filter": f"filter:tasks:data.{LABEL_ERROR_FIELD}", "operator": "greater", "type": "Number", "value": 0}
    return {
        "ordering": [f"-tasks:data.{LABEL_ERROR_FIELD}"],
        "columnsDisplayType": {f"tasks:data.{LABEL_ERROR_FIELD}": "Number"},
        "filters": {"conjunction": "and", "items": [flagged]},
        "hiddenColumns": {"explore": HIDDEN_COLUMNS, "labeling": HIDDEN_COLUMNS},
    }


def ensure_label_error_tab(ls, project: int) -> None:
    """Create the "Possible label errors" tab if the project has none."""
    for v in ls.views.list(project=project):
        if isinstance(v.data, dict) and v.data.get("title") == LABEL_ERROR_TAB:
            return
    ls.views.create(project=project, data={"title": LABEL_ERROR_TAB, **label_error_tab()})


def local_files_url(path: Path, root: Path | None) -> str | None:
    """``/data/local-files/?d=<path relative to root>`` when ``path`` is under ``root``."""
    if root is None:
        return None
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return f"/data/local-files/?d={quote(rel.as_posix())}"


KNOWN_PAGE = 1000
"""Tasks per request when a re-run reads back the project's hashes and labels."""

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
    return _api_reason(body)


def _api_reason(body) -> str:
    """The reason in a Label Studio error body (its validation errors, else its detail), in one line."""
    if isinstance(body, dict):
        errors = body.get("validation_errors")
        if isinstance(errors, dict):
            msgs = [f"{k}: {m}" for k, v in errors.items() for m in (v if isinstance(v, list) else [v])]
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
        """content hash -> task id of the project's tasks made by ingest; also notes the labeled ones (:attr:`labeled`)
        and each of those tasks' image URL (:attr:`images`, what :meth:`image_of` answers), and every task's id
        (:attr:`task_ids`: a stored task not among them was deleted).

        Lists only each task's id, data and label count (:func:`~detector_al.label_studio.annotations.is_labeled_by_count`),
        :data:`KNOWN_PAGE` tasks a request: 1,000 tasks in 0.5 s, where the whole tasks took 3.6 s."""
        known = {}
        self.labeled: set[int] = set()
        self.images: dict[int, str] = {}
        self.task_ids: set[int] = set()
        listed = self.ls.tasks.list(
            project=self.project, fields="task_only", include="id,data,total_annotations", page_size=KNOWN_PAGE
        )
        for t in listed:
            self.task_ids.add(int(t.id))
            data = t.data or {}
            h = data.get("al_hash")
            if h:
                known[h] = t.id
                if data.get("image"):
                    self.images[int(t.id)] = str(data["image"])
            if is_labeled_by_count(t):
                self.labeled.add(int(t.id))
        return known

    def url_for(self, path: Path) -> str | None:
        return local_files_url(path, self.files_root) if self.shared else None

    def image_of(self, task_id: int) -> str | None:
        """The image URL of a task read back by :meth:`known_hashes` (an uploaded file's, in upload mode)."""
        return getattr(self, "images", {}).get(int(task_id))

    def upload(self, paths: list[Path]) -> list[Upload]:
        """Upload files without creating tasks: one :class:`Upload` per path, in order (a URL, or why not).

        Files a browser or Label Studio cannot take (:func:`~detector_al.io.images.needs_web_copy`: TIFF, HEIC,
        16-bit...) are sent as a web copy (:func:`~detector_al.io.images.to_web_image`, same pixels and size as
        the detector sees), made in a temporary folder that is removed afterwards. Files go in requests of at
        most :data:`UPLOAD_FILES_PER_REQUEST` files and :data:`UPLOAD_BYTES_PER_REQUEST` bytes; Label Studio
        refuses a whole request for one file it does not take, so a refused request is retried file by file
        and only the file refused alone fails, with Label Studio's reason.

        Raises:
            requests.RequestException: Label Studio cannot be reached, or refuses the API key (401/403).
        """
        from detector_al.io.images import ImageLoadError, needs_web_copy, to_web_image

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

    def ensure_tabs(self) -> None:
        """Create or update the queue tab and the review tab (:func:`tab_specs`)."""
        existing = {}
        for v in self.ls.views.list(project=self.project):
            title = (v.data or {}).get("title") if isinstance(v.data, dict) else None
            if title:
                existing[title] = v.id
        for title, spec in tab_specs().items():
            data = {"title": title, **spec}
            if title in existing:
                self.ls.views.update(id=str(existing[title]), project=self.project, data=data)
            else:
                self.ls.views.create(project=self.project, data=data)
