"""The container's entrypoint: check the configuration, then run ``detector-al serve`` on 0.0.0.0:$PORT.

``serve`` (the default command) first checks what a container cannot do without, and stops with exit status 2
and one line that says what to set, instead of starting a backend that fails on every request:

- ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY`` are set (a stock Label Studio refuses the token /setup sends);
- Label Studio answers there (``GET /health``, then its login page: the base URL), waiting up to
  ``LABEL_STUDIO_WAIT_S`` seconds (default 120) while it starts, as beside it in docker-compose.yml;
- it accepts the key (``GET /api/current-user/whoami``; a personal access token is exchanged first).

``DETECTOR_AL_PREFLIGHT=false`` skips the checks. Any other command runs as given (``docker run IMAGE detector-al
score ...``, ``docker run -it IMAGE bash``).

Shutdown (``docker stop``: SIGTERM): the server finishes the requests in flight and stops its training worker; the
process then exits at once. A training job that was running stays ``running`` in the store (SQLite in MODEL_DIR)
and is queued again at the next start, queued ones stay queued: no job is lost, and the stop does not wait for
a training child (which would outlast Docker's grace period and end in SIGKILL).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

ENABLED = os.environ.get("DETECTOR_AL_PREFLIGHT", "true").strip().lower() not in ("0", "false", "no", "off")
PAT_HELP = "a personal access token from Label Studio's Account & Settings"


class ConfigError(Exception):
    """The configuration cannot work: the message says what to set."""


def _local_hint(url: str) -> str:
    from detector_al.label_studio.auth import origin

    host = (origin(url) or ("", "", 0))[1]
    if host in ("localhost", "::1") or host.startswith("127."):
        return (
            " (inside a container, localhost is the container itself: use Label Studio's service name, e.g. "
            "http://label-studio:8080, or the host's address)"
        )
    return ""


def wait_for_label_studio(url: str, wait_s: float) -> None:
    """Return once ``url`` answers as Label Studio; raise :class:`ConfigError` when it is not Label Studio, or
    still unreachable (or starting: 5xx) after ``wait_s`` seconds."""
    import requests

    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            r = requests.get(f"{url}/health", timeout=(3, 10), allow_redirects=False)
        except requests.RequestException as exc:
            problem = f"unreachable ({type(exc).__name__})"
        else:
            try:
                up = r.status_code == 200 and r.json().get("status") == "UP"
            except (ValueError, AttributeError):
                up = False
            if up:
                return
            if r.status_code < 500:  # an answer, but not Label Studio's
                raise ConfigError(
                    f"LABEL_STUDIO_URL={url} is not Label Studio (GET /health answered {r.status_code}): "
                    "set LABEL_STUDIO_URL to Label Studio's address as this container reaches it"
                )
            problem = f"not ready (GET /health answered {r.status_code})"
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"Label Studio at LABEL_STUDIO_URL={url} is {problem} after {wait_s:g} s: set LABEL_STUDIO_URL to "
                f"Label Studio's address as this container reaches it{_local_hint(url)}, or raise LABEL_STUDIO_WAIT_S"
            )
        if not said:
            print(f"waiting up to {wait_s:g} s for Label Studio at {url} ({problem})", file=sys.stderr, flush=True)
            said = True
        time.sleep(2)


def check_base_url(url: str) -> None:
    """:class:`ConfigError` when ``url`` is not Label Studio's base URL: its /health answers under any path (an
    unanchored route), the login page only at the base."""
    import requests

    try:
        r = requests.get(f"{url}/user/login/", timeout=(5, 30), allow_redirects=False)
    except requests.RequestException as exc:
        raise ConfigError(
            f"Label Studio at {url} failed ({type(exc).__name__}): set LABEL_STUDIO_URL to Label Studio's address, "
            "or start again once it answers"
        ) from None
    if r.status_code == 404:
        raise ConfigError(
            f"LABEL_STUDIO_URL={url} is not Label Studio's base URL (GET /user/login/ answered 404): set "
            "LABEL_STUDIO_URL to the address of Label Studio's start page, e.g. http://label-studio:8080"
        )


def check_key(url: str, key: str) -> str:
    """Who Label Studio says the key belongs to; :class:`ConfigError` when it refuses it."""
    import requests

    from detector_al.label_studio.auth import LabelStudioAuth
    from detector_al.label_studio.errors import LabelStudioError

    try:
        session = requests.Session()
        session.auth = auth = LabelStudioAuth(url, key)
        r = session.get(f"{url}/api/current-user/whoami", timeout=(5, 30), allow_redirects=False)
    except LabelStudioError as exc:
        raise ConfigError(f"LABEL_STUDIO_API_KEY: {exc}; set LABEL_STUDIO_API_KEY to {PAT_HELP}") from None
    except requests.RequestException as exc:
        raise ConfigError(
            f"Label Studio at {url} failed while checking LABEL_STUDIO_API_KEY ({type(exc).__name__}): set "
            "LABEL_STUDIO_URL to Label Studio's address, or start again once it answers"
        ) from None
    if r.status_code in (401, 403):
        raise ConfigError(f"LABEL_STUDIO_API_KEY: {auth.refused_message()} (set LABEL_STUDIO_API_KEY to {PAT_HELP})")
    if r.status_code != 200:
        raise ConfigError(
            f"LABEL_STUDIO_URL={url} answered {r.status_code} to GET /api/current-user/whoami, as Label Studio does not:"
            " set LABEL_STUDIO_URL to Label Studio's base URL"
        )
    try:
        return str(r.json().get("email") or r.json().get("username") or "?")
    except (ValueError, AttributeError):
        return "?"


def preflight(env: dict[str, str]) -> None:
    """The checks of the module's docstring, in order; :class:`ConfigError` at the first that fails."""
    from detector_al.label_studio.auth import origin

    url = env.get("LABEL_STUDIO_URL", "").strip().rstrip("/")
    key = env.get("LABEL_STUDIO_API_KEY", "").strip()
    if not url:
        raise ConfigError(
            "LABEL_STUDIO_URL is not set: set LABEL_STUDIO_URL to Label Studio's address as this container reaches it "
            "(in docker-compose.yml: http://label-studio:8080)"
        )
    if origin(url) is None:
        raise ConfigError(
            f"LABEL_STUDIO_URL={url!r} is not an http(s) URL: set LABEL_STUDIO_URL like http://label-studio:8080"
        )
    if not key:
        raise ConfigError(f"LABEL_STUDIO_API_KEY is not set: set LABEL_STUDIO_API_KEY to {PAT_HELP}")
    try:
        wait_s = float(env.get("LABEL_STUDIO_WAIT_S") or 120)
    except ValueError:
        raise ConfigError("LABEL_STUDIO_WAIT_S is not a number: set LABEL_STUDIO_WAIT_S in seconds") from None
    wait_for_label_studio(url, wait_s)
    check_base_url(url)
    user = check_key(url, key)
    print(f"Label Studio at {url}: the key works (user {user})", file=sys.stderr, flush=True)


def _exit_now(code: int) -> None:
    """Exit without waiting for child processes (a training run): the store keeps its job for the next start."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve(args: list[str]) -> None:
    # PID 1 ignores SIGTERM unless it handles it: during the checks, stop at once.
    signal.signal(signal.SIGTERM, lambda *_: _exit_now(143))
    if ENABLED:
        try:
            preflight(dict(os.environ))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            _exit_now(2)
    from importlib.metadata import entry_points

    # the `detector-al` command itself (pyproject.toml's console script), run in this process
    (script,) = entry_points(group="console_scripts", name="detector-al")
    app = script.load()
    # uvicorn handles SIGTERM (graceful shutdown), restores this handler and raises the signal again once done:
    # a stop asked for and carried out is a clean exit.
    signal.signal(signal.SIGTERM, lambda *_: _exit_now(0))
    port = os.environ.get("PORT", "9090")
    try:
        app(["serve", "--host", "0.0.0.0", "--port", port, *args], prog_name="detector-al")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    _exit_now(code)


def main(argv: list[str]) -> None:
    if not argv or argv[0] == "serve":
        serve(argv[1:])
    if argv[:2] == ["detector-al", "serve"]:
        serve(argv[2:])
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
