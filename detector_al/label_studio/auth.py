"""Label Studio authentication for raw HTTP requests, in one place: legacy tokens and personal access tokens.

A Label Studio token is one of two kinds:

- a **legacy token** (``Authorization: Token <key>``): off by default since Label Studio 1.20;
- a **personal access token** (PAT): a JWT refresh token (three base64url segments, ``eyJ...``). It is never
  sent as is: it is exchanged with ``POST /api/token/refresh/ {"refresh": <pat>}`` for an access token that
  lives minutes, sent as ``Authorization: Bearer <access>``, and exchanged again shortly before it expires
  (its lifetime is read from the JWT, unverified) or once when Label Studio refuses it.

:class:`LabelStudioAuth` is a ``requests`` auth object that does all this, thread-safely, and only for
requests to the Label Studio origin it was made for: a request to any other host gets no credentials, so a
key can never leak to a foreign server (an image URL, a redirect to a presigned cloud URL).

label-studio-sdk's ``LabelStudio(base_url, api_key=pat)`` does the exchange itself: SDK calls keep using it.

Example:
    >>> session = requests.Session()  # doctest: +SKIP
    >>> session.auth = label_studio_auth("http://127.0.0.1:8080", pat)  # doctest: +SKIP
    >>> session.get("http://127.0.0.1:8080/api/projects").json()  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx
import requests
from requests.auth import AuthBase

from detector_al.label_studio.errors import LabelStudioError

log = logging.getLogger(__name__)

LEGACY = "legacy token"
PAT = "personal access token"

_JWT = re.compile(r"^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def token_kind(token: str) -> str:
    """:data:`PAT` for a JWT (three base64url segments starting ``eyJ``), else :data:`LEGACY`."""
    return PAT if _JWT.match(token.strip()) else LEGACY


def jwt_claims(token: str) -> dict:
    """The payload of a JWT, decoded without verification ({} when it is not one)."""
    try:
        payload = token.strip().split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an absolute http(s) URL, default ports filled in; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def same_origin(a: str | None, b: str | None) -> bool:
    """True when both are http(s) URLs with the same scheme, host and port."""
    oa, ob = origin(a or ""), origin(b or "")
    return oa is not None and oa == ob


def refused_message(kind: str) -> str:
    """What to tell the user when Label Studio answers 401 to a token of this kind."""
    if kind == PAT:
        return (
            "Label Studio refused this personal access token (expired or revoked?): "
            "create a new one in Account & Settings"
        )
    return (
        "Label Studio refused this legacy token: legacy tokens are off by default since 1.20; "
        "use a personal access token from Account & Settings"
    )


class LabelStudioAuth(AuthBase):
    """Sets Label Studio's ``Authorization`` header on requests to ``url``'s origin (and on no others).

    Legacy token: ``Token <key>``. Personal access token: ``Bearer <access>``, where the access token is
    obtained from the PAT, cached, refreshed ``refresh_margin_s`` before it expires, and refreshed once more
    when Label Studio refuses it (the request is then sent again once). Thread-safe: concurrent requests that
    meet an expired token cause one refresh. :class:`HttpxLabelStudioAuth` wraps it for ``httpx`` (the SDK).

    Raises (from the request that needed it):
        LabelStudioError: the PAT could not be exchanged (refused, expired, Label Studio unreachable).
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: tuple[float, float] = (5.0, 30.0),
        refresh_margin_s: float = 30.0,
    ) -> None:
        if origin(url) is None:
            raise LabelStudioError(f"Label Studio URL must start with http:// or https://, got {url!r}")
        if not token or not token.strip():
            raise LabelStudioError("no Label Studio API key: set LABEL_STUDIO_API_KEY or pass --api-key")
        self.url = url.rstrip("/")
        self.token = token.strip()
        self.kind = token_kind(self.token)
        self.timeout = timeout
        self.refresh_margin_s = refresh_margin_s
        self.refreshes = 0  # how many access tokens were obtained (tests and logs)
        self._lock = threading.Lock()
        self._access: str | None = None
        self._expires = 0.0  # time.monotonic() when _access expires (our clock: immune to clock skew)
        if self.kind == PAT:
            claims = jwt_claims(self.token)
            exp = claims.get("exp")
            if isinstance(exp, int | float) and exp < time.time():
                when = datetime.fromtimestamp(exp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                raise LabelStudioError(
                    f"this personal access token expired on {when}: create a new one in Account & Settings"
                )
            if claims.get("token_type") == "access":  # an access token pasted as the key: use it while it lives
                self._set_access(self.token)

    @property
    def is_pat(self) -> bool:
        return self.kind == PAT

    def applies_to(self, url: str) -> bool:
        """True when ``url`` is on this Label Studio's origin (the only place the key goes)."""
        return same_origin(url, self.url)

    def refused_message(self) -> str:
        return refused_message(self.kind)

    # -- access tokens ------------------------------------------------------------------------------------
    def _set_access(self, access: str) -> None:
        claims = jwt_claims(access)
        now = time.monotonic()
        exp, iat = claims.get("exp"), claims.get("iat")
        if isinstance(exp, int | float) and isinstance(iat, int | float) and exp > iat:
            lifetime = float(exp - iat)
        elif isinstance(exp, int | float):
            lifetime = max(float(exp - time.time()), 0.0)
        else:
            lifetime = 300.0  # Label Studio's default (simple-jwt's 5 minutes)
        margin = min(self.refresh_margin_s, lifetime / 5)
        self._access, self._expires = access, now + lifetime - margin

    def access_token(self) -> str:
        """The current access token (PAT only), exchanged again when it is about to expire."""
        with self._lock:
            if self._access is None or time.monotonic() >= self._expires:
                self._refresh_locked()
            assert self._access is not None
            return self._access

    def invalidate(self, stale: str | None = None) -> str:
        """Get a new access token, unless another thread already replaced ``stale``; returns the current one."""
        with self._lock:
            if self._access is None or stale is None or stale == self._access:
                self._refresh_locked()
            assert self._access is not None
            return self._access

    def _refresh_locked(self) -> None:
        if jwt_claims(self.token).get("token_type") == "access":
            raise LabelStudioError(
                "this Label Studio key is a short-lived access token and it has expired: "
                "use a personal access token (Account & Settings) instead"
            )
        endpoint = f"{self.url}/api/token/refresh/"
        try:
            r = requests.post(endpoint, json={"refresh": self.token}, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise LabelStudioError(
                f"cannot reach Label Studio at {self.url} to exchange the personal access token: {exc}"
            ) from None
        if r.status_code in (400, 401, 403):
            raise LabelStudioError(f"{refused_message(PAT)} ({self.url} answered {r.status_code})")
        if r.status_code == 404:
            raise LabelStudioError(
                f"Label Studio at {self.url} has no {endpoint} (older than 1.20?): use its legacy token instead"
            )
        try:
            r.raise_for_status()
            access = r.json()["access"]
        except (requests.HTTPError, ValueError, KeyError, TypeError):
            raise LabelStudioError(
                f"Label Studio at {self.url} did not give an access token for the personal access token "
                f"({r.status_code}: {r.text[:200]})"
            ) from None
        self._set_access(str(access))
        self.refreshes += 1
        log.debug("new Label Studio access token for %s (%d so far)", self.url, self.refreshes)

    def header(self) -> dict[str, str]:
        """The ``Authorization`` header for a request to this Label Studio now."""
        if self.is_pat:
            return {"Authorization": f"Bearer {self.access_token()}"}
        return {"Authorization": f"Token {self.token}"}

    # -- requests.auth.AuthBase -----------------------------------------------------------------------------
    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if not self.applies_to(r.url or ""):
            r.headers.pop("Authorization", None)  # never send a Label Studio key to another host
            return r
        if not self.is_pat:
            r.headers["Authorization"] = f"Token {self.token}"
            return r
        access = self.access_token()
        r.headers["Authorization"] = f"Bearer {access}"
        r._ls_access = access  # type: ignore[attr-defined]
        r.register_hook("response", self._retry_refused)
        return r

    def _retry_refused(self, resp: requests.Response, **kwargs) -> requests.Response:
        """On 401 get a new access token (unless another thread just did) and send the request again, once."""
        req = resp.request
        used = getattr(req, "_ls_access", None)
        if (
            resp.status_code != 401
            or used is None
            or getattr(req, "_ls_retried", False)
            or not self.applies_to(req.url or "")
        ):
            return resp
        log.info("Label Studio refused the access token: refreshing it once")
        access = self.invalidate(used)
        resp.content  # noqa: B018 - read the body so the connection goes back to the pool
        resp.close()
        retry = req.copy()
        retry.headers["Authorization"] = f"Bearer {access}"
        retry._ls_access = access  # type: ignore[attr-defined]
        retry._ls_retried = True  # type: ignore[attr-defined]
        again = resp.connection.send(retry, **kwargs)
        again.history.append(resp)
        again.request = retry
        return again


class HttpxLabelStudioAuth(httpx.Auth):
    """The same auth for ``httpx`` (label-studio-sdk's transport): SDK calls then get an access token refreshed
    before it expires and one retry on a 401. The SDK alone refreshes only once its token has expired, so a
    request made in the token's last second can reach Label Studio after it and be refused (seen in a
    5-minute training run)."""

    requires_request_body = True  # a refused request is sent again, body included

    def __init__(self, auth: LabelStudioAuth) -> None:
        self.auth = auth

    def auth_flow(self, request: httpx.Request):
        url = str(request.url)
        if not self.auth.applies_to(url):
            request.headers.pop("Authorization", None)
            yield request
            return
        if urlsplit(url).path.startswith("/api/token/"):  # the SDK's own exchange: no access token needed
            yield request
            return
        if not self.auth.is_pat:
            request.headers["Authorization"] = f"Token {self.auth.token}"
            yield request
            return
        access = self.auth.access_token()
        request.headers["Authorization"] = f"Bearer {access}"
        response = yield request
        if response.status_code == 401:
            log.info("Label Studio refused the access token: refreshing it once")
            request.headers["Authorization"] = f"Bearer {self.auth.invalidate(access)}"
            yield request


_SHARED: dict[tuple, LabelStudioAuth] = {}
_SHARED_LOCK = threading.Lock()


def label_studio_auth(url: str, token: str) -> LabelStudioAuth:
    """The auth object for ``token`` on Label Studio at ``url``, shared process-wide per (origin, token).

    Sharing keeps one cached access token per personal access token, so every request (each /predict, each
    image download) does not exchange the PAT again.
    """
    key = (origin(url), url.rstrip("/"), (token or "").strip())
    with _SHARED_LOCK:
        auth = _SHARED.get(key)
        if auth is None:
            auth = LabelStudioAuth(url, token)
            if len(_SHARED) >= 32:
                _SHARED.pop(next(iter(_SHARED)))
            _SHARED[key] = auth
        return auth
