"""Downloading one image URL into the cache folder: streamed, time-limited, size-capped, never partial.

Every download has a connect timeout, a read timeout, a total deadline and a size cap (:class:`FetchLimits`).
The body streams into a temporary file in the cache folder, renamed into place only when complete, so a cut,
refused, too slow or too large download leaves nothing behind. Redirects are followed by hand (the auth object
sends Label Studio's key on a hop only if it goes to Label Studio's origin).

Private addresses (Label Studio's ``SSRF_PROTECTION_ENABLED`` rule) are refused where the connection is made: each
new connection resolves its host once, checks every address, and connects to a checked one, with the URL's host
kept for the ``Host`` header, TLS SNI and the certificate check (:class:`_CheckedAdapter`). A name that answers a
public address to a check and a private one to the connection (DNS rebinding) therefore never reaches the private
one. Through a proxy (``HTTP(S)_PROXY``), the proxy connects: the name is checked here before the request.
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import os
import socket
import tempfile
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.exceptions
import urllib3.util.connection

from detector_al.io.fetch.cache import IMAGE_SUFFIXES, PART_PREFIX
from detector_al.label_studio.auth import LabelStudioAuth, origin, same_origin
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
    trust_label_studio: bool = True  # Label Studio's URL may be private: false when an unauthenticated /setup set it


def refused_ip(address: str) -> bool:
    """A private, loopback, link-local, reserved, multicast or unspecified address: what Label Studio's
    ``SSRF_PROTECTION_ENABLED`` refuses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast or ip.is_unspecified


def private_address(host: str) -> str | None:
    """The first refused address (:func:`refused_ip`) ``host`` resolves to (None: none, or it does not resolve,
    which the download then reports). A check by name only: a download checks the addresses it connects to
    (:class:`_CheckedAdapter`)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return next((str(info[4][0]) for info in infos if refused_ip(str(info[4][0]))), None)


class AddressRefused(Exception):
    """A connection's host resolved to a refused address (raised where the connection is made)."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to {address}")
        self.host, self.address = host, address


@dataclass(frozen=True)
class _Policy:
    """Where a session's connections may go: anywhere (``allow_private``), else public addresses and the trusted
    origin (Label Studio's, ``(scheme, host, port)``)."""

    allow_private: bool
    trusted: tuple[str, str, int] | None


def _checked_socket(conn, policy: _Policy, scheme: str) -> socket.socket:
    """The socket of a new connection: ``conn``'s host resolved once, every address checked against ``policy``, a
    checked address connected (the next one if it refuses). Errors are urllib3's, as its own ``_new_conn`` raises."""
    host, port = conn.host, conn.port or conn.default_port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise urllib3.exceptions.NameResolutionError(host, conn, e) from e
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not (policy.allow_private or (scheme, host.lower(), port) == policy.trusted):
        refused = next((a for a in addresses if refused_ip(a)), None)
        if refused is not None:  # one private answer refuses the name, as Label Studio does
            raise AddressRefused(host, refused)
    error: OSError | None = None
    for address in addresses:
        try:
            return urllib3.util.connection.create_connection(
                (address, port), conn.timeout, source_address=conn.source_address, socket_options=conn.socket_options
            )
        except TimeoutError as e:
            raise urllib3.exceptions.ConnectTimeoutError(
                conn, f"Connection to {host} timed out. (connect timeout={conn.timeout})"
            ) from e
        except OSError as e:
            error = e
    raise urllib3.exceptions.NewConnectionError(conn, f"Failed to establish a new connection: {error}")


def _checked_pools(policy: _Policy) -> dict[str, type]:
    """urllib3 pool classes whose connections are made by :func:`_checked_socket` under ``policy``."""

    class CheckedHTTPConnection(urllib3.connection.HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _checked_socket(self, policy, "http")

    class CheckedHTTPSConnection(
        urllib3.connection.HTTPSConnection
    ):  # TLS wraps this socket with the URL's host (SNI, certificate)
        def _new_conn(self) -> socket.socket:
            return _checked_socket(self, policy, "https")

    class CheckedHTTPConnectionPool(urllib3.HTTPConnectionPool):
        ConnectionCls = CheckedHTTPConnection

    class CheckedHTTPSConnectionPool(urllib3.HTTPSConnectionPool):
        ConnectionCls = CheckedHTTPSConnection

    return {"http": CheckedHTTPConnectionPool, "https": CheckedHTTPSConnectionPool}


class _CheckedAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter that connects only where ``policy`` allows, to the very addresses it checked."""

    def __init__(self, policy: _Policy) -> None:
        self.policy = policy
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _checked_pools(self.policy)


DEFAULT_LIMITS = FetchLimits()


class DownloadFailed(Exception):
    """One download attempt failed: ``reason`` is for the user; ``status`` the HTTP status, if any; ``final``:
    no other URL of the same image is worth trying."""

    def __init__(self, reason: str, status: int | None = None, final: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.status, self.final = reason, status, final


def _new_session(policy: _Policy) -> requests.Session:
    s = requests.Session()
    s.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))  # stateless: keep no cookies
    s.headers["Accept"] = "image/*,*/*;q=0.8"
    adapter = _CheckedAdapter(policy)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


_SESSIONS: dict[_Policy, requests.Session] = {}  # one per policy: a connection is reused only under its own policy
_SESSIONS_LOCK = threading.Lock()
MAX_SESSIONS = 16


def _session(policy: _Policy) -> requests.Session:
    """The shared session of ``policy`` (kept: its connections are reused across downloads)."""
    with _SESSIONS_LOCK:
        s = _SESSIONS.get(policy)
        if s is None:
            while len(_SESSIONS) >= MAX_SESSIONS:
                _SESSIONS.pop(next(iter(_SESSIONS))).close()
            s = _SESSIONS[policy] = _new_session(policy)
        return s


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

    def __init__(self, limits: FetchLimits, deadline: float, label_studio: str | None = None) -> None:
        self.limits = limits
        self.deadline = deadline
        self.label_studio = label_studio
        # Label Studio's URL: its origin may be private (a local or in-cluster install), if the settings trust it
        self.trusted = label_studio if limits.trust_label_studio else None
        self.session = _session(_Policy(limits.allow_private, origin(self.trusted or "")))

    def _refusal(self, host: str, address: str) -> DownloadFailed:
        if self.trusted is None and (origin(self.label_studio or "") or ("", "", 0))[1] == host.lower():
            why = (
                "Label Studio's host is trusted only when LABEL_STUDIO_URL names it, or when /setup needs basic auth "
                "(BASIC_AUTH_USER, BASIC_AUTH_PASS): without either, anyone could point the backend at an internal host"
            )
        else:
            why = "only Label Studio's own host is fetched there (set FETCH_ALLOW_PRIVATE=true to allow such URLs)"
        return DownloadFailed(f"refused: {host} is a private or loopback address ({address}); {why}", final=True)

    def _check_proxied(self, url: str) -> None:
        """Through a proxy the proxy connects, so the name is checked here (the best a client can do)."""
        if self.limits.allow_private or same_origin(url, self.trusted) or not requests.utils.get_environ_proxies(url):
            return
        host = urlsplit(url).hostname or ""
        found = private_address(host)
        if found is not None:
            raise self._refusal(host, found)

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
            self._check_proxied(current)  # every hop: a public URL may redirect to a private one
            left = self._remaining()
            timeout = (min(lim.connect_timeout_s, left), min(lim.read_timeout_s, left))
            try:  # the connection checks the addresses it connects to
                resp = self.session.get(current, auth=auth, stream=True, timeout=timeout, allow_redirects=False)
            except AddressRefused as exc:
                raise self._refusal(exc.host, exc.address) from None
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
