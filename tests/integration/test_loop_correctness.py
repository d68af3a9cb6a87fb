"""The loop under real use, against a real Label Studio: one version name for ingest, the backend and the project;
the project serving our version as soon as "Retrieve predictions" returns; skipped and deleted labels; and a
re-scoring that fails half-way while the label stream is served."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import requests
from fastapi.testclient import TestClient

from detector_al.label_studio.annotations import is_labeled
from detector_al.label_studio.client import LabelStudioClient
from detector_al.label_studio.config import parse_label_config
from detector_al.label_studio.task_sink import LabelStudioSink
from detector_al.model.detector import Detector
from detector_al.pipelines.ingest import IngestConfig, ingest
from detector_al.pipelines.ingest_setup import registered_version
from detector_al.policy.settings import POLICY
from detector_al.state.registry import ModelRegistry
from detector_al.state.store import FINISHED, STORE_FILE_NAME, Store
from ml_backend.main import create_app
from ml_backend.settings import Settings
from tests.integration.conftest import BackendServer, connect_backend, queue_published, uploads_with_backend, wait_for
from tests.integration.test_label_stream import queue_order, serve_stream
from tests.integration.test_retraining_label_studio import oracle_regions, pick_labels, with_validation_tasks

pytestmark = pytest.mark.slow


def ingest_folder(label_studio, sample_data, weights, images, title: str, model_dir):
    """``detector-al ingest`` as the library runs it: a new project from a folder under the local-files root."""
    folder = label_studio.files_root / title.replace(" ", "-")
    folder.mkdir()
    for p in images:
        shutil.copy(p, folder / p.name)
    client = LabelStudioClient(label_studio.url, label_studio.token)
    project = client.ls.projects.create(title=title, label_config=(sample_data / "label_config.xml").read_text())
    det = Detector.load(weights, conf=0.05, version=registered_version(str(weights), model_dir))
    target = parse_label_config(project.label_config, det.names)
    store = Store(model_dir / STORE_FILE_NAME)
    sink = LabelStudioSink(client, project.id, label_studio.files_root, folder)
    ingest(
        folder,
        det,
        store,
        target,
        IngestConfig(policy=replace(POLICY, budget=3), files_root=label_studio.files_root),
        sink,
        project.id,
    )
    return client, project.id, det.version


def test_ingest_then_serve_one_version_for_ingest_backend_and_project(
    label_studio, sample_data, trained_weights, tmp_path_factory
):
    """A team ingests a folder (its own model folder), then serves the same weights from another model folder and
    connects the backend: the backend adopts ingest's name, "Retrieve predictions" adds no second version, and no
    refused request is repeated."""
    images = sorted((sample_data / "images" / "pool").glob("*.jpg"))[120:128]
    ingest_dir = tmp_path_factory.mktemp("ingest-models")
    client, project, ingest_version = ingest_folder(
        label_studio, sample_data, trained_weights, images, "ingest then serve", ingest_dir
    )
    assert ingest_version == ModelRegistry(ingest_dir).version_of(trained_weights)  # the registry named it
    assert client.ls.projects.get(id=project).model_version == ingest_version
    server = BackendServer(
        trained_weights,
        label_studio.files_root,
        tmp_path_factory.mktemp("serve-models") / "models",  # another folder: it would say v0-... by itself
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
    ).start()
    try:
        connect_backend(client.ls, project, server.url)
        client.ls.actions.create(
            id="retrieve_tasks_predictions", project=project, selected_items={"all": True, "excluded": []}
        )
        assert server.health()["model_version"] == ingest_version
        assert client.ls.projects.get(id=project).model_version == ingest_version
        versions = [p.model_version for p in client.ls.predictions.list(project=project)]
        assert len(versions) == len(images) and set(versions) == {ingest_version}  # one prediction per task
        # a task added later gets its prediction from /predict, and the queue refresh that follows it (2 s after the
        # last /predict) re-builds the queue under ingest's name: wait for that refresh, then nothing was refused
        folder = label_studio.files_root / "ingest-then-serve"
        shutil.copy(sorted((sample_data / "images" / "pool").glob("*.jpg"))[128], folder / "late.jpg")
        url = next(iter(client.ls.tasks.list(project=project))).data["image"]  # a local-files URL of that folder
        late = client.ls.tasks.create(project=project, data={"image": url.rsplit("/", 1)[0] + "/late.jpg"})
        client.ls.actions.create(
            id="retrieve_tasks_predictions", project=project, selected_items={"all": True, "excluded": []}
        )
        refreshed = wait_for(lambda: "queue re-built" in (log := server.log.read_text()) and log, timeout=60)
        assert refreshed, f"no queue refresh after /predict: {server.log.read_text()[-3000:]}"
        log = server.log.read_text()
        assert "queue not re-built" not in log and "could not make it serve" not in log and " 400 " not in log, log
        assert [p.model_version for p in client.ls.predictions.list(project=project, task=late.id)] == [ingest_version]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def connected(label_studio, sample_data, trained_weights, tmp_path_factory):
    """Uploaded images, the backend connected and "Retrieve predictions" run: ``(client, project, server)``."""
    paths = sorted((sample_data / "images" / "pool").glob("*.jpg"))[140:150]
    model_dir = tmp_path_factory.mktemp("loop-backend") / "models"
    client, project, server = uploads_with_backend(
        label_studio, sample_data, trained_weights, paths, "skips and deletions", model_dir, budget=3
    )
    yield client, project, server
    server.stop()


def test_after_retrieve_predictions_the_project_already_serves_our_version(connected):
    """No window in which the stream falls back to random: the version is aligned in /setup, before predictions."""
    client, project, server = connected
    assert client.ls.projects.get(id=project).model_version == server.health()["model_version"]
    tasks = list(client.ls.tasks.list(project=project, fields="all"))
    assert all(len(t.predictions) == 1 for t in tasks)  # the task predicted in /setup was not predicted twice
    # the backend re-builds the queue 0.5 s after the last /predict, moving scores: compare once it has settled
    assert wait_for(lambda: queue_published(client, project, server.health()["model_version"], 10, 3), timeout=60)
    first = client.http.get(f"{client.url}/api/projects/{project}/next", timeout=30).json()["id"]
    assert first == queue_order(client, project)[0].id


def test_a_skip_is_not_a_label_and_a_deleted_label_returns_its_task(connected, sample_data):
    client, project, server = connected
    store = Store(server.model_dir / STORE_FILE_NAME)
    order = queue_order(client, project)
    skipped, labeled = order[0], order[1]
    client.ls.annotations.create(id=skipped.id, result=[], was_cancelled=True)  # what "Skip" saves
    ann = client.ls.annotations.create(
        id=labeled.id, result=oracle_regions(sample_data, labeled.data["image"].rsplit("-", 1)[-1])
    )
    assert wait_for(lambda: store.labeled_tasks(project) == {labeled.id}), store.events(project)
    fetched = {t.id: t for t in client.ls.tasks.list(project=project, fields="all")}
    assert not is_labeled(fetched[skipped.id]) and is_labeled(fetched[labeled.id])  # retraining reads the same

    client.ls.annotations.delete(id=ann.id)
    assert wait_for(lambda: store.labeled_tasks(project) == set()), store.events(project)
    fetched = {t.id: t for t in client.ls.tasks.list(project=project, fields="all")}
    assert not is_labeled(fetched[labeled.id])  # out of the next training set
    assert labeled.id in serve_stream(client, project, len(order))  # back in the stream


def test_a_rescoring_that_fails_half_way_leaves_the_old_queue_serving(
    label_studio, sample_data, trained_weights, tmp_path_factory, monkeypatch
):
    """The new model's predictions are written, then the project switches: a failure half-way (Label Studio refusing
    the second batch of predictions, injected) leaves the old version serving the whole old queue, the old model
    serving /predict, no new prediction behind, and the job failed."""
    images = sorted((sample_data / "images" / "pool").glob("*.jpg"))[160:172]
    model_dir = tmp_path_factory.mktemp("fail-models") / "models"
    settings = Settings(
        model_dir=model_dir,
        model_path=str(trained_weights),
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.token,
        local_files_document_root=label_studio.files_root,
        train_epochs=1,
        train_tolerance=1.0,  # the candidate is promoted: the failure must come from re-scoring
    )
    with TestClient(create_app(settings)) as backend:
        state = backend.app.state.backend
        v0 = state.service.model_version
        client, project, _ = ingest_folder(label_studio, sample_data, trained_weights, images, "failing", model_dir)
        order = queue_order(client, project)
        before = [t.id for t in order]
        chosen = pick_labels(with_validation_tasks(client.ls, project), 5)  # 3 held-out labels judge the candidate
        for t in chosen:
            client.ls.annotations.create(
                id=t.id, result=oracle_regions(sample_data, t.data["image"].rsplit("/", 1)[-1])
            )
        head = serve_stream(client, project, 1)  # an annotator is mid-stream

        real = client.ls.projects.import_predictions
        calls = []

        def refuse_the_second_batch(id, request):
            calls.append(len(request))
            if len(calls) == 2:
                raise requests.ConnectionError("Label Studio went away")
            return real(id=id, request=request)

        monkeypatch.setattr("detector_al.label_studio.publish.IMPORT_CHUNK", 3)
        monkeypatch.setattr(client.ls.projects, "import_predictions", refuse_the_second_batch)
        state.worker.run_job.client = lambda: client
        job = backend.post("/webhook", json={"action": "START_TRAINING", "project": {"id": project}}).json()
        finished = wait_for(
            lambda: (j := state.store.training_job(job["training_job"]))["status"] in FINISHED and j, 300
        )
        assert finished and finished["status"] == "failed", finished
        assert "keeps serving" in finished["error"] and v0 in finished["error"]
        assert len(calls) == 2
        assert client.ls.projects.get(id=project).model_version == v0
        assert {p.model_version for p in client.ls.predictions.list(project=project)} == {v0}
        assert state.service.model_version == v0 and ModelRegistry(model_dir).current() == v0
        unlabeled = [t for t in before if t not in {c.id for c in chosen} and t not in head]
        assert serve_stream(client, project, 1) == unlabeled[:1]  # the old queue, in its order
