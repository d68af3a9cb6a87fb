"""Fetching a task's image, whatever its source, into a local file: with time and size limits, never partially.

Sources (the values Label Studio puts in task data):

- **uploads** ``/data/upload/<project>/<file>``: Label Studio 1.23 serves them at
  ``/storage-data/uploaded/?filepath=upload/...``; the legacy ``/data/upload/...`` path is tried when that
  answers an error (a stock install answers 400 there, which is remembered per Label Studio);
- **local files** ``/data/local-files/?d=<rel>``: read from disk when the backend shares
  ``LOCAL_FILES_DOCUMENT_ROOT`` and the file is there, else downloaded from Label Studio;
- **cloud storage** ``s3://``, ``gs://``, ``azure-blob://``: resolved by Label Studio at
  ``/tasks/<task id>/presign/?fileuri=<base64url uri>`` (a redirect to a presigned URL, or the bytes);
- **http(s) URLs**: downloaded; Label Studio's key goes only to Label Studio's origin, never to another host
  (redirects included);
- **``file://`` URLs and local paths**: read only under the local-files root (resolved, symlinks included).

This module routes a value to its source; :mod:`detector_al.io.fetch.download` streams a download into the cache
folder (:mod:`detector_al.io.fetch.cache`), renamed into place only when complete, so a cut, refused, too slow or
too large download leaves nothing behind and the next request fetches again. Every download has a connect
timeout, a read timeout, a total deadline and a size cap (:class:`FetchLimits`), so one hung or huge URL fails
its own task, with an :class:`ImageFetchError` naming the URL and the reason.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import posixpath
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from detector_al.io.fetch.cache import (
    KEY_LOCKS,
    Pins,
    cached,
    default_cache_dir,
    note_download,
    prepare_cache,
    safe_name,
)
from detector_al.io.fetch.download import DEFAULT_LIMITS, Downloader, DownloadFailed, FetchLimits
from detector_al.label_studio.auth import LabelStudioAuth, label_studio_auth, origin, same_origin
from detector_al.label_studio.errors import ImageFetchError, LabelStudioError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_LIMITS", "FetchLimits", "ImageFetchError", "Pins", "default_cache_dir", "fetch_image"]

CLOUD_SCHEMES = ("s3:", "gs:", "azure-blob:")
_LEGACY_UPLOADS: set[tuple] = set()  # Label Studio origins whose /storage-data/uploaded/ refused an upload


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


# -- the fetcher -------------------------------------------------------------------------------------------
class _Fetch:
    """One call of :func:`fetch_image` (its URL, its Label Studio, its deadline)."""

    def __init__(self, url, ls_url, token, auth, task_id, local_root, cache_dir, limits, pins=None) -> None:
        self.url = url
        self.pins: Pins | None = pins
        self.ls_url = ls_url.rstrip("/") if ls_url else None
        self.token = token
        self._auth = auth
        self.task_id = task_id
        self.local_root = Path(local_root) if local_root else None
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.limits = limits or DEFAULT_LIMITS
        self.deadline = time.monotonic() + self.limits.total_timeout_s
        self.downloader = Downloader(self.limits, self.deadline, label_studio=self.ls_url)

    def fail(self, reason: str) -> ImageFetchError:
        return ImageFetchError(f"cannot fetch {self.url}: {reason}")

    @property
    def auth(self) -> LabelStudioAuth:
        if self._auth is None:
            if not self.ls_url:
                raise self.fail(
                    "it is a Label Studio file and the Label Studio URL is unknown: set LABEL_STUDIO_URL "
                    "(or connect the backend to a project, whose /setup sends it)"
                )
            if not self.token:
                raise self.fail(
                    "it is a Label Studio file and no Label Studio API key is set: set LABEL_STUDIO_API_KEY"
                )
            try:
                self._auth = label_studio_auth(self.ls_url, self.token)
            except LabelStudioError as exc:
                raise self.fail(str(exc)) from None
        return self._auth

    # -- routing ------------------------------------------------------------------------------------------
    def run(self) -> Path:
        raw = self.url.strip()
        if not raw:
            raise self.fail("empty image URL")
        if raw.startswith(("upload/", "/upload/")):
            raw = "/data" + ("" if raw.startswith("/") else "/") + raw
        if raw.startswith(CLOUD_SCHEMES):
            return self.cloud(raw)
        parts = urlsplit(raw)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            if self.ls_url and same_origin(raw, self.ls_url):
                if not urlsplit(self.ls_url).path.rstrip("/"):  # a Label Studio path written out in full
                    return self.label_studio(parts.path + (f"?{parts.query}" if parts.query else ""))
                return self.download([raw], key=raw, name=parts.path or "image", ls=True)
            return self.download([raw], key=raw, name=parts.path or "image", ls=False)  # no key to other hosts
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise self.fail(f"file URLs on another host ({parts.netloc}) cannot be read")
            return self.local_path(unquote(parts.path))
        if scheme and len(scheme) > 1:
            raise self.fail(f"unsupported URL scheme {scheme!r}")
        if raw.startswith(("/data/", "/storage-data/", "/tasks/", "/projects/")):
            return self.label_studio(raw)
        return self.local_path(raw)

    def local_path(self, value: str) -> Path:
        if self.local_root is None:
            raise self.fail(
                "local file paths are read only under LOCAL_FILES_DOCUMENT_ROOT, and it is not set "
                "(import images through Label Studio, or share the folder as local-files storage)"
            )
        root = self.local_root.resolve()
        p = Path(value)
        path = (p if p.is_absolute() else root / p).resolve()
        if not _under(path, root):
            raise self.fail(f"refused: outside LOCAL_FILES_DOCUMENT_ROOT ({root}), symlinks resolved")
        if not path.is_file():
            raise self.fail("no such file")
        return path

    def label_studio(self, rel: str) -> Path:
        parts = urlsplit(rel)
        if parts.path.startswith("/data/local-files"):
            values = parse_qs(parts.query, keep_blank_values=True).get("d")
            d = values[-1] if values else ""
            if not d:
                raise self.fail("a local-files URL without a file path (?d=)")
            if self.local_root is not None:
                root = self.local_root.resolve()
                path = (root / posixpath.normpath(d).lstrip("/")).resolve()
                if not _under(path, root):
                    raise self.fail(f"refused: outside LOCAL_FILES_DOCUMENT_ROOT ({root}), symlinks resolved")
                if path.is_file():
                    return path
                if not self.ls_url:
                    raise self.fail(f"not found under LOCAL_FILES_DOCUMENT_ROOT ({root})")
            return self.download([self.ls(rel)], key=self.ls(rel), name=d, ls=True)
        if parts.path.startswith("/data/upload/") or parts.path.startswith("/storage-data/uploaded"):
            if parts.path.startswith("/data/upload/"):
                filepath = parts.path[len("/data/") :]
            else:
                filepath = unquote((parse_qs(parts.query).get("filepath") or [""])[-1]).lstrip("/")
                if not filepath:
                    raise self.fail("a storage-data URL without a filepath")
            proxy, legacy = self.ls(f"/storage-data/uploaded/?filepath={filepath}"), self.ls(f"/data/{filepath}")
            order = [legacy, proxy] if origin(self.ls_url or "") in _LEGACY_UPLOADS else [proxy, legacy]
            return self.download(order, key=self.ls(f"/data/{filepath}"), name=filepath, ls=True)
        return self.download([self.ls(rel)], key=self.ls(rel), name=parts.path, ls=True)

    def cloud(self, uri: str) -> Path:
        if self.task_id is None:
            raise self.fail("cloud storage files are resolved by Label Studio per task, and the task has no id")
        fileuri = base64.urlsafe_b64encode(uri.encode()).decode()
        url = self.ls(f"/tasks/{int(self.task_id)}/presign/?fileuri={fileuri}")
        return self.download([url], key=f"{origin(url)}|{uri}", name=uri, ls=True)

    def ls(self, rel: str) -> str:
        if not self.ls_url:
            self.auth  # noqa: B018 - raises the "Label Studio URL is unknown" error
        return f"{self.ls_url}/{rel.lstrip('/')}"

    # -- downloading --------------------------------------------------------------------------------------
    def pin(self, path: Path) -> bool:
        """Pin a cache file for the caller's :class:`Pins` (True without one); False: it was evicted meanwhile."""
        return self.pins is None or self.pins.hold(path)

    def download(self, candidates: list[str], key: str, name: str, ls: bool) -> Path:
        """The first of ``candidates`` (URLs of one image) that downloads, cached under ``key``."""
        auth = self.auth if ls else None
        cache = prepare_cache(self.cache_dir)
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        fname = safe_name(name)
        hit = cached(cache, digest, fname)
        if hit is not None and self.pin(hit):
            return hit
        with KEY_LOCKS.hold(digest, self.deadline - time.monotonic()) as got:
            if not got:
                raise self.fail(f"timed out after {self.limits.total_timeout_s:g} s waiting for another download of it")
            hit = cached(cache, digest, fname)  # another thread may have just fetched it
            if hit is not None and self.pin(hit):
                return hit
            errors: list[DownloadFailed] = []
            for url in candidates:
                try:
                    # Pinned before it exists: another thread's eviction (note_download) cannot take the file
                    # between its rename into the cache and this request's use of it.
                    dest = cache / f"{digest}__{fname}"
                    self.pin(dest)
                    got = self.downloader.get(url, auth, cache, dest.name)
                    if Path(got) != dest and not self.pin(got):
                        raise self.fail("the image cache evicted it at once: IMAGE_CACHE_MAX_MB is too small")
                    note_download(cache, got, self.limits.cache_max_bytes)
                    return got
                except DownloadFailed as exc:
                    errors.append(exc)
                    if exc.final:
                        break
                    if ls and "/storage-data/uploaded/" in url and exc.status == 400:
                        _LEGACY_UPLOADS.add(origin(url))
        best = min(errors, key=lambda e: {401: 0, 404: 1, 403: 2}.get(e.status or 0, 3))
        raise self.fail(best.reason)


def fetch_image(
    url: str,
    *,
    ls_url: str | None = None,
    token: str | None = None,
    auth: LabelStudioAuth | None = None,
    task_id: int | None = None,
    local_root: Path | None = None,
    cache_dir: Path | None = None,
    limits: FetchLimits | None = None,
    pins: Pins | None = None,
) -> Path:
    """A local file holding the image behind a task value ``url`` (see the module docstring for the sources).

    Args:
        url: the task's image value (Label Studio path, cloud URI, http(s) URL, ``file://`` URL or path).
        ls_url: Label Studio's URL; its key (``token``, or ``auth``) is sent to this origin only.
        token: a personal access token or a legacy token (made into the shared auth object of
            :func:`~detector_al.label_studio.auth.label_studio_auth`), used only when ``auth`` is None.
        task_id: the task's id (cloud storage URIs are resolved per task).
        local_root: the local-files root shared with Label Studio, if any: local-files URLs are read from
            it, and ``file://`` URLs and paths are read only under it.
        cache_dir: where downloads are kept (created; default: a folder in the system's temp dir).
        limits: timeouts and size cap (default :data:`DEFAULT_LIMITS`).
        pins: the caller's :class:`Pins`: a downloaded image is pinned in the cache before it is returned, so the
            cache does not evict it while the caller still needs it (files read from disk need no pin).

    Raises:
        ImageFetchError: ``cannot fetch <url>: <reason>`` (timeout, too large, 401 with the token kind, 404 ...).
    """
    return _Fetch(url, ls_url, token, auth, task_id, local_root, cache_dir, limits, pins).run()
