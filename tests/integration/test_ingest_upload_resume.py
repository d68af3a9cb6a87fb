"""Issue #32's check: an upload-mode ingest (no shared folder) killed at about 20 tasks, resumed, then run once more
with an empty ``MODEL_DIR`` (the store lost) ends with 80 tasks, each with its image and a prediction."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import requests

from detector_al.label_studio.auth import label_studio_auth
from tests.integration.conftest import REPO

pytestmark = pytest.mark.slow
IMAGES = 80


def _env(model_dir) -> dict:
    env = {**os.environ, "MODEL_DIR": str(model_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("LOCAL_FILES_DOCUMENT_ROOT", None)  # upload mode: the folder is not shared with Label Studio
    return env


def test_an_upload_mode_ingest_killed_resumed_and_rerun_from_an_empty_store_keeps_every_image(
    ls_client, label_studio, sample_data, trained_weights, tmp_path
):
    folder = tmp_path / "upload-src"  # outside Label Studio's local-files root
    folder.mkdir()
    for p in sorted((sample_data / "images" / "pool").glob("*.jpg"))[:IMAGES]:
        shutil.copy(p, folder / p.name)
    title = "upload resume"
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
        title,
        "--label-config",
        str(sample_data / "label_config.xml"),
        "--budget",
        "20",
        "--batch-size",
        "4",
        "--tasks-per-request",
        "4",
    ]

    def count() -> int:
        found = [p for p in ls_client.projects.list(title=title) if p.title == title]
        return (ls_client.projects.get(id=found[0].id).task_number or 0) if found else 0

    first = tmp_path / "models"
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=_env(first), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline, n = time.time() + 300, 0
    while time.time() < deadline and (n := count()) < 20:
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert 0 < n < IMAGES, n

    for model_dir in (first, tmp_path / "empty-models"):  # resumed, then from an empty store
        res = subprocess.run(cmd, cwd=REPO, env=_env(model_dir), capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    project = next(p for p in ls_client.projects.list(title=title) if p.title == title)
    tasks = list(ls_client.tasks.list(project=project.id, fields="all"))
    assert len(tasks) == IMAGES and len({t.data["al_hash"] for t in tasks}) == IMAGES
    no_image = [t.id for t in tasks if not (t.data.get("image") or "").startswith("/data/upload/")]
    assert not no_image, f"tasks without their image: {no_image}"
    version = ls_client.projects.get(id=project.id).model_version
    assert all(any(p.model_version == version for p in t.predictions) for t in tasks)
    queried = [t for t in tasks if t.data["al_status"] == "query"]
    assert len(queried) == 20  # the batch annotators get first: the tasks the queue updates rewrote
    with sqlite3.connect(tmp_path / "empty-models" / "detector_al.sqlite3") as db:  # rows recovered from Label Studio
        urls = dict(db.execute("SELECT task_id, url FROM pool").fetchall())
    assert urls == {t.id: t.data["image"] for t in tasks}
    auth = label_studio_auth(label_studio.url, label_studio.token)
    for t in queried[:3]:  # and Label Studio serves their files
        r = requests.get(label_studio.url + t.data["image"], auth=auth, timeout=30)
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
