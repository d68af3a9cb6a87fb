"""Run a real Label Studio on loopback, offline: for the demo and the integration tests.

Label Studio lives in its own virtual environment (``.venv-ls``, made by ``make``); this module only
starts and stops its server with the settings an offline loopback install needs (local-files serving,
loopback ML backends allowed, no outbound calls), and gets its admin an API key the way a user does.

Tokens are Label Studio's default unless asked otherwise: legacy tokens off, and :attr:`LocalLabelStudio.token`
is the admin's personal access token (created through the login session, as Account & Settings does).
With ``legacy_tokens=True`` legacy tokens are on and ``token`` is the admin's legacy token.

Example:
    >>> with LocalLabelStudio(Path(".cache/ls-data"), port=8080, files_root=Path("sample_data")) as ls:  # doctest: +SKIP
    ...     print(ls.url, ls.token)
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import requests

log = logging.getLogger(__name__)

DEFAULT_LS_BIN = Path(".venv-ls") / "bin" / "label-studio"
DEFAULT_USER = "admin@detector-al.local"
DEFAULT_PASSWORD = "detector-al"
DEFAULT_TOKEN = "detector-al-demo-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def label_studio_bin() -> Path:
    """The label-studio executable: ``$DETECTOR_AL_LABEL_STUDIO`` or ``.venv-ls/bin/label-studio``."""
    return Path(os.environ.get("DETECTOR_AL_LABEL_STUDIO", DEFAULT_LS_BIN)).absolute()


class LocalLabelStudio:
    """A Label Studio server process with its data in ``data_dir`` (kept, so a second start resumes)."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        files_root: Path | None = None,
        user: str = DEFAULT_USER,
        password: str = DEFAULT_PASSWORD,
        token: str = DEFAULT_TOKEN,
        binary: Path | None = None,
        log_file: Path | None = None,
        legacy_tokens: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port or free_port()
        self.files_root = Path(files_root).absolute() if files_root else self.data_dir / "files"
        self.user, self.password, self.legacy_token = user, password, token
        self.legacy_tokens = legacy_tokens
        self._pat: str | None = None
        self._pat_lock = threading.Lock()
        self.binary = binary or label_studio_bin()
        self.log_file = log_file or self.data_dir / "label-studio.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "VIRTUAL_ENV"))}
        env.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "LABEL_STUDIO_HOST": self.url,
                "LABEL_STUDIO_USERNAME": self.user,
                "LABEL_STUDIO_PASSWORD": self.password,
                "LABEL_STUDIO_USER_TOKEN": self.legacy_token,
                "LOCAL_FILES_SERVING_ENABLED": "true",
                "LOCAL_FILES_DOCUMENT_ROOT": str(self.files_root),
                "SSRF_PROTECTION_ENABLED": "false",
                "ML_BLOCK_LOCAL_IP": "false",
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "COLLECT_ANALYTICS": "false",
                "LATEST_VERSION_CHECK": "false",
            }
        )
        if self.legacy_tokens:  # read when the organization is created (init); start() sets it on an existing one
            env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] = "true"
        return env

    @property
    def token(self) -> str:
        """The admin's API key: their personal access token (default), or their legacy token with
        ``legacy_tokens=True``. Needs the server running (a PAT is created on first use)."""
        return self.legacy_token if self.legacy_tokens else self.personal_access_token()

    @property
    def pat_file(self) -> Path:
        return self.data_dir / "detector-al-admin-pat"

    def login(self) -> requests.Session:
        """A ``requests`` session logged in as the admin, as a browser is (the login form, CSRF included)."""
        s = requests.Session()
        s.get(f"{self.url}/user/login/", timeout=30).raise_for_status()
        r = s.post(
            f"{self.url}/user/login/",
            data={
                "email": self.user,
                "password": self.password,
                "persist_session": "on",
                "csrfmiddlewaretoken": s.cookies.get("csrftoken", ""),
            },
            headers={"Referer": f"{self.url}/user/login/"},
            timeout=30,
            allow_redirects=False,
        )
        if r.status_code != 302 or "sessionid" not in s.cookies:
            raise RuntimeError(f"cannot log in to Label Studio at {self.url} as {self.user} ({r.status_code})")
        s.headers.update({"X-CSRFToken": s.cookies.get("csrftoken", ""), "Referer": f"{self.url}/"})
        return s

    def personal_access_token(self) -> str:
        """The admin's personal access token: created the way a user does (log in, then ``POST /api/token/``,
        what Account & Settings -> "Create" calls), kept in ``data_dir`` and reused while Label Studio accepts it.
        """
        with self._pat_lock:
            if self._pat is None and self.pat_file.exists():
                saved = self.pat_file.read_text().strip()
                ok = requests.post(f"{self.url}/api/token/refresh/", json={"refresh": saved}, timeout=30)
                self._pat = saved if ok.status_code == 200 else None
            if self._pat is None:
                r = self.login().post(f"{self.url}/api/token/", timeout=30)
                if r.status_code == 409:
                    raise RuntimeError(
                        f"the admin of {self.url} already has a personal access token that detector-al did not "
                        f"keep: revoke it in Account & Settings (or remove {self.data_dir})"
                    )
                r.raise_for_status()
                self._pat = r.json()["token"]
                self.pat_file.write_text(self._pat)
                self.pat_file.chmod(0o600)
            return self._pat

    def set_legacy_tokens(self, enabled: bool) -> None:
        """Turn the organization's legacy tokens on or off (Organization -> API Tokens Settings in the UI)."""
        s = self.login()
        current = s.get(f"{self.url}/api/jwt/settings", timeout=30)
        current.raise_for_status()
        if current.json().get("legacy_api_tokens_enabled") == enabled:
            return
        r = s.post(
            f"{self.url}/api/jwt/settings",
            json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": enabled},
            timeout=30,
        )
        r.raise_for_status()
        log.info("Label Studio at %s: legacy tokens %s", self.url, "on" if enabled else "off")

    def _check_binary(self) -> None:
        if not self.binary.exists():
            raise FileNotFoundError(
                f"Label Studio is not installed at {self.binary}: run `make ls-setup` (it makes .venv-ls), or set "
                "DETECTOR_AL_LABEL_STUDIO to a label-studio executable"
            )

    def init(self) -> None:
        """Create the database (migrations, about 30 s) if ``data_dir`` has none yet."""
        self._check_binary()
        if (self.data_dir / "label_studio.sqlite3").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.files_root.mkdir(parents=True, exist_ok=True)
        log.info("initialising Label Studio data in %s (first time: about 30 s)", self.data_dir)
        with self.log_file.open("a") as out:
            subprocess.run(
                [str(self.binary), "init", "--no-browser"],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                cwd=self.data_dir,
                timeout=600,
            )

    def copy_from(self, template: Path) -> None:
        """Start from a copy of an initialised data dir (about 3 s to ready instead of 30 s)."""
        shutil.copytree(template, self.data_dir, dirs_exist_ok=True)

    def start(self, timeout: float = 180.0) -> LocalLabelStudio:
        self.init()
        self.files_root.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("a")
        self.proc = subprocess.Popen(
            [str(self.binary), "start", "--internal-host", "127.0.0.1", "--port", str(self.port), "--no-browser"],
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.proc.returncode}; see {self.log_file}")
            try:
                up = requests.get(f"{self.url}/health", timeout=2).json().get("status") == "UP"
            except (requests.RequestException, ValueError):
                up = False
            if up:
                log.info("Label Studio is up at %s", self.url)
                try:  # a data dir keeps the setting it was made with: make it the one asked for
                    self.set_legacy_tokens(self.legacy_tokens)
                except Exception:
                    self.stop()
                    raise
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"Label Studio did not answer /health within {timeout:.0f} s; see {self.log_file}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> LocalLabelStudio:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
