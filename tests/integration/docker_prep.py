"""Docker for tests/integration/test_docker.py, made ready in the background while the rest of the suite runs.

``docker/make-local-base.sh`` (Debian's Docker, a dockerd, the local base image), then the two images built side by
side: the backend's (the repository's Dockerfile) and Label Studio's (docker/label-studio.Dockerfile). Building them
takes 2-4 min on 2 cores, most of it downloading and unpacking PyTorch; the tests that use them need about a minute.

The first pytest process (the only one, or pytest-xdist's controller) starts this once collection is over, when
test_docker.py has tests to run (tests/conftest.py), and the suite runs test_docker.py after the other integration
tests, so the builds overlap with them. The state is in files under ``$DETECTOR_AL_DOCKER_PREP_DIR`` (set by that
first process, inherited by xdist's workers): whichever process runs test_docker.py waits for them there. Whatever
this made goes at the end of the session at the latest: the builds still running, the two images (unless
``DETECTOR_AL_DOCKER_KEEP_IMAGES=1``) and the dockerd it started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"  # Debian's client: a newer static one may come first on PATH
BASE_IMAGE = "local/python:3.11-slim"
# One tag for the session: the first process's pid (its workers inherit the variable)
TAG = os.environ.setdefault("DETECTOR_AL_DOCKER_TAG", f"test-{os.getpid()}")
BACKEND_IMAGE = f"detector-al:{TAG}"
LS_IMAGE = f"detector-al/label-studio:1.23.2-{TAG}"
KEEP_IMAGES = os.environ.get("DETECTOR_AL_DOCKER_KEEP_IMAGES") == "1"
BUILD_LIMIT_S = 3600
DIR_VAR = "DETECTOR_AL_DOCKER_PREP_DIR"


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} -> {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return r


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _wait_file(path: Path, timeout: float) -> dict:
    deadline = time.time() + timeout
    while not path.exists():
        if time.time() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout:.0f} s")
        time.sleep(0.5)
    return json.loads(path.read_text())


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

    def result(self) -> dict:
        """The build's exit code (None: ran past the limit), its seconds and the end of its output."""
        self.log.seek(0)
        output = self.log.read()[-4000:]
        self.log.close()
        return {"name": self.name, "code": self.proc.poll(), "seconds": (self.end or time.time()) - self.start,
                "output": output}  # fmt: skip


class Prep:
    """The preparation, run on a thread of the process that claimed it; its results go to files in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.builds: list[Build] = []
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="docker-prep", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.time()
        setup_written = False
        try:
            env = {
                **os.environ,
                "DOCKERD_PIDFILE": str(self.folder / "dockerd.pid"),
                "DOCKERD_LOG": str(self.folder / "dockerd.log"),
            }
            r = subprocess.run(
                ["bash", str(REPO / "docker" / "make-local-base.sh"), BASE_IMAGE],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            lines = r.stderr.strip().splitlines()
            _write(
                self.folder / "setup.json",
                {
                    "code": r.returncode,
                    "output": f"{r.stdout[-2000:]}\n{r.stderr[-3000:]}",
                    "reason": lines[-1] if lines else "docker cannot be set up",
                },
            )
            setup_written = True
            if r.returncode != 0:
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
            (self.folder / "builds-started").touch()
            deadline = time.time() + BUILD_LIMIT_S
            while time.time() < deadline and not all([b.poll() for b in self.builds]):  # each one's own end
                time.sleep(1)
            for b in self.builds:
                b.kill()  # past the limit
            results = [b.result() for b in self.builds]
            _write(self.folder / "builds.json", {"builds": results, "ready_s": time.time() - started})
        except Exception as e:  # the waiting fixture fails with it
            error = {"code": 1, "output": f"{type(e).__name__}: {e}", "reason": str(e)}
            if not setup_written:
                _write(self.folder / "setup.json", error)
            _write(self.folder / "builds.json", {"builds": [], "error": error["output"], "ready_s": 0})

    def close(self) -> None:
        """Stop the builds still running and wait for the thread (make-local-base.sh is not stopped half-way:
        apt-get, debootstrap)."""
        with self._lock:
            self._closed = True
            builds = list(self.builds)
        for b in builds:
            b.kill()
        self._thread.join()


_prep: Prep | None = None
_made_folder = False


def folder() -> Path | None:
    value = os.environ.get(DIR_VAR)
    return Path(value) if value else None


def configure() -> None:
    """In the first pytest process: the folder of the session's state (xdist's workers inherit the variable)."""
    global _made_folder
    if folder() is None:
        os.environ[DIR_VAR] = tempfile.mkdtemp(prefix="detector-al-docker-")
        _made_folder = True


def start() -> None:
    """Start the preparation here, unless a process of this session already did."""
    global _prep
    f = folder()
    if f is None:  # outside a session configured by tests/conftest.py
        configure()
        f = folder()
    try:
        os.close(os.open(f / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    _prep = Prep(f)


def wait_setup() -> dict:
    """make-local-base.sh's result: ``code`` (3: Docker cannot be set up here, ``reason`` says why), ``output``."""
    start()  # normally started at collection's end; a no-op then
    return _wait_file(folder() / "setup.json", timeout=1000)


def wait_images() -> dict:
    """``builds``: per image its ``name``, ``code`` (None: ran past the limit), ``seconds`` and ``output``; ``ready_s``:
    when both were done, in seconds after the preparation started; ``error``: what broke the preparation."""
    return _wait_file(folder() / "builds.json", timeout=BUILD_LIMIT_S + 120)


def remove_images() -> None:
    """The two images, with the build's intermediate layers that only they use (kept with KEEP_IMAGES)."""
    f = folder()
    if KEEP_IMAGES or f is None or not (f / "builds-started").exists() or (f / "images-removed").exists():
        return
    (f / "images-removed").touch()
    for name in (BACKEND_IMAGE, LS_IMAGE):
        docker("image", "rm", "-f", name, check=False)


def stop_dockerd() -> None:
    """The dockerd make-local-base.sh started, if it did: it stops its containers and exits."""
    f = folder()
    pidfile = f / "dockerd.pid" if f else None
    if pidfile is None or not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    pidfile.unlink()
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


def report_later(line: str) -> None:
    """A line for the first process to print at the end (a pytest-xdist worker's output is not shown)."""
    with (folder() / "report.txt").open("a") as f:
        f.write(line + "\n")


def close(write_line) -> None:
    """At the end of each process's session: its own builds stop; the first process also prints the workers' lines
    (``write_line``), removes the images and stops the dockerd, when test_docker.py did not get to (-x, Ctrl-C), and
    removes the state folder."""
    if _prep is not None:
        _prep.close()
    f = folder()
    if _made_folder and f is not None:
        if (f / "report.txt").exists():
            for line in (f / "report.txt").read_text().splitlines():
                write_line(f"[docker] {line}")
        remove_images()
        stop_dockerd()
        shutil.rmtree(f, ignore_errors=True)
