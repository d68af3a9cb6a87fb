"""Downloading one image URL into the cache folder: streamed, time-limited, size-capped, never partial.

Every download has a connect timeout, a read timeout, a total deadline and a size cap (:class:`FetchLimits`).
The body streams into a temporary file in the cache folder, renamed into place only when complete, so a cut,
refused, too slow or too large download leaves nothing behind. Redirects are followed by hand (the auth object
sends Label Studio's key on a hop only if it goes to Label Studio's origin).
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import os
import socket
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from detector_al.io.fetch.cache import IMAGE_SUFFIXES, PART_PREFIX
from detector_al.label_studio.auth import LabelStudioAuth, same_origin
from detector_al.label_studio.errors import LabelStudioError

MAX_REDIRECTS = 5
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchLimits:
    """How long and how much one image download may take (settings ``FETCH_*``)."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0  # longest wait for the next bytes
    total_timeout_s: float = 60.0  # the whole download, redirects and the token refresh included
    max_bytes: int = 64 * 1024 * 1024
    allow_private: bool = False  # FETCH_ALLOW_PRIVATE: fetch URLs on private, loopback or link-local addresses too
    cache_max_bytes: int = 2 * 2**30  # IMAGE_CACHE_MAX_MB: the downloaded images kept, least recently used go first


def private_address(host: str) -> str | None:
    """The first private, loopback, link-local, reserved or multicast address ``host`` resolves to (None: none, or
    it does not resolve, which the download then reports). What Label Studio's ``SSRF_PROTECTION_ENABLED`` refuses."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if (
            ip.is_private
            or ip.is_loopback
            or ip.is_link_local
            or ip.is_reserved
            or ip.is_multicast
            or ip.is_unspecified
        ):
            return str(ip)
    return None


DEFAULT_LIMITS = FetchLimits()


class DownloadFailed(Exception):
    """One download attempt failed: ``reason`` is for the user; ``status`` the HTTP status, if any; ``final``:
    no other URL of the same image is worth trying."""

    def __init__(self, reason: str, status: int | None = None, final: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.status, self.final = reason, status, final


def _new_session() -> requests.Session:
    s = requests.Session()
    s.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))  # stateless: keep no cookies
    s.headers["Accept"] = "image/*,*/*;q=0.8"
    return s


_SESSION = _new_session()


def sniff_suffix(head: bytes) -> str:
    """The file suffix of an image format recognised from its first bytes, else ``""``."""
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


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class Downloader:
    """Downloads under one deadline (``time.monotonic()`` seconds), shared by redirects and every URL tried."""

    def __init__(self, limits: FetchLimits, deadline: float, trusted: str | None = None) -> None:
        self.limits = limits
        self.deadline = deadline
        self.trusted = trusted  # Label Studio's URL: its origin may be private (a local or in-cluster install)

    def _check_address(self, url: str) -> None:
        """Refuse a URL whose host is a private address, unless it is Label Studio's or allowed by the settings."""
        if self.limits.allow_private or same_origin(url, self.trusted):
            return
        host = urlsplit(url).hostname or ""
        found = private_address(host)
        if found is not None:
            raise DownloadFailed(
                f"refused: {host} is a private or loopback address ({found}); only Label Studio's own host is "
                "fetched there (set FETCH_ALLOW_PRIVATE=true to allow such URLs)",
                final=True,
            )

    def get(self, url: str, auth: LabelStudioAuth | None, cache: Path, final_name: str) -> Path:
        """Download ``url`` into ``cache / final_name`` (plus a sniffed suffix when the name has none).

        Raises:
            DownloadFailed: why, for the user.
        """
        lim = self.limits
        resp = None
        try:
            resp, current = self._follow_redirects(url, auth)
            self._check_status(resp, auth, current)
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > lim.max_bytes:
                raise DownloadFailed(self._too_large(int(length)), final=True)
            return self._save(resp, cache, final_name)
        except LabelStudioError as exc:  # the personal access token could not be exchanged
            raise DownloadFailed(str(exc), 401, final=True) from None
        except requests.exceptions.ConnectTimeout:
            raise DownloadFailed(f"connect timed out after {lim.connect_timeout_s:g} s", final=True) from None
        except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
            raise DownloadFailed(self._read_timeout_reason(), final=True) from None
        except requests.exceptions.SSLError as exc:
            raise DownloadFailed(f"TLS error: {exc}", final=True) from None
        except requests.exceptions.ConnectionError as exc:
            if isinstance(exc.args[0] if exc.args else None, urllib3.exceptions.ReadTimeoutError):
                raise DownloadFailed(self._read_timeout_reason(), final=True) from None
            raise DownloadFailed(f"cannot connect: {_short(exc)}", final=True) from None
        except requests.RequestException as exc:
            raise DownloadFailed(f"download failed: {_short(exc)}", final=True) from None
        finally:
            if resp is not None:
                resp.close()

    def _follow_redirects(self, url: str, auth: LabelStudioAuth | None) -> tuple[requests.Response, str]:
        """The first answer that is not a redirect, and its URL (an open streaming response)."""
        lim = self.limits
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            self._check_address(current)  # every hop: a public URL may redirect to a private one
            left = self._remaining()
            timeout = (min(lim.connect_timeout_s, left), min(lim.read_timeout_s, left))
            resp = _SESSION.get(current, auth=auth, stream=True, timeout=timeout, allow_redirects=False)
            if not resp.is_redirect:
                return resp, current
            nxt = urljoin(current, resp.headers.get("Location", ""))
            resp.close()
            if urlsplit(nxt).scheme.lower() not in ("http", "https"):
                raise DownloadFailed(f"redirected to an unsupported URL scheme ({urlsplit(nxt).scheme})", final=True)
            current = nxt  # the auth object sends the key on this hop only if it is Label Studio's origin
        raise DownloadFailed(f"more than {MAX_REDIRECTS} redirects", final=True)

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DownloadFailed(f"took longer than {self.limits.total_timeout_s:g} s (FETCH_TIMEOUT_S)", final=True)
        return left

    def _read_timeout_reason(self) -> str:
        if time.monotonic() >= self.deadline - 0.05:
            return f"took longer than {self.limits.total_timeout_s:g} s (FETCH_TIMEOUT_S)"
        return f"timed out: no data for {self.limits.read_timeout_s:g} s"

    def _too_large(self, n: int | None = None) -> str:
        cap = self.limits.max_bytes
        size = f" ({n / 1e6:.1f} MB)" if n else ""
        return f"too large{size}: more than {cap / 1e6:g} MB (FETCH_MAX_BYTES)"

    @staticmethod
    def _check_status(resp: requests.Response, auth: LabelStudioAuth | None, url: str) -> None:
        code = resp.status_code
        if code < 400 and "X-Accel-Redirect" not in resp.headers:
            return
        to_ls = auth is not None and auth.applies_to(url)
        if code == 401:
            if to_ls:
                raise DownloadFailed(f"401 unauthorized: {auth.refused_message()}", 401)
            raise DownloadFailed(
                "401 unauthorized (Label Studio's key is sent only to Label Studio, not to this host)", 401
            )
        if code == 403:
            if to_ls and "/data/local-files" in url:
                why = "is LOCAL_FILES_SERVING_ENABLED on, and the file under a local storage of a project the token's user can see?"
            elif to_ls:
                why = "missing, or not visible to the token's user"
            else:
                why = "the server refused it"
            raise DownloadFailed(f"403 forbidden: {why}", 403)
        if code == 404:
            raise DownloadFailed("404 not found" + (" in Label Studio" if to_ls else ""), 404)
        if code < 400:  # a 2xx that only nginx can complete (USE_NGINX_FOR_UPLOADS without nginx)
            raise DownloadFailed("Label Studio answered with an X-Accel-Redirect that only nginx can serve", 400)
        where = "Label Studio" if to_ls else "the server"
        raise DownloadFailed(f"{where} answered {code} {resp.reason or ''}".strip(), code)

    def _save(self, resp: requests.Response, cache: Path, final_name: str) -> Path:
        fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=PART_PREFIX)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                total, head = self._stream_body(resp, out)
            if total == 0:
                raise DownloadFailed("empty answer (0 bytes)")
            if Path(final_name).suffix.lower() not in IMAGE_SUFFIXES:
                final_name += sniff_suffix(head)  # training keeps only files with an image suffix
            dest = cache / final_name
            os.replace(tmp, dest)
            return dest
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _stream_body(self, resp: requests.Response, out) -> tuple[int, bytes]:
        """Copy the body into ``out`` within the limits; returns its size and first bytes."""
        lim = self.limits
        total, head = 0, b""
        while True:
            left = self._remaining()
            _set_read_timeout(resp, min(lim.read_timeout_s, left))
            try:
                chunk = _read_some(resp)
            except urllib3.exceptions.ReadTimeoutError:
                raise DownloadFailed(self._read_timeout_reason(), final=True) from None
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError, OSError) as exc:
                if isinstance(exc, TimeoutError):
                    raise DownloadFailed(self._read_timeout_reason(), final=True) from None
                raise DownloadFailed(
                    f"the connection broke after {total} bytes (incomplete download): {_short(exc)}", final=True
                ) from None
            if not chunk:
                return total, head
            total += len(chunk)
            if total > lim.max_bytes:
                raise DownloadFailed(self._too_large(), final=True)
            if len(head) < 16:
                head += chunk[:16]
            out.write(chunk)
