"""One queue per project, against a real Label Studio: a folder ingested, then the backend predicting the tasks
added since, and the project serves ONE batch of the budget's size (not ingest's batch beside the backend's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from detector_al.label_studio.client import LabelStudioClient
from tests.integration.conftest import REPO, BackendServer, connect_backend, queue_published, wait_for

pytestmark = pytest.mark.slow
BUDGET = 3
# pool images the shipped model is unsure of (none auto-accepted): enough for a batch on either side
INGESTED, ADDED = (185, 187, 188, 189, 190, 193), (194, 195, 198, 199, 200, 201)


def test_ingest_then_backend_predictions_publish_one_batch(label_studio, sample_data, trained_weights, tmp_path):
    pool = sorted((sample_data / "images" / "pool").glob("*.jpg"))
    folder = tmp_path / "src"
    folder.mkdir()
    for i in INGESTED:
        shutil.copy(pool[i], folder / pool[i].name)
    models = tmp_path / "models"  # one MODEL_DIR: one store, one registry for ingest and the backend
    env = {**os.environ, "MODEL_DIR": str(models)}
    env.pop("LOCAL_FILES_DOCUMENT_ROOT", None)
    cmd = [sys.executable, "-m", "detector_al", "ingest", str(folder), "--model", str(trained_weights)]
    cmd += ["--ls-url", label_studio.url, "--api-key", label_studio.token, "--project-title", "one queue"]
    cmd += ["--label-config", str(sample_data / "label_config.xml"), "--budget", str(BUDGET)]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]

    client = LabelStudioClient(label_studio.url, label_studio.token)
    project = next(p for p in client.ls.projects.list(title="one queue") if p.title == "one queue").id
    version = client.ls.projects.get(id=project).model_version
    assert queue_published(client, project, version, 6, BUDGET), res.stdout  # ingest's batch
    files = {f"file{i}": (pool[i].name, pool[i].read_bytes(), "image/jpeg") for i in ADDED}
    client.http.post(f"{label_studio.url}/api/projects/{project}/import", files=files, timeout=120).raise_for_status()
    server = BackendServer(
        trained_weights,
        label_studio.files_root,
        models,
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        QUEUE_BUDGET=BUDGET,
        QUEUE_REFRESH_DELAY_S=0.5,
    ).start()
    try:
        assert server.health()["model_version"] == version
        connect_backend(client.ls, project, server.url)
        client.ls.actions.create(  # the backend predicts the 6 tasks without a prediction of its version
            id="retrieve_tasks_predictions", project=project, selected_items={"all": True, "excluded": []}
        )
        # the backend's refresh (after its /predict calls) plans over all 12 tasks: one batch of BUDGET, not
        # ingest's 3 beside its own 3; wait for a refresh that wrote everything, then count the batch band
        done = wait_for(lambda: "0 not written yet" in server.log.read_text(), timeout=90)
        assert done, server.log.read_text()[-3000:]
        batch = [p.task for p in client.ls.predictions.list(project=project) if p.score < 0.1]
        assert queue_published(client, project, version, 12, BUDGET), f"{len(batch)} tasks in the batch band"
        statuses = {t.id: t.data.get("al_status") for t in client.ls.tasks.list(project=project, fields="all")}
        ingested_in_batch = {t for t in batch if statuses.get(t) is not None}
        assert all(statuses[t] == "query" for t in ingested_in_batch)  # an ingested task's fields follow its place
        assert sum(s == "query" for s in statuses.values()) == len(ingested_in_batch)
    finally:
        server.stop()
