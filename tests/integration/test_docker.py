"""The Docker image and docker-compose.yml, built and run here, as Label Studio users deploy ML backends.

1. ``docker/make-local-base.sh`` makes Docker usable on a machine that reaches no image registry: Debian's docker.io
   and docker-compose, a dockerd started by hand, and the base image ``local/python:3.11-slim`` (debootstrap).
2. The repository's Dockerfile builds on that base (``--build-arg BASE_IMAGE=local/python:3.11-slim``; PyTorch from
   ``$DETECTOR_AL_DOCKER_TORCH_INDEX_URL``, default empty: PyPI, since the CPU index is not reachable here), and so
   does Label Studio (``docker/label-studio.Dockerfile``, label-studio 1.23.2 from PyPI) in place of its Hub image.
3. The container alone: ``/health`` answers 200 on a mapped 127.0.0.1 port; it runs as a non-root user with
   ``/models`` a volume; ``docker stop`` ends it with status 0 well within the grace period; a bad configuration
   (no URL, no key, an unreachable URL) stops it at once with status 2 and one line saying what to set.
4. docker-compose.yml: Label Studio and the backend; a personal access token created as a user does, given to the
   backend by environment; a project whose tasks are sample images on the shared local-files volume; the backend
   connected, a prediction for every task; annotations reach the backend by webhook (a training job queued);
   a running and a queued training job survive ``docker stop`` + ``docker start`` (the queue lives in the
   ``/models`` volume); a refused key and a URL that is not Label Studio are refused at start, on the compose network.

Steps 1 and 2 run in the background from the session's start (tests/integration/docker_prep.py), and this module
runs last, so the builds overlap with the rest of the suite. Everything it made goes at the end: containers, networks, volumes, the two images it built (about 6 GB here with
PyPI's CUDA PyTorch; ``DETECTOR_AL_DOCKER_KEEP_IMAGES=1`` keeps them for a faster re-run) and the dockerd it started.
The base image (190 MB) stays, for the next run. Where Docker cannot be set up (not root, no apt-get ...) the tests
are skipped, saying why; ``DETECTOR_AL_REQUIRE_DOCKER=1`` makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from detector_al.label_studio.local_server import free_port
from tests.integration import docker_prep
from tests.integration.conftest import sync_local_storage, wait_for
from tests.integration.docker_prep import BACKEND_IMAGE, LS_IMAGE, docker

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PROJECT = f"detectoraltest{os.getpid()}"
LS_USER, LS_PASSWORD = "admin@detector-al.local", "detector-al-docker"
# Sample pool images in the project: enough that a training has labels to judge it on (about 1 labeled task in 5 is
# kept for validation, and a few are needed there), so that it runs while the container is stopped.
N_TASKS = 18


def report(request, line: str) -> None:
    """A line in pytest's output, not captured (sizes and times the README quotes); from a pytest-xdist worker, at
    the end of the session."""
    if hasattr(request.config, "workerinput"):
        docker_prep.report_later(line)
        return
    plugins = request.config.pluginmanager
    with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
        plugins.get_plugin("terminalreporter").write_line(f"[docker] {line}")


@pytest.fixture(scope="module")
def dockerd():
    """Docker set up by docker/make-local-base.sh (in the background since collection ended, see
    tests/integration/docker_prep.py); the daemon is stopped at the end if it was started for the tests."""
    setup = docker_prep.wait_setup()
    if setup["code"] == 3:  # Docker cannot be set up here: say why
        if os.environ.get("DETECTOR_AL_REQUIRE_DOCKER"):
            pytest.fail(f"DETECTOR_AL_REQUIRE_DOCKER is set but {setup['reason']}")
        pytest.skip(setup["reason"])
    assert setup["code"] == 0, f"docker/make-local-base.sh failed:\n{setup['output']}"
    yield
    docker_prep.stop_dockerd()


@pytest.fixture(scope="module")
def images(request, dockerd):
    """The backend's image (the repository's Dockerfile) and Label Studio's (docker/label-studio.Dockerfile), built
    side by side in the background since collection ended."""
    try:
        start = time.time()
        ready = docker_prep.wait_images()
        report(request, f"images ready {ready['ready_s']:.0f} s after collection (waited {time.time() - start:.0f} s)")
        assert len(ready["builds"]) == 2, ready.get("error")
        for b in ready["builds"]:
            assert b["code"] is not None, f"docker build -t {b['name']} ran past {docker_prep.BUILD_LIMIT_S} s"
            assert b["code"] == 0, f"docker build -t {b['name']} -> {b['code']}\n{b['output']}"
            size = int(docker("image", "inspect", "-f", "{{.Size}}", b["name"]).stdout.strip())
            report(request, f"{b['name']}: built in {b['seconds']:.0f} s (beside the other image), {size / 1e9:.2f} GB")
        yield
    finally:
        start = time.time()
        docker_prep.remove_images()
        report(request, f"images removed in {time.time() - start:.0f} s")


def mapped_url(container: str, port: int = 9090) -> str:
    host_port = docker("port", container, str(port)).stdout.strip().splitlines()[0]  # 127.0.0.1:49153
    return f"http://{host_port}"


def wait_health(url: str, container: str, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            r = requests.get(f"{url}/health", timeout=3)
            if r.status_code == 200:
                return r.json()
        except requests.RequestException:
            pass
        running = docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip()
        assert running == "true", docker("logs", container, check=False).stderr[-3000:]
        time.sleep(1)
    raise TimeoutError(
        f"{url}/health did not answer 200 in {timeout:.0f} s\n" + docker("logs", container).stderr[-3000:]
    )


def stop(container: str, grace: int = 30) -> tuple[float, int]:
    """``docker stop`` (SIGTERM, then SIGKILL after ``grace`` s): how long it took and the exit code."""
    start = time.time()
    docker("stop", "-t", str(grace), container, timeout=grace + 30)
    return time.time() - start, int(docker("inspect", "-f", "{{.State.ExitCode}}", container).stdout.strip())


def test_the_image_serves_health_on_a_mapped_loopback_port_and_stops_cleanly(request, images):
    name = f"{PROJECT}-alone"
    # without Label Studio: the start-up checks off (they are tested below)
    docker("run", "-d", "--name", name, "-p", "127.0.0.1::9090", "-e", "DETECTOR_AL_PREFLIGHT=false", BACKEND_IMAGE)
    try:
        url = mapped_url(name)
        assert url.startswith("http://127.0.0.1:")
        start = time.time()
        health = wait_health(url, name)
        report(request, f"backend alone: /health 200 {time.time() - start:.0f} s after docker run")
        assert health["status"] == "UP" and health["model_version"].startswith("v0-")
        config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", BACKEND_IMAGE).stdout)
        assert config["User"] == "app" and "/models" in config["Volumes"]
        assert config["Healthcheck"]["Test"][0] == "CMD" and "9090" in "".join(config["ExposedPorts"])
        assert docker("exec", name, "id", "-u").stdout.strip() == "1000"
        seconds, code = stop(name)
        assert code == 0, docker("logs", name).stderr[-3000:]
        assert seconds < 15
        report(request, f"backend alone: docker stop took {seconds:.1f} s, exit code {code}")
    finally:
        docker("rm", "-f", "-v", name, check=False)


@pytest.mark.parametrize(
    "env, says",
    [
        ({}, "LABEL_STUDIO_URL is not set"),
        ({"LABEL_STUDIO_URL": "label-studio:8080", "LABEL_STUDIO_API_KEY": "k"}, "is not an http(s) URL"),
        ({"LABEL_STUDIO_URL": "http://label-studio:8080"}, "LABEL_STUDIO_API_KEY is not set"),
        (
            {"LABEL_STUDIO_URL": "http://localhost:8080", "LABEL_STUDIO_API_KEY": "k", "LABEL_STUDIO_WAIT_S": "1"},
            "unreachable",
        ),
    ],
)
def test_a_bad_configuration_stops_the_container_at_once_saying_what_to_set(images, env, says):
    args = [f"--env={k}={v}" for k, v in env.items()]
    r = docker("run", "--rm", "--network", "none", *args, BACKEND_IMAGE, check=False, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len([line for line in lines if line.startswith("error:")]) == 1 and says in lines[-1], r.stderr
    assert "set LABEL_STUDIO_" in lines[-1]
    if "localhost" in env.get("LABEL_STUDIO_URL", ""):
        assert "localhost is the container itself" in lines[-1]


# -- docker-compose.yml ---------------------------------------------------------------------------------------------


class Compose:
    def __init__(self) -> None:
        self.ls_port, self.backend_port = free_port(), free_port()
        self.ls_url = f"http://127.0.0.1:{self.ls_port}"
        self.backend_url = f"http://127.0.0.1:{self.backend_port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "COMPOSE_", "DOCKER_"))},
            "LABEL_STUDIO_IMAGE": LS_IMAGE,
            "DETECTOR_AL_IMAGE": BACKEND_IMAGE,
            "LABEL_STUDIO_PORT": str(self.ls_port),
            "BACKEND_PORT": str(self.backend_port),
            "LABEL_STUDIO_USERNAME": LS_USER,
            "LABEL_STUDIO_PASSWORD": LS_PASSWORD,
            "LOCAL_FILES_DIR": str(REPO / "sample_data" / "images"),
            "TRAIN_EVERY": str(N_TASKS),
            "LABEL_STUDIO_API_KEY": "",
        }
        self.network = f"{PROJECT}_default"

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [
            shutil.which("docker-compose") or "docker-compose",
            "-p",
            PROJECT,
            "-f",
            str(REPO / "docker-compose.yml"),
        ]
        r = subprocess.run([*cmd, *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(
                f"docker-compose {' '.join(args)} -> {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
            )
        return r

    def container(self, service: str) -> str:
        return self("ps", "-q", service).stdout.strip()

    def logs(self, service: str) -> str:
        return self("logs", "--no-color", "--tail", "60", service, check=False).stdout


def personal_access_token(url: str) -> str:
    """The admin's personal access token, made as a user does: log in, then Account & Settings -> Create."""
    s = requests.Session()
    s.get(f"{url}/user/login/", timeout=30).raise_for_status()
    r = s.post(
        f"{url}/user/login/",
        data={"email": LS_USER, "password": LS_PASSWORD, "csrfmiddlewaretoken": s.cookies.get("csrftoken", "")},
        headers={"Referer": f"{url}/user/login/"},
        timeout=30,
        allow_redirects=False,
    )
    assert r.status_code == 302 and "sessionid" in s.cookies, r.text[:500]
    r = s.post(
        f"{url}/api/token/", headers={"X-CSRFToken": s.cookies.get("csrftoken", ""), "Referer": f"{url}/"}, timeout=30
    )
    r.raise_for_status()
    return r.json()["token"]


@pytest.fixture(scope="module")
def compose(request, images):
    """Label Studio up first (its user creates a token), then the backend with that token by environment."""
    c = Compose()
    try:
        start = time.time()
        c("up", "-d", "--no-build", "label-studio")
        assert wait_for(lambda: _ls_up(c.ls_url), timeout=300, every=1), c.logs("label-studio")
        report(request, f"compose: Label Studio up in {time.time() - start:.0f} s (first start: migrations)")
        c.env["LABEL_STUDIO_API_KEY"] = c.token = personal_access_token(c.ls_url)
        start = time.time()
        c("up", "-d", "--no-build", "backend")
        wait_health(c.backend_url, c.container("backend"))
        report(request, f"compose: backend up in {time.time() - start:.0f} s")
        yield c
    finally:
        start = time.time()
        c("down", "-v", "--remove-orphans", "-t", "30", check=False)
        report(request, f"compose: down -v took {time.time() - start:.0f} s")


def _ls_up(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=3).json().get("status") == "UP"
    except (requests.RequestException, ValueError):
        return False


@pytest.fixture(scope="module")
def project(compose, sample_data):
    """A project on sample images of the shared local-files volume, the backend connected to it."""
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=compose.ls_url, api_key=compose.token)
    p = ls.projects.create(title="docker compose", label_config=(sample_data / "label_config.xml").read_text())
    sync_local_storage(
        ls, p.id, "/label-studio/files/pool", rf"pool_00({'|'.join(f'{i:02d}' for i in range(N_TASKS))})\.jpg"
    )
    ml = ls.ml.create(project=p.id, url="http://detector-al.internal:9090", title="detector-al", is_interactive=False)
    return ls, p.id, ml.id


def test_compose_label_studio_gets_predictions_from_the_backend(request, compose, project):
    ls, pid, _ = project
    tasks = list(ls.tasks.list(project=pid, fields="all"))
    images = [t.data["image"] for t in tasks]
    assert len(images) == N_TASKS and all("local-files/?d=" in i for i in images), images
    start = time.time()
    ls.actions.create(id="retrieve_tasks_predictions", project=pid, selected_items={"all": True, "excluded": []})
    version = requests.get(f"{compose.backend_url}/health", timeout=5).json()["model_version"]
    preds = wait_for(lambda: [p for p in ls.predictions.list(project=pid) if p.model_version == version], timeout=60)
    report(request, f"compose: predictions for {len(preds)} tasks in {time.time() - start:.1f} s")
    assert len(preds) == N_TASKS, compose.logs("backend")
    assert sum(len(p.result) for p in preds) > 0  # the sample model finds shapes on the sample images
    assert all(r["type"] == "rectanglelabels" for p in preds for r in p.result)
    # the backend read the images from the shared volume and published its version to the project
    assert wait_for(lambda: ls.projects.get(id=pid).model_version == version, timeout=30)
    health = docker("inspect", "-f", "{{.State.Health.Status}}", compose.container("backend")).stdout.strip()
    assert health in ("starting", "healthy")


def _jobs(compose) -> dict[int, dict]:
    return {j["id"]: j for j in requests.get(f"{compose.backend_url}/status", timeout=10).json()["jobs"]}


def _active(jobs: dict[int, dict]) -> dict[int, str]:
    return {i: j["status"] for i, j in jobs.items() if j["status"] in ("queued", "running")}


def test_compose_webhooks_queue_training_and_docker_stop_start_keeps_the_jobs(request, compose, project):
    ls, pid, ml_id = project
    for t in ls.tasks.list(project=pid, fields="all"):  # every task labeled (its prediction accepted as is)
        (pred,) = ls.predictions.list(task=t.id)
        ls.annotations.create(id=t.id, result=pred.result)
    # TRAIN_EVERY=N_TASKS: the annotations reached the backend through the project's webhook and queued a training
    jobs = wait_for(lambda: [j for j in _jobs(compose).values() if "annotations" in j["reason"]], timeout=60)
    assert jobs, compose.logs("backend")
    first = jobs[0]["id"]

    def training() -> bool:
        job = _jobs(compose)[first]
        assert job["status"] in ("queued", "running"), job  # a refused training says why here
        health = requests.get(f"{compose.backend_url}/health", timeout=5).json()["training"]
        return job["status"] == "running" and health.get("phase") in ("training", "evaluating")

    assert wait_for(training, timeout=120, every=0.5), compose.logs("backend")
    ls.ml.train(id=ml_id)  # "Start Training" while that job trains: a second job waits in the queue
    before = _active(_jobs(compose))
    assert sorted(before.values()) == ["queued", "running"], before

    container = compose.container("backend")
    seconds, code = stop(container)
    report(request, f"compose: docker stop during a training took {seconds:.1f} s, exit code {code}")
    assert code == 0 and seconds < 25, docker("logs", "--tail", "30", container).stderr
    docker("start", container)
    wait_health(compose.backend_url, container)
    after = _jobs(compose)
    # none lost, none failed: the running one queued again (and maybe claimed again), the queued one still queued
    assert set(before) <= set(_active(after)), (before, after)
    running = next(i for i, s in before.items() if s == "running")
    assert (after[running]["detail"] or "").startswith("requeued") or after[running]["status"] == "running", after
    for job in sorted(before, reverse=True):  # the queued one first, so that the worker does not start it
        requests.post(f"{compose.backend_url}/jobs/{job}/cancel", timeout=10)
    assert wait_for(lambda: not _active(_jobs(compose)), timeout=60), _jobs(compose)


def test_compose_network_a_refused_key_or_a_url_that_is_not_label_studio_stops_the_backend(compose):
    cases = [
        ({"LABEL_STUDIO_URL": "http://label-studio:8080", "LABEL_STUDIO_API_KEY": "not-a-token"}, "refused"),
        ({"LABEL_STUDIO_URL": "http://backend:9090", "LABEL_STUDIO_API_KEY": compose.token}, "Label Studio"),
        (
            {"LABEL_STUDIO_URL": "http://label-studio:8080/no-such-path", "LABEL_STUDIO_API_KEY": compose.token},
            "is not Label Studio's base URL",
        ),
    ]
    for env, says in cases:
        args = [f"--env={k}={v}" for k, v in env.items()]
        r = docker("run", "--rm", "--network", compose.network, *args, BACKEND_IMAGE, check=False, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and lines[-1].startswith("error:") and says in lines[-1], (env, r.stderr)
        assert "set LABEL_STUDIO_" in lines[-1], lines[-1]
