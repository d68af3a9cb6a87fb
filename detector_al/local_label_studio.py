"""Run a real Label Studio on loopback, offline: for the demo and the integration tests.

Label Studio lives in its own virtual environment (``.venv-ls``, made by ``make``); this module only
starts and stops its server with the settings an offline loopback install needs (legacy API token,
local-files serving, loopback ML backends allowed, no outbound calls).

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
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port or free_port()
        self.files_root = Path(files_root).absolute() if files_root else self.data_dir / "files"
        self.user, self.password, self.token = user, password, token
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
                "LABEL_STUDIO_USER_TOKEN": self.token,
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
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
        return env

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
                if requests.get(f"{self.url}/health", timeout=2).json().get("status") == "UP":
                    log.info("Label Studio is up at %s", self.url)
                    return self
            except (requests.RequestException, ValueError):
                pass
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
