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

Downloads stream into a temporary file in the cache folder and are renamed into place only when complete, so
a cut, refused, too slow or too large download leaves nothing behind and the next request fetches again.
Every download has a connect timeout, a read timeout, a total deadline and a size cap (:class:`FetchLimits`),
so one hung or huge URL fails its own task, with an :class:`ImageFetchError` naming the URL and the reason.
"""

from __future__ import annotations

import base64
import hashlib
import http.cookiejar
import logging
import os
import posixpath
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import requests
import urllib3.exceptions

from detector_al.ls_auth import LabelStudioAuth, label_studio_auth, origin, same_origin
from detector_al.ls_errors import ImageFetchError, LabelStudioError

log = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3:", "gs:", "azure-blob:")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".svg"}
MAX_REDIRECTS = 5
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchLimits:
    """How long and how much one image download may take (settings ``FETCH_*``)."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0  # longest wait for the next bytes
    total_timeout_s: float = 60.0  # the whole download, redirects and the token refresh included
    max_bytes: int = 64 * 1024 * 1024


DEFAULT_LIMITS = FetchLimits()


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "detector-al-images"


class _Failed(Exception):
    """One download attempt failed: ``reason`` is for the user; ``status`` the HTTP status, if any."""

    def __init__(self, reason: str, status: int | None = None, final: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.status, self.final = reason, status, final


# -- helpers ----------------------------------------------------------------------------------------------
def _new_session() -> requests.Session:
    s = requests.Session()
    s.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))  # stateless: keep no cookies
    s.headers["Accept"] = "image/*,*/*;q=0.8"
    return s


_SESSION = _new_session()
_LEGACY_UPLOADS: set[tuple] = set()  # Label Studio origins whose /storage-data/uploaded/ refused an upload


class _KeyLocks:
    """One lock per cache key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, list] = {}

    @contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[bool]:
        with self._lock:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        got = entry[0].acquire(timeout=max(timeout, 0.0))
        try:
            yield got
        finally:
            if got:
                entry[0].release()
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    self._locks.pop(key, None)


_KEY_LOCKS = _KeyLocks()
_CLEANED: set[Path] = set()


def _safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", unquote(name).rsplit("/", 1)[-1]).strip("._") or "image"
    if len(name) > 96:
        stem, suffix = os.path.splitext(name)
        name = stem[: 96 - len(suffix[:12])] + suffix[:12]
    return name


def _sniff_suffix(head: bytes) -> str:
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head.startswith(b"\x89PNG"):
        return ".png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return ".gif"
    if head.startswith(b"BM"):
        return ".bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return ".tif"
    return ""


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _prepare_cache(cache_dir: Path) -> Path:
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageFetchError(f"cannot create the image cache folder {cache_dir}: {exc}") from None
    if cache_dir not in _CLEANED:  # leftovers of a killed process: never complete, never used
        _CLEANED.add(cache_dir)
        cutoff = time.time() - 3600
        for p in cache_dir.glob(".part-*"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass
    return cache_dir


def _cached(cache_dir: Path, digest: str, name: str) -> Path | None:
    p = cache_dir / f"{digest}__{name}"
    if p.is_file():
        return p
    if Path(name).suffix.lower() not in IMAGE_SUFFIXES:  # the suffix was sniffed from the content
        return next((q for q in cache_dir.glob(f"{digest}__{name}.*") if q.is_file()), None)
    return None


def _set_read_timeout(resp: requests.Response, seconds: float) -> None:
    """Lower the socket timeout of a streaming response (so the total deadline holds between reads)."""
    conn = getattr(resp.raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with suppress(OSError):
            sock.settimeout(max(seconds, 0.01))


def _read_some(resp: requests.Response) -> bytes:
    """The next bytes of a streaming body: what one socket read gives (``read`` would wait for a full chunk,
    and a trickling server could then hold it far beyond the deadline)."""
    raw = resp.raw
    if hasattr(raw, "read1"):  # urllib3 >= 2.3
        return raw.read1(_CHUNK, decode_content=True)
    return raw.read(1024, decode_content=True)


# -- the fetcher -------------------------------------------------------------------------------------------
class _Fetch:
    """One call of :func:`fetch_image` (its URL, its Label Studio, its deadline)."""

    def __init__(self, url, ls_url, token, auth, task_id, local_root, cache_dir, limits) -> None:
        self.url = url
        self.ls_url = ls_url.rstrip("/") if ls_url else None
        self.token = token
        self._auth = auth
        self.task_id = task_id
        self.local_root = Path(local_root) if local_root else None
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.limits = limits or DEFAULT_LIMITS
        self.deadline = time.monotonic() + self.limits.total_timeout_s

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
    def download(self, candidates: list[str], key: str, name: str, ls: bool) -> Path:
        auth = self.auth if ls else None
        cache = _prepare_cache(self.cache_dir)
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        fname = _safe_name(name)
        hit = _cached(cache, digest, fname)
        if hit is not None:
            return hit
        with _KEY_LOCKS.hold(digest, self.deadline - time.monotonic()) as got:
            if not got:
                raise self.fail(f"timed out after {self.limits.total_timeout_s:g} s waiting for another download of it")
            hit = _cached(cache, digest, fname)  # another thread may have just fetched it
            if hit is not None:
                return hit
            errors: list[_Failed] = []
            for url in candidates:
                try:
                    return self._get(url, auth, cache, f"{digest}__{fname}")
                except _Failed as exc:
                    errors.append(exc)
                    if exc.final:
                        break
                    if ls and "/storage-data/uploaded/" in url and exc.status == 400:
                        _LEGACY_UPLOADS.add(origin(url))
        best = min(errors, key=lambda e: {401: 0, 404: 1, 403: 2}.get(e.status or 0, 3))
        raise self.fail(best.reason)

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Failed(f"took longer than {self.limits.total_timeout_s:g} s (FETCH_TIMEOUT_S)", final=True)
        return left

    def _get(self, url: str, auth: LabelStudioAuth | None, cache: Path, final_name: str) -> Path:
        lim = self.limits
        current = url
        resp = None
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                left = self._remaining()
                timeout = (min(lim.connect_timeout_s, left), min(lim.read_timeout_s, left))
                resp = _SESSION.get(current, auth=auth, stream=True, timeout=timeout, allow_redirects=False)
                if not resp.is_redirect:
                    break
                nxt = urljoin(current, resp.headers.get("Location", ""))
                resp.close()
                if urlsplit(nxt).scheme.lower() not in ("http", "https"):
                    raise _Failed(f"redirected to an unsupported URL scheme ({urlsplit(nxt).scheme})", final=True)
                current = nxt  # the auth object sends the key on this hop only if it is Label Studio's origin
            else:
                raise _Failed(f"more than {MAX_REDIRECTS} redirects", final=True)
            self._check_status(resp, auth, current)
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > lim.max_bytes:
                raise _Failed(self._too_large(int(length)), final=True)
            return self._save(resp, cache, final_name)
        except LabelStudioError as exc:  # the personal access token could not be exchanged
            raise _Failed(str(exc), 401, final=True) from None
        except requests.exceptions.ConnectTimeout:
            raise _Failed(f"connect timed out after {lim.connect_timeout_s:g} s", final=True) from None
        except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
            raise _Failed(self._read_timeout_reason(), final=True) from None
        except requests.exceptions.SSLError as exc:
            raise _Failed(f"TLS error: {exc}", final=True) from None
        except requests.exceptions.ConnectionError as exc:
            if isinstance(exc.args[0] if exc.args else None, urllib3.exceptions.ReadTimeoutError):
                raise _Failed(self._read_timeout_reason(), final=True) from None
            raise _Failed(f"cannot connect: {_short(exc)}", final=True) from None
        except requests.RequestException as exc:
            raise _Failed(f"download failed: {_short(exc)}", final=True) from None
        finally:
            if resp is not None:
                resp.close()

    def _read_timeout_reason(self) -> str:
        if time.monotonic() >= self.deadline - 0.05:
            return f"took longer than {self.limits.total_timeout_s:g} s (FETCH_TIMEOUT_S)"
        return f"timed out: no data for {self.limits.read_timeout_s:g} s"

    def _too_large(self, n: int | None = None) -> str:
        cap = self.limits.max_bytes
        size = f" ({n / 1e6:.1f} MB)" if n else ""
        return f"too large{size}: more than {cap / 1e6:g} MB (FETCH_MAX_BYTES)"

    def _check_status(self, resp: requests.Response, auth: LabelStudioAuth | None, url: str) -> None:
        code = resp.status_code
        if code < 400 and "X-Accel-Redirect" not in resp.headers:
            return
        to_ls = auth is not None and auth.applies_to(url)
        if code == 401:
            if to_ls:
                raise _Failed(f"401 unauthorized: {auth.refused_message()}", 401)
            raise _Failed("401 unauthorized (Label Studio's key is sent only to Label Studio, not to this host)", 401)
        if code == 403:
            if to_ls and "/data/local-files" in url:
                why = "is LOCAL_FILES_SERVING_ENABLED on, and the file under a local storage of a project the token's user can see?"
            elif to_ls:
                why = "missing, or not visible to the token's user"
            else:
                why = "the server refused it"
            raise _Failed(f"403 forbidden: {why}", 403)
        if code == 404:
            raise _Failed("404 not found" + (" in Label Studio" if to_ls else ""), 404)
        if code < 400:  # a 2xx that only nginx can complete (USE_NGINX_FOR_UPLOADS without nginx)
            raise _Failed("Label Studio answered with an X-Accel-Redirect that only nginx can serve", 400)
        raise _Failed(f"{'Label Studio' if to_ls else 'the server'} answered {code} {resp.reason or ''}".strip(), code)

    def _save(self, resp: requests.Response, cache: Path, final_name: str) -> Path:
        lim = self.limits
        fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=".part-")
        tmp = Path(tmp_name)
        total, head = 0, b""
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    left = self._remaining()
                    _set_read_timeout(resp, min(lim.read_timeout_s, left))
                    try:
                        chunk = _read_some(resp)
                    except urllib3.exceptions.ReadTimeoutError:
                        raise _Failed(self._read_timeout_reason(), final=True) from None
                    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError, OSError) as exc:
                        if isinstance(exc, TimeoutError):
                            raise _Failed(self._read_timeout_reason(), final=True) from None
                        raise _Failed(
                            f"the connection broke after {total} bytes (incomplete download): {_short(exc)}",
                            final=True,
                        ) from None
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > lim.max_bytes:
                        raise _Failed(self._too_large(), final=True)
                    if len(head) < 16:
                        head += chunk[:16]
                    out.write(chunk)
            if total == 0:
                raise _Failed("empty answer (0 bytes)")
            if Path(final_name).suffix.lower() not in IMAGE_SUFFIXES:
                final_name += _sniff_suffix(head)  # training keeps only files with an image suffix
            dest = cache / final_name
            os.replace(tmp, dest)
            return dest
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


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
) -> Path:
    """A local file holding the image behind a task value ``url`` (see the module docstring for the sources).

    Args:
        url: the task's image value (Label Studio path, cloud URI, http(s) URL, ``file://`` URL or path).
        ls_url: Label Studio's URL; its key (``token``, or ``auth``) is sent to this origin only.
        token: a personal access token or a legacy token (made into the shared auth object of
            :func:`~detector_al.ls_auth.label_studio_auth`), used only when ``auth`` is None.
        task_id: the task's id (cloud storage URIs are resolved per task).
        local_root: the local-files root shared with Label Studio, if any: local-files URLs are read from
            it, and ``file://`` URLs and paths are read only under it.
        cache_dir: where downloads are kept (created; default: a folder in the system's temp dir).
        limits: timeouts and size cap (default :data:`DEFAULT_LIMITS`).

    Raises:
        ImageFetchError: ``cannot fetch <url>: <reason>`` (timeout, too large, 401 with the token kind, 404 ...).
    """
    return _Fetch(url, ls_url, token, auth, task_id, local_root, cache_dir, limits).run()
