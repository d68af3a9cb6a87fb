"""A real Label Studio (from .venv-ls) and a real backend server (uvicorn, subprocess) for integration tests."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from detector_al.label_studio.local_server import LocalLabelStudio, free_port, label_studio_bin

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config, items):
    if label_studio_bin().exists():
        return
    if os.environ.get("DETECTOR_AL_REQUIRE_LS"):
        raise pytest.UsageError(f"DETECTOR_AL_REQUIRE_LS is set but {label_studio_bin()} does not exist")
    skip = pytest.mark.skip(reason=f"no Label Studio at {label_studio_bin()} (make ls-setup)")
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(skip)


LS_TEMPLATE = REPO / ".cache" / "ls-template"
_template_init: threading.Thread | None = None


def init_ls_template() -> None:
    """Label Studio's migrations into LS_TEMPLATE, once (about 30 s; pytest-xdist: one worker runs them, the others
    wait for it)."""
    LS_TEMPLATE.parent.mkdir(exist_ok=True)
    with (LS_TEMPLATE.parent / "ls-template.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        LocalLabelStudio(LS_TEMPLATE).init()


def pytest_collection_finish(session):
    """The template is made in the background from the end of collection, while the first tests (which need no Label
    Studio) run; the ls_template fixture waits for it."""
    global _template_init
    if session.config.option.collectonly or not label_studio_bin().exists():
        return
    if any(item.path.parent.name == "integration" for item in session.items):
        _template_init = threading.Thread(target=init_ls_template, name="ls-template", daemon=True)
        _template_init.start()


@pytest.fixture(scope="session")
def ls_template() -> Path:
    """An initialised Label Studio data dir (migrations run once, then copied per session)."""
    if _template_init is not None:
        _template_init.join()
    init_ls_template()  # at once when the background run made it; else (it failed) here, saying why
    return LS_TEMPLATE


@pytest.fixture(scope="session")
def label_studio(ls_template, tmp_path_factory):
    """Label Studio with its default auth: legacy tokens off; ``label_studio.token`` is the admin's personal
    access token (``label_studio.legacy_token`` is refused unless a test asks for :func:`legacy_token`)."""
    data = tmp_path_factory.mktemp("ls-data")
    files = tmp_path_factory.mktemp("ls-files")
    ls = LocalLabelStudio(data / "d", files_root=files)
    ls.copy_from(ls_template)
    with ls:
        yield ls


@pytest.fixture(scope="session")
def ls_client(label_studio):
    """The SDK with the admin's personal access token (the SDK exchanges it for access tokens itself)."""
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=label_studio.url, api_key=label_studio.token)


@pytest.fixture
def legacy_token(label_studio):
    """The admin's legacy token, with legacy tokens turned on for the test (off again afterwards)."""
    label_studio.set_legacy_tokens(True)
    try:
        yield label_studio.legacy_token
    finally:
        label_studio.set_legacy_tokens(False)


class BackendServer:
    def __init__(self, weights: Path, files_root: Path | None, model_dir: Path, **env) -> None:
        """``files_root``: the local-files root shared with Label Studio (None: not shared)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model_dir = model_dir
        self.log = model_dir.parent / f"backend-{self.port}.log"
        self.env = {
            **os.environ,
            "MODEL_DIR": str(model_dir),
            "PYTHONUNBUFFERED": "1",
            **{k: str(v) for k, v in env.items()},
        }
        self.env.pop("LOCAL_FILES_DOCUMENT_ROOT", None)
        if files_root is not None:
            self.env["LOCAL_FILES_DOCUMENT_ROOT"] = str(files_root)
        self.weights = weights
        self.proc: subprocess.Popen | None = None

    def start(self) -> BackendServer:
        cmd = [sys.executable, "-m", "detector_al", "serve", "--model", str(self.weights), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=self.log.open("a"), stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.3)
        raise TimeoutError(self.log.read_text()[-3000:])

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(30)

    def health(self) -> dict:
        return requests.get(f"{self.url}/health", timeout=5).json()


def connect_backend(ls, project: int, url: str, title: str = "detector-al", tries: int = 3):
    """Add the backend to the project (Settings -> Model -> Connect Model) with the SDK client ``ls``. Label Studio
    gives its /setup 3 s and refuses the backend when that runs out (a loaded machine, the first /setup's alignment):
    the next /setup is quick, so try again, as a user would. The ML backend Label Studio made."""
    from label_studio_sdk.core.api_error import ApiError

    for attempt in range(tries):
        try:
            return ls.ml.create(project=project, url=url, title=title, is_interactive=False)
        except ApiError as exc:
            if attempt == tries - 1 or "timed out" not in str(exc.body):
                raise


def sync_local_storage(ls, project: int, path, regex: str = r".*\.jpg", tries: int = 3):
    """Add a local-files source to the project (Settings -> Cloud Storage -> Add Source Storage, "Treat every bucket
    object as a source file") and sync it, as a user does, with the SDK client ``ls``. Without Redis, Label Studio
    syncs inside the request and records a failure (a locked SQLite file on a loaded machine) only on the storage:
    read its status back and sync again, as a user would on seeing "Failed". The storage Label Studio made."""
    st = ls.import_storage.local.create(project=project, path=str(path), regex_filter=regex, use_blob_urls=True)
    for _ in range(tries):
        ls.import_storage.local.sync(id=st.id)
        st = ls.import_storage.local.get(id=st.id)
        if st.status == "completed":
            return st
    raise AssertionError(f"local storage {path} did not sync {tries} times: {st.status} {st.traceback}")


def uploads_with_backend(
    label_studio, sample_data: Path, weights: Path, paths: list[Path], title: str, model_dir: Path, budget: int
):
    """A project whose images are uploaded through Label Studio's Import (as the UI does), then a backend serving
    ``weights`` connected to it and asked for every task's prediction: ``(client, project id, server)``."""
    from detector_al.label_studio.client import LabelStudioClient

    client = LabelStudioClient(label_studio.url, label_studio.token)
    project = client.ls.projects.create(title=title, label_config=(sample_data / "label_config.xml").read_text())
    files = {f"file{i}": (p.name, p.read_bytes(), "image/jpeg") for i, p in enumerate(paths)}
    client.http.post(
        f"{label_studio.url}/api/projects/{project.id}/import", files=files, timeout=120
    ).raise_for_status()
    server = BackendServer(
        weights,
        label_studio.files_root,
        model_dir,
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        QUEUE_BUDGET=budget,
        QUEUE_REFRESH_DELAY_S=0.5,
    ).start()
    try:
        connect_backend(client.ls, project.id, server.url)
        client.ls.actions.create(
            id="retrieve_tasks_predictions", project=project.id, selected_items={"all": True, "excluded": []}
        )
    except BaseException:
        server.stop()
        raise
    return client, project.id, server


@pytest.fixture(scope="session")
def backend(trained_weights, label_studio, tmp_path_factory):
    # as on a stock install: the backend reads Label Studio's files with a personal access token of its own
    server = BackendServer(
        trained_weights,
        label_studio.files_root,
        tmp_path_factory.mktemp("backend") / "models",
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pool_folder(label_studio, sample_data) -> Path:
    """Twelve pool images under Label Studio's local-files root."""
    dest = label_studio.files_root / "pool"
    dest.mkdir(exist_ok=True)
    for p in sorted((sample_data / "images" / "pool").glob("*.jpg"))[:12]:
        shutil.copy(p, dest / p.name)
    return dest


def queue_published(client, project: int, version: str, tasks: int, batch: int) -> bool:
    """Label Studio shows the backend's queue as the label stream reads it: the project's model version and sampling
    are the backend's, every one of its ``tasks`` tasks has a prediction of that version, and ``batch`` of them
    score in the query band (below 0.1). The condition that ``queue_order`` and the stream then read."""
    from detector_al.queue.build import UNCERTAINTY_SAMPLING

    p = client.ls.projects.get(id=project)
    if p.model_version != version or p.sampling != UNCERTAINTY_SAMPLING:
        return False
    by_task: dict[int, float] = {}
    for pr in client.ls.predictions.list(project=project):
        if pr.model_version == version:
            by_task[pr.task] = pr.score
    return len(by_task) == tasks and sum(s < 0.1 for s in by_task.values()) == batch


def wait_for(fn, timeout: float = 20.0, every: float = 0.3):
    """Poll ``fn`` until it returns something truthy (then return it) or ``timeout`` passes (then its last value)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    return fn()
