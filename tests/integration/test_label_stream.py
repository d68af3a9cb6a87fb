"""What annotators get from "Label All Tasks": Label Studio's own label stream serves our queue.

The stream is read the way the labeling UI reads it (``GET /api/projects/<id>/next``), one task at a time,
submitting an annotation for each so that the next one is served.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from unittest.mock import patch

import pytest

from detector_al.label_studio.client import LabelStudioClient
from detector_al.label_studio.config import parse_label_config
from detector_al.label_studio.task_sink import LabelStudioSink
from detector_al.model.detector import Detector
from detector_al.pipelines.ingest import IngestConfig, ingest
from detector_al.policy.ceal import CealConfig
from detector_al.policy.settings import POLICY
from detector_al.queue.build import AUTO_ACCEPT, QUERY, UNCERTAINTY_SAMPLING
from detector_al.state.store import Store
from tests.integration.conftest import queue_published, uploads_with_backend, wait_for

pytestmark = pytest.mark.slow


def serve_stream(client: LabelStudioClient, project: int, n: int) -> list[int]:
    """The ids of the first ``n`` tasks the stream serves, labeling each as it comes (an empty submission)."""
    served = []
    for _ in range(n):
        r = client.http.get(f"{client.url}/api/projects/{project}/next", timeout=30)
        if r.status_code == 404:  # nothing left
            break
        r.raise_for_status()
        task = r.json()["id"]
        served.append(task)
        client.ls.annotations.create(id=task, result=[])
    return served


def queue_order(client: LabelStudioClient, project: int) -> list:
    """The project's tasks in our queue order: prediction score (of the project's model version), ascending."""
    version = client.ls.projects.get(id=project).model_version
    tasks = list(client.ls.tasks.list(project=project, fields="all"))
    score = {t.id: next(p.score for p in t.predictions if p.model_version == version) for t in tasks}
    return sorted(tasks, key=lambda t: score[t.id])


@pytest.fixture(scope="module")
def ingested(label_studio, ls_client, sample_data, trained_weights, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream-src")  # not under the local-files root: uploaded, as most users do
    for p in sorted((sample_data / "images" / "pool").glob("*.jpg"))[60:78]:
        shutil.copy(p, folder / p.name)
    client = LabelStudioClient(label_studio.url, label_studio.token)
    project = client.ls.projects.create(
        title="label stream", label_config=(sample_data / "label_config.xml").read_text()
    )
    det = Detector.load(trained_weights, conf=0.05)
    target = parse_label_config(project.label_config, det.names)
    cfg = IngestConfig(
        policy=replace(POLICY, budget=5, ceal=CealConfig(delta_0=0.05))
    )  # generous: some images are auto-accepted
    with patch("detector_al.label_studio.publish.PER_TASK_LOOKUPS", 0):  # this one takes the project-wide lookup
        report = ingest(
            folder,
            det,
            Store(tmp_path_factory.mktemp("stream") / "s.sqlite3"),
            target,
            cfg,
            LabelStudioSink(client, project.id, None, folder),
            project.id,
        )
    assert report.created_tasks == 18
    return client, project.id


def test_label_all_tasks_serves_the_queue_in_order_and_auto_accepted_last(ingested):
    client, project = ingested
    assert client.ls.projects.get(id=project).sampling == UNCERTAINTY_SAMPLING
    order = queue_order(client, project)
    status = [t.data["al_status"] for t in order]
    assert status[:5] == [QUERY] * 5
    n_queued = sum(s != AUTO_ACCEPT for s in status)
    assert 0 < n_queued < len(order), "the test needs both queued and auto-accepted tasks"
    assert AUTO_ACCEPT not in status[:n_queued]  # the queue puts every auto-accepted task last

    served = serve_stream(client, project, n_queued + 1)
    assert served == [t.id for t in order[: n_queued + 1]]


@pytest.fixture(scope="module")
def uploaded_with_backend(label_studio, sample_data, trained_weights, tmp_path_factory):
    """Images uploaded through Label Studio's Import (as the UI does), then the backend connected to the project."""
    paths = sorted((sample_data / "images" / "pool").glob("*.jpg"))[80:92]
    model_dir = tmp_path_factory.mktemp("stream-backend") / "models"
    client, project, server = uploads_with_backend(
        label_studio, sample_data, trained_weights, paths, "uploads + backend", model_dir, budget=4
    )
    yield client, project, server
    server.stop()


def test_a_connected_backend_makes_the_stream_serve_its_diverse_batch_first(uploaded_with_backend):
    client, project, server = uploaded_with_backend
    version = server.health()["model_version"]

    if not wait_for(lambda: queue_published(client, project, version, 12, 4), timeout=60):
        p = client.ls.projects.get(id=project)
        scores = sorted((pr.model_version, pr.score) for pr in client.ls.predictions.list(project=project))
        pytest.fail(
            f"the backend did not set the sampling, the version and the batch: sampling {p.sampling!r}, project "
            f"version {p.model_version!r}, backend {version!r}, predictions {scores}\n{server.log.read_text()[-3000:]}"
        )
    order = queue_order(client, project)
    assert len(order) == 12 and all(t.predictions[0].result for t in order)  # uploaded images were fetched
    served = serve_stream(client, project, 6)
    assert served == [t.id for t in order[:6]]


def test_a_user_who_sets_the_sampling_back_is_told_in_status(uploaded_with_backend):
    import requests

    client, project, server = uploaded_with_backend
    client.ls.projects.update(id=project, sampling="Sequential sampling")
    p = client.ls.projects.get(id=project)
    r = requests.post(
        f"{server.url}/setup",
        json={"project": f"{project}.0", "schema": p.label_config, "hostname": client.url},
        timeout=10,
    )
    assert r.status_code == 200

    def warned():
        return [
            w for w in requests.get(f"{server.url}/status", timeout=5).json()["warnings"] if f"project {project}" in w
        ]

    (warning,) = wait_for(warned, timeout=20)
    assert "Sequential sampling" in warning and UNCERTAINTY_SAMPLING in warning
    assert client.ls.projects.get(id=project).sampling == "Sequential sampling"  # the user's choice stands
    assert "Label All Tasks" in warning
