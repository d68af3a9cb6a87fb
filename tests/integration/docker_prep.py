"""Docker for tests/integration/test_docker.py, made ready in the background while the rest of the suite runs.

``docker/make-local-base.sh`` (Debian's Docker, a dockerd, the local base image), then the two images built side by
side: the backend's (the repository's Dockerfile) and Label Studio's (docker/label-studio.Dockerfile). Building them
takes 2-4 min on 2 cores, most of it downloading and unpacking PyTorch; the tests that use them need only a minute.
tests/integration/conftest.py starts this once collection is over (when test_docker.py has tests to run) and runs
test_docker.py last, so the builds overlap with the rest of the suite; the module's fixtures wait for them and check
them as before. Whatever it made goes at the end of the session at the latest: the builds still running, the two
images (unless ``DETECTOR_AL_DOCKER_KEEP_IMAGES=1``) and the dockerd it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"  # Debian's client: a newer static one may come first on PATH
BASE_IMAGE = "local/python:3.11-slim"
TAG = f"test-{os.getpid()}"
BACKEND_IMAGE = f"detector-al:{TAG}"
LS_IMAGE = f"detector-al/label-studio:1.23.2-{TAG}"
KEEP_IMAGES = os.environ.get("DETECTOR_AL_DOCKER_KEEP_IMAGES") == "1"
BUILD_LIMIT_S = 3600


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} -> {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return r


class Build:
    """``docker build`` in the background: the two images build side by side (downloads overlap with installs)."""

    def __init__(self, name: str, args: list[str], context: str) -> None:
        self.name, self.start = name, time.time()
        self.end: float | None = None
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - open while the build runs, closed in result()
        self.proc = subprocess.Popen(
            [DOCKER, "build", "-t", name, *args, context], stdout=self.log, stderr=subprocess.STDOUT, text=True
        )

    def poll(self) -> bool:
        """True once the build has ended (its end time noted the first time it is seen)."""
        if self.end is None and self.proc.poll() is not None:
            self.end = time.time()
        return self.end is not None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def result(self) -> tuple[int | None, float, str]:
        """The build's exit code (None: still running), its seconds and the end of its output."""
        seconds = (self.end or time.time()) - self.start
        if self.log.closed:
            return self.proc.poll(), seconds, ""
        self.log.seek(0)
        output = self.log.read()[-4000:]
        self.log.close()
        return self.proc.poll(), seconds, output


class DockerPrep:
    """make-local-base.sh, then both builds, on a thread of their own; :meth:`close` undoes what they made."""

    def __init__(self) -> None:
        self.started = time.time()
        self.ready_at: float | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix="detector-al-dockerd-"))
        self.pidfile = self.tmp / "dockerd.pid"
        self.setup: subprocess.CompletedProcess | None = None
        self.setup_error: str | None = None
        self.builds: list[Build] = []
        self._setup_done = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._images_removed = False
        self._thread = threading.Thread(target=self._run, name="docker-prep", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            env = {**os.environ, "DOCKERD_PIDFILE": str(self.pidfile), "DOCKERD_LOG": str(self.tmp / "dockerd.log")}
            self.setup = subprocess.run(
                ["bash", str(REPO / "docker" / "make-local-base.sh"), BASE_IMAGE],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if self.setup.returncode != 0:
                return
            torch_index = os.environ.get("DETECTOR_AL_DOCKER_TORCH_INDEX_URL", "")
            with self._lock:
                if self._closed:
                    return
                self.builds = [
                    Build(
                        BACKEND_IMAGE,
                        ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", f"TORCH_INDEX_URL={torch_index}"],
                        str(REPO),
                    ),
                    Build(
                        LS_IMAGE,
                        [
                            "-f",
                            str(REPO / "docker" / "label-studio.Dockerfile"),
                            "--build-arg",
                            f"BASE_IMAGE={BASE_IMAGE}",
                        ],
                        str(REPO / "docker"),
                    ),
                ]
            self._setup_done.set()
            deadline = time.time() + BUILD_LIMIT_S
            while time.time() < deadline and not all([b.poll() for b in self.builds]):  # each one's own end
                time.sleep(1)
            self.ready_at = time.time()
        except Exception as e:  # reported by wait_setup / wait_images
            self.setup_error = f"{type(e).__name__}: {e}"
        finally:
            self._setup_done.set()
            self._done.set()

    def wait_setup(self) -> tuple[int, str]:
        """make-local-base.sh's exit code and its output (3: Docker cannot be set up here; the reason is last)."""
        self._setup_done.wait()
        if self.setup_error or self.setup is None:
            return 1, self.setup_error or "make-local-base.sh did not run"
        return self.setup.returncode, f"{self.setup.stdout[-2000:]}\n{self.setup.stderr[-3000:]}"

    def wait_images(self) -> tuple[float, list[tuple[str, int | None, float, str]]]:
        """Seconds waited here, and per image: name, the build's exit code (None: ran past the limit), its seconds,
        the end of its output."""
        start = time.time()
        self._done.wait()
        waited = time.time() - start
        results = []
        for b in self.builds:
            code, seconds, output = b.result()
            if code is None:
                b.kill()
            results.append((b.name, code, seconds, output))
        return waited, results

    def remove_images(self) -> None:
        """The two images, with the build's intermediate layers that only they use (kept with KEEP_IMAGES)."""
        with self._lock:
            if self._images_removed or not self.builds:
                return
            self._images_removed = True
        for b in self.builds:
            b.kill()
        if not KEEP_IMAGES:
            for b in self.builds:
                docker("image", "rm", "-f", b.name, check=False)

    def stop_dockerd(self) -> None:
        """The dockerd make-local-base.sh started, if it did: it stops its containers and exits."""
        if not self.pidfile.exists():
            return
        pid = int(self.pidfile.read_text())
        self.pidfile.unlink()
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.time() + 60
        while time.time() < deadline and Path(f"/proc/{pid}").exists():
            stat = Path(f"/proc/{pid}/stat")
            state = stat.read_text().split()[2] if stat.exists() else "X"
            if state == "Z":  # exited; its parent (setsid nohup) is gone, init reaps it
                break
            time.sleep(0.5)

    def close(self) -> None:
        """Everything this made goes: the builds still running, the images, the dockerd it started."""
        with self._lock:
            self._closed = True
        self._setup_done.wait()  # make-local-base.sh is not stopped half-way (apt-get, debootstrap)
        self.remove_images()
        self._done.wait()
        self.stop_dockerd()


_prep: DockerPrep | None = None


def start() -> DockerPrep:
    """The session's preparation, started on the first call."""
    global _prep
    if _prep is None:
        _prep = DockerPrep()
    return _prep


def close() -> None:
    if _prep is not None:
        _prep.close()
