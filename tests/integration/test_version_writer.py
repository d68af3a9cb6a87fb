"""One writer of a project's model version, against a real Label Studio: a re-ingest with weights older than the
current model is refused (the retrained project keeps its version), and one backend that serves two projects naming
its weights differently answers each under its own name, never renaming itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from detector_al.label_studio.client import LabelStudioClient
from detector_al.state.registry import ModelRegistry, digest_of
from tests.integration.conftest import REPO, BackendServer, connect_backend, wait_for

pytestmark = pytest.mark.slow


def _retrained(weights, out):
    """The same network saved again with another date: other bytes, so another version (a stand-in for a
    retraining, which would take minutes)."""
    import torch

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    ckpt["date"] = "2026-12-06T00:00:00 (test: retrained)"
    torch.save(ckpt, out)
    return out


def test_a_reingest_with_older_weights_than_the_current_model_is_refused(
    ls_client, label_studio, sample_data, trained_weights, tmp_path
):
    folder = tmp_path / "src"
    folder.mkdir()
    for p in sorted((sample_data / "images" / "pool").glob("*.jpg"))[150:154]:
        shutil.copy(p, folder / p.name)
    models = tmp_path / "models"
    env = {**os.environ, "MODEL_DIR": str(models)}
    env.pop("LOCAL_FILES_DOCUMENT_ROOT", None)
    title = "older weights"

    def ingest(weights):
        cmd = [sys.executable, "-m", "detector_al", "ingest", str(folder), "--model", str(weights)]
        cmd += ["--ls-url", label_studio.url, "--api-key", label_studio.token, "--project-title", title]
        cmd += ["--label-config", str(sample_data / "label_config.xml")]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)

    assert ingest(trained_weights).returncode == 0
    project = next(p for p in ls_client.projects.list(title=title) if p.title == title).id
    registry = ModelRegistry(models)
    first = registry.version_of(trained_weights)
    assert ls_client.projects.get(id=project).model_version == first
    # a retraining promotes a new version and switches the project to it (as retraining's publish_version does)
    retrained = registry.add(_retrained(trained_weights, tmp_path / "retrained.pt"))
    registry.promote(retrained)
    task = next(iter(ls_client.tasks.list(project=project))).id
    ls_client.projects.import_predictions(
        id=project, request=[{"task": task, "result": [], "score": 0.5, "model_version": retrained}]
    )
    ls_client.projects.update(id=project, model_version=retrained)

    res = ingest(trained_weights)  # the original weights again
    said = res.stdout + res.stderr
    assert res.returncode == 2, said[-3000:]
    assert f"model version {first}, older than {retrained}" in said and str(registry.path(retrained)) in said
    assert "Traceback" not in said
    assert ls_client.projects.get(id=project).model_version == retrained  # not downgraded
    res = ingest(registry.path(retrained))  # what the message says to do
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert ls_client.projects.get(id=project).model_version == retrained


def _uploaded_project(client: LabelStudioClient, sample_data, title: str, paths) -> int:
    project = client.ls.projects.create(title=title, label_config=(sample_data / "label_config.xml").read_text()).id
    files = {f"file{i}": (p.name, p.read_bytes(), "image/jpeg") for i, p in enumerate(paths)}
    client.http.post(f"{client.url}/api/projects/{project}/import", files=files, timeout=120).raise_for_status()
    return project


def test_one_backend_answers_two_projects_under_their_own_names_for_its_weights(
    label_studio, sample_data, trained_weights, tmp_path
):
    client = LabelStudioClient(label_studio.url, label_studio.token)
    pool = sorted((sample_data / "images" / "pool").glob("*.jpg"))
    server = BackendServer(
        trained_weights,
        label_studio.files_root,
        tmp_path / "models",
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        QUEUE_BUDGET=2,
        QUEUE_REFRESH_DELAY_S=0.5,
    ).start()
    try:
        ours = server.health()["model_version"]
        theirs = "v7-" + digest_of(ours)  # what another model folder (an ingest elsewhere) named the same weights
        a = _uploaded_project(client, sample_data, "named elsewhere", pool[160:164])
        b = _uploaded_project(client, sample_data, "named here", pool[164:168])
        first = next(iter(client.ls.tasks.list(project=a))).id
        client.ls.projects.import_predictions(
            id=a, request=[{"task": first, "result": [], "score": 0.5, "model_version": theirs}]
        )
        client.ls.projects.update(id=a, model_version=theirs)
        for project in (a, b, a):  # connect (/setup), then "Retrieve predictions" (/setup, /predict)
            if project == a and not client.ls.ml.list(project=a):
                connect_backend(client.ls, a, server.url)
            elif project == b and not client.ls.ml.list(project=b):
                connect_backend(client.ls, b, server.url)
            client.ls.actions.create(
                id="retrieve_tasks_predictions", project=project, selected_items={"all": True, "excluded": []}
            )
            assert server.health()["model_version"] == ours  # the one service keeps its name
        for project, name in ((a, theirs), (b, ours)):  # each project on its own name, its queue re-built under it
            log = wait_for(lambda p=project: f"project {p}: queue re-built" in (t := server.log.read_text()) and t)
            assert log and f"project {project}: queue not re-built" not in log, server.log.read_text()[-3000:]
            assert client.ls.projects.get(id=project).model_version == name
            assert {p.model_version for p in client.ls.predictions.list(project=project)} == {name}
        assert len(list(client.ls.predictions.list(project=b))) == 4
    finally:
        server.stop()
