"""Real HTTP servers on loopback, in threads, for the auth and download tests (no mocks of requests)."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Handler = Callable[["Request"], None]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def make_jwt(**claims) -> str:
    """An unsigned-looking JWT (the client never verifies signatures)."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    return f"{head}.{b64url(json.dumps(claims).encode())}.{b64url(b'signature')}"


class Request(BaseHTTPRequestHandler):
    """The handler: every request is logged on the server and answered by ``server.route(self)``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _handle(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(n) if n else b""
        self.server.log.append((self.command, self.path, dict(self.headers)))  # type: ignore[attr-defined]
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.server.route(self)  # type: ignore[attr-defined]

    do_GET = do_POST = _handle

    def send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def json(self, status: int, data) -> None:
        self.send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})


class Loopback:
    """A threaded HTTP server on 127.0.0.1 that answers with ``route(request)``; ``log`` has every request."""

    def __init__(self, route: Handler) -> None:
        self.release = threading.Event()  # hung handlers wait on it; set on close
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Request)
        self.server.daemon_threads = True
        self.server.route = route  # type: ignore[attr-defined]
        self.server.log = []  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def log(self) -> list[tuple[str, str, dict]]:
        return self.server.log  # type: ignore[attr-defined]

    def paths(self, method: str | None = None) -> list[str]:
        return [p for m, p, _ in self.log if method is None or m == method]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Loopback:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FakeLabelStudio:
    """The parts of Label Studio's auth that matter here: ``POST /api/token/refresh/`` for a PAT, legacy
    ``Token`` keys (refused unless ``legacy_on``), and files served to a valid ``Bearer``/``Token`` only.

    ``files`` maps a path (with its query) to bytes; ``routes`` maps a path prefix to a custom handler.
    """

    def __init__(self, pat: str | None = None, legacy: str = "legacy-key", access_lifetime: int = 300) -> None:
        self.pat = pat or make_jwt(token_type="refresh", exp=int(time.time()) + 3600, jti="pat")
        self.legacy = legacy
        self.legacy_on = False
        self.pat_revoked = False
        self.access_lifetime = access_lifetime
        self.valid_access: set[str] = set()
        self.refreshes = 0
        self.files: dict[str, bytes] = {}
        self.routes: dict[str, Handler] = {}
        self.lock = threading.Lock()
        self.http = Loopback(self.route)

    @property
    def url(self) -> str:
        return self.http.url

    def issue(self) -> str:
        with self.lock:
            self.refreshes += 1
            now = int(time.time())
            token = make_jwt(token_type="access", iat=now, exp=now + self.access_lifetime, n=self.refreshes)
            self.valid_access.add(token)
            return token

    def revoke_access_tokens(self) -> None:
        """What an expiry or a server restart looks like to a client: every access token is refused."""
        with self.lock:
            self.valid_access.clear()

    def authorized(self, req: Request) -> bool:
        auth = req.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[7:] in self.valid_access
        if auth.startswith("Token "):
            return self.legacy_on and auth[6:] == self.legacy
        return False

    def route(self, req: Request) -> None:
        path = req.path
        if path == "/api/token/refresh/" and req.command == "POST":
            body = json.loads(req.body or b"{}")
            if body.get("refresh") != self.pat or self.pat_revoked:
                return req.json(401, {"detail": "Token is invalid", "code": "token_not_valid"})
            return req.json(200, {"access": self.issue()})
        for prefix, handler in self.routes.items():
            if path.startswith(prefix):
                return handler(req)
        if not self.authorized(req):
            return req.json(401, {"detail": "Authentication credentials were not provided."})
        if path in self.files:
            return req.send(200, self.files[path], {"Content-Type": "image/jpeg"})
        if path.startswith("/api/projects"):
            return req.json(200, {"count": 0, "results": [], "next": None, "previous": None})
        return req.json(404, {"detail": "Not found."})

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> FakeLabelStudio:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
