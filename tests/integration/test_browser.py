"""What a person gets in a real browser: "Label All Tasks" serves our queue, and "Start Training" reaches the backend.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by selenium) against a real Label
Studio and a real backend. The project is made the way the product makes it: ``ingest`` (pre-annotations,
queue scores, auto-accepted images), then the backend connected. The browser logs in as the admin, presses
"Label All Tasks", reads each served task's id where a person reads it (the task number in the labeling
page's bottom bar; the label stream keeps no task id in the address bar), submits the pre-annotation as it
is, and then presses Settings -> Model -> "Start Training".

Skipped, with the reason, only where no browser is installed (``.ci/run`` installs one); with
``DETECTOR_AL_REQUIRE_BROWSER=1`` (set by ``.ci/run`` once it has one) a missing browser fails instead.
``DETECTOR_AL_DOCS_SCREENSHOTS=1`` also writes the labeling page to ``docs/label_stream.png``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from detector_al.label_studio.local_server import DEFAULT_PASSWORD, DEFAULT_USER
from detector_al.policy.settings import POLICY
from detector_al.state.store import FINISHED
from tests.integration.conftest import REPO, BackendServer, connect_backend, wait_for

AUTO_ACCEPT = "auto_accept"
N_IMAGES = 14
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


def missing_browser() -> str | None:
    """Why no browser can be driven here, or None."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (`make test` installs it with the dev extra)")
    if not CHROMIUM:
        missing.append("chromium (apt-get install chromium; .ci/run installs it)")
    if not CHROMEDRIVER:
        missing.append("chromedriver (apt-get install chromium-driver; .ci/run installs it)")
    return "no browser to drive: " + ", ".join(missing) if missing else None


MISSING = missing_browser()
REQUIRED = bool(os.environ.get("DETECTOR_AL_REQUIRE_BROWSER"))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(MISSING) and not REQUIRED, reason=str(MISSING))]


@pytest.fixture(scope="module")
def browser(label_studio, tmp_path_factory):
    """Headless Chromium, logged in to Label Studio as its admin (through the login form)."""
    if MISSING:  # only when DETECTOR_AL_REQUIRE_BROWSER is set (else the module is skipped)
        pytest.fail(f"{MISSING} (DETECTOR_AL_REQUIRE_BROWSER is set)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        log_in(driver, label_studio.url)
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def stream_backend(trained_weights, label_studio, tmp_path_factory):
    """A backend of this module's own (one-epoch retraining), so that "Start Training" costs seconds and
    leaves the session's backend and its model version alone."""
    server = BackendServer(
        trained_weights,
        label_studio.files_root,
        tmp_path_factory.mktemp("browser-backend") / "models",
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        TRAIN_EPOCHS=1,
    ).start()
    yield server
    if server.proc and server.proc.poll() is None:  # the backend and a training child it may have started
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(30)


@pytest.fixture(scope="module")
def project(label_studio, ls_client, sample_data, trained_weights, stream_backend, tmp_path_factory):
    """Pool images ingested as a user does (uploaded, pre-annotated, queued, some auto-accepted), then the
    backend connected. Returns (project id, model version)."""
    from detector_al.label_studio.client import LabelStudioClient
    from detector_al.label_studio.config import parse_label_config
    from detector_al.label_studio.task_sink import LabelStudioSink
    from detector_al.model.detector import Detector
    from detector_al.pipelines.ingest import IngestConfig, ingest
    from detector_al.policy.ceal import CealConfig
    from detector_al.state.registry import ModelRegistry
    from detector_al.state.store import STORE_FILE_NAME, Store

    folder = tmp_path_factory.mktemp("browser-src")
    for p in sorted((sample_data / "images" / "pool").glob("*.jpg"))[:N_IMAGES]:
        shutil.copy(p, folder / p.name)
    version = ModelRegistry(stream_backend.model_dir).version_of(trained_weights)  # as `ingest --model-dir` does
    assert version, "the backend did not register its weights"
    client = LabelStudioClient(label_studio.url, label_studio.token)
    p = client.ls.projects.create(title="browser stream", label_config=(sample_data / "label_config.xml").read_text())
    det = Detector.load(trained_weights, conf=0.05, version=version)
    report = ingest(
        folder,
        det,
        Store(stream_backend.model_dir / STORE_FILE_NAME),  # one store with the backend, as `ingest --model-dir`
        parse_label_config(p.label_config, det.names),
        IngestConfig(
            policy=replace(POLICY, budget=4, ceal=CealConfig(delta_0=0.05))
        ),  # generous: some images are auto-accepted
        LabelStudioSink(client, p.id, None, folder),
        p.id,
    )
    assert report.created_tasks == N_IMAGES, report.summary()
    connect_backend(ls_client, p.id, stream_backend.url)
    assert wait_for(lambda: ls_client.projects.get(id=p.id).model_version == version, 30), (
        f"project model_version {ls_client.projects.get(id=p.id).model_version!r} != backend's {version!r}"
    )
    return p.id, version


def queue_order(ls_client, project: int, version: str) -> list:
    """The tasks in our queue order: the score of the prediction of the project's model version, ascending."""
    tasks = list(ls_client.tasks.list(project=project, fields="all"))
    score = {t.id: next(pr.score for pr in t.predictions if pr.model_version == version) for t in tasks}
    return sorted(tasks, key=lambda t: (score[t.id], t.id))


def log_in(driver, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/user/login/")
    WebDriverWait(driver, 60).until(ec.presence_of_element_located((By.NAME, "email")))
    driver.find_element(By.NAME, "email").send_keys(DEFAULT_USER)
    driver.find_element(By.NAME, "password").send_keys(DEFAULT_PASSWORD)
    driver.find_element(By.NAME, "password").submit()
    WebDriverWait(driver, 30).until(lambda d: "/user/login" not in d.current_url, "the login form did not let us in")


def shown_task_id(driver) -> int | None:
    """The task number the labeling page shows in its bottom bar (what a person reads), if any."""
    from selenium.webdriver.common.by import By

    els = driver.find_elements(By.CSS_SELECTOR, ".lsf-current-task__task-id")
    if not els:
        return None
    text = driver.execute_script(
        "const n = arguments[0].firstChild; return n && n.nodeType === Node.TEXT_NODE ? n.textContent : null", els[0]
    )
    return int(text) if text and text.strip().isdigit() else None


def image_shown(driver) -> bool:
    return bool(
        driver.execute_script(
            "return [...document.images].some(i => i.complete && i.naturalWidth > 0 "
            "&& i.getBoundingClientRect().width > 200)"
        )
    )


@contextlib.contextmanager
def evidence_on_failure(driver, tmp_path: Path):
    """On a failure, keep what the browser showed (a screenshot and the page's HTML) and say where."""
    try:
        yield
    except Exception as exc:
        driver.save_screenshot(str(tmp_path / "failure.png"))
        (tmp_path / "failure.html").write_text(driver.page_source)
        raise AssertionError(f"{type(exc).__name__} at {driver.current_url}; the page: {tmp_path}/failure.png") from exc


def save_screenshot(driver, tmp_path: Path, name: str = "label_stream.png") -> Path:
    out = tmp_path / name
    driver.save_screenshot(str(out))
    if os.environ.get("DETECTOR_AL_DOCS_SCREENSHOTS"):
        shutil.copyfile(out, REPO / "docs" / name)
    return out


def test_label_all_tasks_in_the_browser_serves_the_queue_in_order_then_the_auto_accepted(
    browser, label_studio, ls_client, project, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    pid, version = project
    order = queue_order(ls_client, pid, version)
    auto = {t.id for t in order if t.data.get("al_status") == AUTO_ACCEPT}
    n_queued = len(order) - len(auto)
    assert auto and n_queued, f"the test needs queued and auto-accepted tasks ({n_queued} queued, {len(auto)} auto)"
    n = n_queued + 1  # every queued task, then the first auto-accepted one

    with evidence_on_failure(browser, tmp_path):
        browser.get(f"{label_studio.url}/projects/{pid}/data")
        WebDriverWait(browser, 60).until(
            ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Label All Tasks']"))
        ).click()
        served: list[int] = []
        for k in range(n):
            prev = served[-1] if served else None
            shown = wait_for(lambda prev=prev: (t := shown_task_id(browser)) is not None and t != prev and t, 60)
            assert shown, f"after {served}, the labeling page shows no new task (still {shown_task_id(browser)})"
            served.append(shown)
            if k == 0:
                assert wait_for(lambda: image_shown(browser), 30), "the first task's image did not appear"
                time.sleep(1.0)  # the pre-annotation boxes are drawn over the image
                shot = save_screenshot(browser, tmp_path)
                print(f"labeling page: {shot}")
            submit = WebDriverWait(browser, 30).until(
                ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Submit']"))
            )
            submit.click()
    # the submissions are real: one annotation per served task, the pre-annotation as it was (its regions)
    preds = {t.id: next(pr for pr in t.predictions if pr.model_version == version) for t in order}

    def submitted():
        done = {t.id: t for t in ls_client.tasks.list(project=pid, fields="all") if t.total_annotations}
        return done if set(done) >= set(served) else None

    done = wait_for(submitted, 30)
    assert done, f"not every served task was annotated: {served}"
    for tid in served:
        (ann,) = done[tid].annotations
        assert len(ann["result"]) == len(preds[tid].result), (tid, ann["result"], preds[tid].result)

    expected = [t.id for t in order[:n]]
    statuses = {t.id: t.data.get("al_status") for t in order}
    assert not auto & set(served[:n_queued]), (
        f"auto-accepted tasks served while queued ones remained: served {served} "
        f"({[statuses.get(t) for t in served]}); queue {expected}; "
        f"sampling {ls_client.projects.get(id=pid).sampling!r}"
    )
    assert served == expected, (
        f"served {served} ({[statuses.get(t) for t in served]}) != the queue's first {n} {expected}; "
        f"sampling {ls_client.projects.get(id=pid).sampling!r}"
    )


def test_the_tasks_submitted_in_the_browser_count_in_annotator_time(ls_client, project, stream_backend):
    """After the test above: every submission reaches /status -> annotator_time with the seconds the labeling page
    measured, started from the pre-annotation of the project's version, every box kept (submitted as shown)."""
    from detector_al.state.annotation_times import AnnotationTimes
    from detector_al.state.store import STORE_FILE_NAME, Store

    pid, version = project
    done = {t.id: t for t in ls_client.tasks.list(project=pid, fields="all") if t.total_annotations}
    assert done, "the test above submitted nothing"
    lead = [a["lead_time"] for t in done.values() for a in t.annotations]
    assert all(x and x > 0 for x in lead), f"the labeling page measured no lead_time: {lead}"

    def recorded():
        status = requests.get(f"{stream_backend.url}/status", timeout=10).json()
        t = status["annotator_time"]["projects"].get(str(pid))
        return t if t and t["by_model_version"].get(version, {}).get("annotations") == len(done) else None

    t = wait_for(recorded, 30)
    assert t, requests.get(f"{stream_backend.url}/status", timeout=10).json()["annotator_time"]
    assert t["annotations"] == len(done) and t["median_s"] == pytest.approx(statistics.median(lead), abs=0.01)
    records = AnnotationTimes(Store(stream_backend.model_dir / STORE_FILE_NAME)).records(pid)
    assert {r.task_id for r in records} == set(done)
    for r in records:
        assert r.model_version == version and r.edit is not None, r
        assert (r.edit.verify, r.edit.draw, r.edit.delete) == (r.shown, 0, 0), r


def test_start_training_in_the_browser_queues_a_training_job(
    browser, label_studio, ls_client, project, stream_backend, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from detector_al.pipelines.retrain_dataset import in_validation
    from tests.integration.test_retraining_label_studio import with_validation_tasks

    pid, _ = project
    # a candidate is judged only on held-out labels: 3 tasks of the validation split labeled (pre-annotations kept;
    # the tasks added to reach them are copies of the first task, whose pre-annotation they take)
    tasks = with_validation_tasks(ls_client, pid, n_val=3)
    first = tasks[0].predictions[0].result if tasks[0].predictions else []
    have = sum(in_validation(t.id) for t in tasks if t.total_annotations)
    for t in [t for t in tasks if in_validation(t.id) and not t.total_annotations][: max(3 - have, 0)]:
        ls_client.annotations.create(id=t.id, result=t.predictions[0].result if t.predictions else first)
    jobs_before = {j["id"] for j in requests.get(f"{stream_backend.url}/status", timeout=10).json()["jobs"]}
    with evidence_on_failure(browser, tmp_path):
        browser.get(f"{label_studio.url}/projects/{pid}/data")
        wait = WebDriverWait(browser, 60)
        wait.until(
            ec.element_to_be_clickable(
                (By.XPATH, "//a[normalize-space()='Settings'] | //button[normalize-space()='Settings']")
            )
        ).click()
        wait.until(ec.element_to_be_clickable((By.XPATH, "//a[normalize-space()='Model']"))).click()
        wait.until(
            ec.element_to_be_clickable((By.CSS_SELECTOR, "[aria-label='Machine learning model options']"))
        ).click()
        wait.until(
            ec.element_to_be_clickable(
                (By.XPATH, "//*[normalize-space()='Start Training' and not(*[normalize-space()])]")
            )
        ).click()  # the card menu's item, which opens the "Start Model Training" dialog
        wait.until(ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Start Training']"))).click()
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[contains(normalize-space(), 'Request Sent!')]")))

    def new_jobs():
        jobs = requests.get(f"{stream_backend.url}/status", timeout=10).json()["jobs"]
        return [j for j in jobs if j["id"] not in jobs_before]

    jobs = wait_for(new_jobs, 30)
    assert jobs, f"no training job in the backend's /status after Start Training (backend log: {stream_backend.log})"
    assert jobs[0]["project"] == pid and "START_TRAINING" in jobs[0]["reason"], jobs[0]


def test_the_dashboard_after_a_retraining_shows_versions_curve_queue_and_stopping(
    browser, project, stream_backend, tmp_path
):
    """After "Start Training" (the test above) has run: what a labeling lead sees on the backend's dashboard."""
    from selenium.webdriver.common.by import By

    pid, _ = project

    def finished():  # the Start Training job's end (the stream's 10th label may have queued one of its own before)
        jobs = requests.get(f"{stream_backend.url}/status", timeout=10).json()["jobs"]
        return [j for j in jobs if j["project"] == pid and "START_TRAINING" in j["reason"] and j["status"] in FINISHED]

    jobs = wait_for(finished, 300, every=1)
    assert jobs and jobs[0]["status"] == "done", jobs
    version = jobs[0]["model_version"]
    with evidence_on_failure(browser, tmp_path):
        browser.get(f"{stream_backend.url}/dashboard")
        section = browser.find_element(By.ID, f"project-{pid}")
        versions = section.find_element(By.ID, "versions").text
        assert version in versions and ("promoted" in versions or "kept the serving model" in versions), versions
        curve = section.find_element(By.ID, "curve")
        assert curve.find_elements(By.CSS_SELECTOR, "svg circle"), "no point on the learning curve"
        cadence = section.find_element(By.ID, "cadence").text  # when it retrains by itself (TRAIN_EVERY)
        assert cadence.startswith("Retrains by itself after every") and "to go" in cadence, cadence
        queue = section.find_element(By.ID, "queue").text
        status = requests.get(f"{stream_backend.url}/status", timeout=10).json()
        assert "queued" in queue and "auto-accepted" in queue and "labeled" in queue, queue
        stopping = section.find_element(By.ID, "stopping").text.lower()  # headings are shown in capitals
        assert "stopping signal" in stopping and any(w in stopping for w in ("stop:", "keep labeling", "not measured"))
        assert str(pid) in status["stopping"]["projects"] and str(pid) in status["label_errors"]["projects"]
        errors = section.find_element(By.ID, "label-errors").text
        checked = status["label_errors"]["projects"][str(pid)]["checked"]
        assert f"of {checked}" in errors and checked > 0, errors  # the labels submitted in the stream were reviewed
        times = section.find_element(By.ID, "annotator-time")  # the submissions' seconds, per model version
        assert times.find_elements(By.CSS_SELECTOR, "svg rect"), times.text
        assert f"over {status['annotator_time']['projects'][str(pid)]['annotations']}" in times.text, times.text
        save_screenshot(browser, tmp_path, "dashboard.png")
