"""The main job in one command: a local Label Studio with an active-learning queue, end to end.

1. starts a real Label Studio on loopback (data in ``.cache/demo/label-studio``: a second run resumes), or
   uses an existing one (``--ls-url``/``--api-key``);
2. takes the shipped sample-data model (or ``--model``, or trains one with ``--train-bootstrap``);
3. starts the ML backend (uvicorn, a child process), creates the project with the sample label config,
   connects the backend (its webhook comes with it), and ingests the sample pool: pre-annotations,
   priorities, the "Active learning queue" and "Auto-accepted (review)" tabs;
4. prints the URL, the login and what to do next, then serves until Ctrl-C and stops both servers.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from detector_al.policy.settings import POLICY

log = logging.getLogger(__name__)

PROJECT_TITLE = "detector-al demo"


@dataclass
class DemoConfig:
    data_dir: Path = Path(".cache") / "demo"
    sample_data: Path = Path("sample_data")
    model: str | None = None
    train_bootstrap: bool = False
    ls_url: str | None = None
    api_key: str | None = None
    ls_port: int = 8080
    backend_port: int = 9090
    budget: int = POLICY.budget
    train_epochs: int = 20
    train_tolerance: float = 0.005
    exit_after_setup: bool = False


class ChildServer:
    """The backend as a child process, stopped with its process group (``own_session``: in a session of its own, as
    the demo runs it; else in this process's, whose CPU scheduling group it then shares)."""

    def __init__(self, cmd: list[str], env: dict[str, str], url: str, log_file: Path, own_session: bool = True) -> None:
        self.url = url
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = log_file
        self.own_session = own_session
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=log_file.open("a"), stderr=subprocess.STDOUT, start_new_session=own_session
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the ML backend exited ({self.proc.returncode}); see {self.log_file}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the ML backend did not start within {timeout:.0f} s; see {self.log_file}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.own_session:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)


def run_demo(cfg: DemoConfig) -> int:
    from detector_al.label_studio.client import LabelStudioClient
    from detector_al.label_studio.local_server import LocalLabelStudio

    data_dir = cfg.data_dir.absolute()
    sample = cfg.sample_data.absolute()
    pool = sample / "images" / "pool"
    if not pool.is_dir():
        raise FileNotFoundError(f"sample pool not found: {pool} (run from the repository root)")
    started = time.perf_counter()
    local_ls = None
    backend = None
    try:
        if cfg.ls_url:
            url, token, files_root = cfg.ls_url.rstrip("/"), cfg.api_key or "", None
        else:
            local_ls = LocalLabelStudio(data_dir / "label-studio", port=cfg.ls_port, files_root=sample)
            local_ls.start()
            url, token, files_root = local_ls.url, local_ls.token, sample
        client = LabelStudioClient(url, token)
        client.check()
        model_dir = data_dir / "backend"
        backend, version = _start_backend(cfg, model_dir, url, token, files_root, data_dir / "backend.log")
        project, queue_tab = _fill_project(cfg, client, backend.url, model_dir, version, pool, files_root)
        user = local_ls.user if local_ls else "(your account)"
        password = local_ls.password if local_ls else ""
        print(
            f"""
detector-al demo is ready ({time.perf_counter() - started:.0f} s)
  Label Studio : {url}/projects/{project}/data?tab={queue_tab}
  login        : {user} / {password}    API token: {token}
  ML backend   : {backend.url}  (model {version}; status: {backend.url}/status)

Next: press "Label All Tasks" (the project uses "Uncertainty sampling", so Label Studio serves the
active-learning queue: the diverse batch first, then the rest by uncertainty, auto-accepted images last),
correct the pre-annotations and submit. After each batch ({cfg.budget} labels; TRAIN_EVERY sets another number), or
when you press Settings -> Model -> "Start Training", the backend fine-tunes, promotes the new model if it is not worse
on held-out labels (it needs 3 labeled tasks of the validation split, about 1 in 5: about 15 labels; before
that the job ends "waiting" and says how many more: see the status link), re-scores the pool and refreshes the queue:
watch the model version and the al_priority column change. The tabs "Active learning queue" and "Auto-accepted (review)"
are for browsing; the button serves the same order from any tab.
Ctrl-C stops both servers; running `make demo` again resumes in seconds.
READY project={project} ls={url} backend={backend.url} token={token}""",
            flush=True,
        )
        if cfg.exit_after_setup:
            return 0
        while True:
            if backend.proc.poll() is not None:
                raise RuntimeError(f"the ML backend stopped; see {backend.log_file}")
            if local_ls is not None and local_ls.proc is not None and local_ls.proc.poll() is not None:
                raise RuntimeError(f"Label Studio stopped; see {local_ls.log_file}")
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        if backend is not None:
            backend.stop()
        if local_ls is not None:
            local_ls.stop()


def _start_backend(
    cfg: DemoConfig, model_dir: Path, url: str, token: str, files_root: Path | None, log_file: Path
) -> tuple[ChildServer, str]:
    """The ML backend on the bootstrap (or given) model, or the version a retraining promoted since."""
    from detector_al.demo.bootstrap_model import ensure_bootstrap_model
    from detector_al.state.registry import ModelRegistry

    weights = Path(cfg.model) if cfg.model else ensure_bootstrap_model(cfg.train_bootstrap)
    ModelRegistry(model_dir).resolve(str(weights))  # registered (and current, unless retrained since)
    env = {
        **os.environ,
        "MODEL_DIR": str(model_dir),
        "LABEL_STUDIO_URL": url,
        "LABEL_STUDIO_API_KEY": token,
        "TRAIN_EPOCHS": str(cfg.train_epochs),
        "TRAIN_TOLERANCE": str(cfg.train_tolerance),
        # the batch its refreshes serve and, TRAIN_EVERY unset, the labels it retrains after
        "QUEUE_BUDGET": str(cfg.budget),
        "PYTHONUNBUFFERED": "1",
    }
    if files_root is not None:
        env["LOCAL_FILES_DOCUMENT_ROOT"] = str(files_root)
    backend = ChildServer(
        [sys.executable, "-m", "detector_al", "serve", "--port", str(cfg.backend_port)],
        env,
        f"http://127.0.0.1:{cfg.backend_port}",
        log_file,
    )
    backend.wait_ready()
    return backend, requests.get(f"{backend.url}/health", timeout=5).json()["model_version"]


def _fill_project(cfg: DemoConfig, client, backend_url: str, model_dir: Path, version: str, pool: Path, files_root):
    """The demo project with the backend connected and the pool ingested (into the backend's store); returns
    the project id and the queue tab's id."""
    from detector_al.label_studio.config import parse_label_config
    from detector_al.label_studio.task_sink import QUEUE_TAB, LabelStudioSink, find_or_create_project
    from detector_al.model.detector import Detector
    from detector_al.pipelines.ingest import IngestConfig, ingest
    from detector_al.policy.settings import POLICY, SCORER_CONF
    from detector_al.state.registry import ModelRegistry
    from detector_al.state.store import STORE_FILE_NAME, Store

    ls = client.ls
    config = (cfg.sample_data.absolute() / "label_config.xml").read_text()
    project = find_or_create_project(client, PROJECT_TITLE, config)
    if not any(m.url.rstrip("/") == backend_url for m in ls.ml.list(project=project)):
        ls.ml.create(project=project, url=backend_url, title="detector-al", is_interactive=False)
    det = Detector.load(ModelRegistry(model_dir).path(version), conf=SCORER_CONF, version=version)
    target = parse_label_config(ls.projects.get(id=project).label_config, det.names)
    store = Store(model_dir / STORE_FILE_NAME)  # one store with the backend
    report = ingest(
        pool,
        det,
        store,
        target,
        IngestConfig(
            policy=replace(POLICY, budget=cfg.budget),
            files_root=files_root,
            round_index=store.project(project)["round"],
        ),
        sink=LabelStudioSink(client, project, files_root, pool),
        project=project,
    )
    print(report.summary().splitlines()[0], flush=True)
    return project, next(v.id for v in ls.views.list(project=project) if v.data.get("title") == QUEUE_TAB)


def _sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def install_sigterm_handler() -> None:
    """Stop cleanly on SIGTERM as on Ctrl-C."""
    signal.signal(signal.SIGTERM, _sigterm)
