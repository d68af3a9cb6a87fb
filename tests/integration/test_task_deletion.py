"""Tasks deleted in a real Label Studio: the backend frees their batch slots (TASKS_DELETED), and a re-ingest makes
the deleted image's task again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from detector_al.state.store import STORE_FILE_NAME, Store
from tests.integration.conftest import REPO, queue_published, uploads_with_backend, wait_for

pytestmark = pytest.mark.slow
BUDGET = 4


def test_deleted_batch_tasks_free_their_slots_in_the_backends_queue(
    label_studio, sample_data, trained_weights, tmp_path
):
    paths = sorted((sample_data / "images" / "pool").glob("*.jpg"))[120:132]
    client, project, server = uploads_with_backend(
        label_studio, sample_data, trained_weights, paths, "deleted tasks", tmp_path / "models", budget=BUDGET
    )
    try:
        version = server.health()["model_version"]
        if not wait_for(lambda: queue_published(client, project, version, 12, BUDGET), timeout=180):
            pytest.fail(f"no batch of {BUDGET} published\n{server.log.read_text()[-3000:]}")
        batch = [p.task for p in client.ls.predictions.list(project=project) if p.score < 0.1]
        for task in batch[:2]:  # Label Studio sends TASKS_DELETED to the backend's /webhook
            client.ls.tasks.delete(id=task)
        store = Store(server.model_dir / STORE_FILE_NAME)
        assert not {r["task_id"] for r in store.predictions(project)} & set(batch[:2])
        # the refresh gives their slots to other tasks: Label Studio serves a whole batch again
        if not wait_for(lambda: queue_published(client, project, version, 10, BUDGET), timeout=60):
            pytest.fail(f"the deleted tasks' slots were not given away\n{server.log.read_text()[-3000:]}")
    finally:
        server.stop()


def test_a_reingest_makes_a_deleted_task_again(ls_client, label_studio, sample_data, trained_weights, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    for p in sorted((sample_data / "images" / "pool").glob("*.jpg"))[140:146]:
        shutil.copy(p, folder / p.name)
    env = {**os.environ, "MODEL_DIR": str(tmp_path / "models")}
    env.pop("LOCAL_FILES_DOCUMENT_ROOT", None)
    cmd = [
        sys.executable,
        "-m",
        "detector_al",
        "ingest",
        str(folder),
        "--model",
        str(trained_weights),
        "--ls-url",
        label_studio.url,
        "--api-key",
        label_studio.token,
        "--project-title",
        "re-ingest deleted",
        "--label-config",
        str(sample_data / "label_config.xml"),
    ]

    def tasks():
        p = next(p for p in ls_client.projects.list(title="re-ingest deleted") if p.title == "re-ingest deleted")
        return list(ls_client.tasks.list(project=p.id, fields="all"))

    def run():
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return res.stdout

    run()
    before = tasks()
    deleted = before[0]
    ls_client.tasks.delete(id=deleted.id)  # no backend: nobody hears the webhook
    out = run()
    after = tasks()
    assert "1 tasks deleted in Label Studio" in out
    assert len(after) == 6 and {t.data["al_hash"] for t in after} == {t.data["al_hash"] for t in before}
    again = next(t for t in after if t.data["al_hash"] == deleted.data["al_hash"])
    assert again.id != deleted.id and again.data["image"].startswith("/data/upload/") and again.predictions
