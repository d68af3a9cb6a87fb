"""`detector-al ingest` against a real Label Studio: tasks, priorities, tabs, idempotence, a real kill, offline file."""

from __future__ import annotations

import importlib.util
import json
import os
import re
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
READABLE_BAD = {"png_named.jpg", "rgba.png", "gray16.png", "grayscale.png", "exif_rotated.jpg", "huge.jpg"}


def ingest_cmd(label_studio, folder, weights, store, *extra):
    return [
        sys.executable,
        "-m",
        "detector_al",
        "ingest",
        str(folder),
        "--model",
        str(weights),
        "--ls-url",
        label_studio.url,
        "--api-key",
        label_studio.token,
        "--ls-files-root",
        str(label_studio.files_root),
        "--store",
        str(store),
        *map(str, extra),
    ]


def run(cmd, timeout=600):
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def all_tasks(ls_client, project, **kw):
    return list(ls_client.tasks.list(project=project, fields="all", **kw))


def project_by_title(ls_client, title):
    return next(p for p in ls_client.projects.list(title=title) if p.title == title)


def view_by_title(ls_client, project, title):
    return next(v for v in ls_client.views.list(project=project) if v.data.get("title") == title)


@pytest.fixture(scope="module")
def ingest_folder(label_studio, sample_data):
    dest = label_studio.files_root / "ingest-src"
    (dest / "nested").mkdir(parents=True, exist_ok=True)
    pool = sorted((sample_data / "images" / "pool").glob("*.jpg"))
    for p in pool[20:40]:
        shutil.copy(p, dest / p.name)
    for p in pool[40:50]:
        shutil.copy(p, dest / "nested" / p.name)
    shutil.copytree(sample_data / "bad_inputs", dest / "bad_inputs", dirs_exist_ok=True)
    return dest


def test_ingest_creates_prioritised_tasks_and_tabs_and_is_idempotent(
    ls_client, label_studio, ingest_folder, trained_weights, tmp_path, sample_data
):
    store = tmp_path / "ingest.sqlite3"
    cmd = ingest_cmd(
        label_studio,
        ingest_folder,
        trained_weights,
        store,
        "--project-title",
        "ingest test",
        "--label-config",
        sample_data / "label_config.xml",
        "--budget",
        "8",
    )
    out = run(cmd)
    assert "3 unreadable" in out and "truncated.jpg" in out and "empty.jpg" in out
    project = project_by_title(ls_client, "ingest test")
    tasks = all_tasks(ls_client, project.id)
    assert len(tasks) == 30 + len(READABLE_BAD)
    # gray16.png (16-bit) is uploaded as an 8-bit web copy, not served raw: "/data/upload/<p>/<uuid8>-gray16.png"
    names = {re.sub(r"^[0-9a-f]{8}-", "", t.data["image"].rsplit("/", 1)[-1]) for t in tasks}
    assert names >= READABLE_BAD
    version = ls_client.projects.get(id=project.id).model_version
    assert version and version != "undefined"
    for t in tasks:
        assert {"al_priority", "al_uncertainty", "al_status", "al_hash"} <= set(t.data)
        preds = t.predictions
        assert len(preds) == 1 and preds[0].model_version == version

    queue = view_by_title(ls_client, project.id, "Active learning queue")
    review = view_by_title(ls_client, project.id, "Auto-accepted (review)")
    in_queue = all_tasks(ls_client, project.id, view=queue.id)
    in_review = all_tasks(ls_client, project.id, view=review.id)
    assert {t.id for t in in_review} == {t.id for t in tasks if t.data["al_status"] == "auto_accept"}
    assert {t.id for t in in_queue} == {t.id for t in tasks if t.data["al_status"] != "auto_accept"}
    queried = [t for t in in_queue if t.data["al_status"] == "query"]
    assert len(queried) == 8 and in_queue[:8] == queried  # the chosen batch heads the queue
    rest = [t.data["al_uncertainty"] for t in in_queue[8:]]
    assert rest == sorted(rest, reverse=True)  # then the uncertainty order
    most_uncertain = max(in_queue, key=lambda t: t.data["al_uncertainty"])
    assert in_queue[0].id == most_uncertain.id  # the batch starts from the most uncertain image

    out2 = run(cmd)
    assert " 0 new" in out2 and "0 tasks created" in out2
    assert len(all_tasks(ls_client, project.id)) == len(tasks)


RAY = pytest.param(
    ["--ray", "--ray-workers", "1"],
    id="ray",
    marks=pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is an optional extra"),
)


@pytest.mark.parametrize("scoring", [pytest.param([], id="plain"), RAY])
def test_a_killed_ingest_resumes_with_each_image_exactly_once(
    ls_client, label_studio, sample_data, trained_weights, tmp_path, scoring
):
    """A run killed (with its whole process group: Ray's workers too) half-way, then run again: every image has
    exactly one task with one prediction, in Label Studio and in the store."""
    folder = label_studio.files_root / f"kill-src-{len(scoring)}"
    folder.mkdir()
    for p in sorted((sample_data / "images" / "pool").glob("*.jpg"))[100:160]:
        shutil.copy(p, folder / p.name)
    store = tmp_path / "ingest.sqlite3"
    title = f"ingest kill test {len(scoring)}"
    cmd = ingest_cmd(
        label_studio,
        folder,
        trained_weights,
        store,
        "--project-title",
        title,
        "--label-config",
        sample_data / "label_config.xml",
        "--batch-size",
        "4",
        "--tasks-per-request",
        "4",
        *scoring,
    )
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    count = 0
    while time.time() < deadline:
        try:
            project = project_by_title(ls_client, title)
            count = len(all_tasks(ls_client, project.id))
        except StopIteration:
            count = 0
        if count >= 8:
            break
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert 0 < count < 60, count
    out = run(cmd)
    tasks = all_tasks(ls_client, project_by_title(ls_client, title).id)
    hashes = [t.data["al_hash"] for t in tasks]
    assert len(tasks) == 60 and len(set(hashes)) == 60, out
    assert all(len(t.predictions) == 1 for t in tasks)
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT key, task_id FROM pool").fetchall()
    assert sorted(h for h, _ in rows) == sorted(hashes)
    assert {t for _, t in rows} == {t.id for t in tasks}


def test_offline_tasks_json_imports_unchanged(ls_client, label_studio, sample_data, trained_weights, tmp_path):
    folder = label_studio.files_root / "offline-src"
    folder.mkdir()
    for p in sorted((sample_data / "images" / "pool").glob("*.jpg"))[200:212]:
        shutil.copy(p, folder / p.name)
    out, pseudo = tmp_path / "tasks.json", tmp_path / "pseudo"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "detector_al",
            "ingest",
            str(folder),
            "--model",
            str(trained_weights),
            "--out",
            str(out),
            "--export-pseudo-labels",
            str(pseudo),
            "--ls-files-root",
            str(label_studio.files_root),
            "--store",
            str(tmp_path / "s.sqlite3"),
            "--label-config",
            str(sample_data / "label_config.xml"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    tasks = json.loads(out.read_text())
    assert len(tasks) == 12 and all(t["predictions"] and "al_priority" in t["data"] for t in tasks)
    assert (pseudo / "data.yaml").exists() and (pseudo / "PSEUDO_LABELS.txt").exists()
    p = ls_client.projects.create(title="offline import", label_config=(sample_data / "label_config.xml").read_text())
    ls_client.import_storage.local.create(project=p.id, path=str(folder), regex_filter=r"^$", use_blob_urls=True)
    with out.open("rb") as f:
        r = requests.post(
            f"{label_studio.url}/api/projects/{p.id}/import",
            files={"tasks.json": f},
            auth=label_studio_auth(label_studio.url, label_studio.token),
            timeout=60,
        )
    assert r.status_code == 201, r.text
    imported = all_tasks(ls_client, p.id)
    assert len(imported) == 12 and all(len(t.predictions) == 1 for t in imported)
    img = requests.get(
        label_studio.url + imported[0].data["image"],
        auth=label_studio_auth(label_studio.url, label_studio.token),
        timeout=30,
    )
    assert img.status_code == 200 and img.content[:2] == b"\xff\xd8"


def test_a_wrong_api_key_is_refused_with_a_clear_message(label_studio, sample_data, trained_weights, tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "detector_al",
            "ingest",
            str(sample_data / "bad_inputs"),
            "--model",
            str(trained_weights),
            "--ls-url",
            label_studio.url,
            "--api-key",
            "not-the-token",
            "--project-title",
            "x",
            "--store",
            str(tmp_path / "s.sqlite3"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and "refused the API key" in res.stderr + res.stdout


def test_a_project_label_studio_refuses_is_a_clear_error_not_a_traceback(label_studio, trained_weights, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    res = subprocess.run(
        ingest_cmd(label_studio, folder, trained_weights, tmp_path / "s.sqlite3", "--project-title", "ab"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = res.stderr + res.stdout
    assert res.returncode == 2, said[-2000:]
    assert "refused to create project 'ab': title: Ensure this field has at least 3 characters" in said
    assert "Traceback" not in said


def test_the_start_of_a_rerun_reads_the_hashes_and_the_labels_of_the_projects_tasks(
    label_studio, sample_data, tmp_path
):
    """What a re-run of ingest reads back (``known_hashes``): every task's ``al_hash`` and which tasks are labeled.
    It lists tasks without their annotations (8x faster) and reads Label Studio's ``total_annotations``: this test
    is why that counter is trusted. A skip is not a label, a deleted label is gone, a label beside a skip counts."""
    from detector_al.label_studio.annotations import is_labeled
    from detector_al.label_studio.client import LabelStudioClient
    from detector_al.label_studio.task_sink import LabelStudioSink

    client = LabelStudioClient(label_studio.url, label_studio.token)
    project = client.ls.projects.create(
        title="rerun reads", label_config=(sample_data / "label_config.xml").read_text()
    )
    sink = LabelStudioSink(client, project.id, None, tmp_path)
    region = {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {"x": 1, "y": 1, "width": 5, "height": 5, "rotation": 0, "rectanglelabels": ["circle"]},
    }
    payloads = [
        {
            "data": {"image": f"https://example.org/{i}.jpg", "al_hash": f"{i:064x}"},
            "predictions": [{"result": [dict(region, id=f"p{i}")], "score": 0.5, "model_version": "v"}],
        }
        for i in range(5)
    ]
    ids = sink.create(payloads)
    client.ls.annotations.create(id=ids[1], result=[dict(region, id="a1")])
    client.ls.annotations.create(id=ids[2], result=[], was_cancelled=True)  # skipped
    deleted = client.ls.annotations.create(id=ids[3], result=[dict(region, id="a3")])
    client.ls.annotations.delete(id=deleted.id)
    client.ls.annotations.create(id=ids[4], result=[dict(region, id="a4")])
    client.ls.annotations.create(id=ids[4], result=[], was_cancelled=True)  # a label, then a skip by another
    known = sink.known_hashes()
    assert known == {f"{i:064x}": t for i, t in enumerate(ids)}
    assert sink.labeled == {ids[1], ids[4]}
    whole = client.ls.tasks.list(project=project.id, fields="all")  # the one rule, on the whole tasks
    assert sink.labeled == {t.id for t in whole if is_labeled(t)}


def test_the_queue_finds_its_tasks_predictions_by_id_page_by_page(label_studio, sample_data, monkeypatch):
    """``publish_queue`` looks a few changed tasks' predictions up by their ids, a page of ids a request: the same
    predictions as one lookup per task, whatever the page size."""
    from detector_al.label_studio import publish
    from detector_al.label_studio.client import LabelStudioClient

    ls = LabelStudioClient(label_studio.url, label_studio.token).ls
    project = ls.projects.create(title="lookup pages", label_config=(sample_data / "label_config.xml").read_text())
    tasks = [
        {
            "data": {"image": f"https://example.org/{i}.jpg"},
            "predictions": [{"result": [], "score": 0.1 * i, "model_version": v} for v in ("v1", "v2")[: 1 + i % 2]],
        }
        for i in range(7)
    ]
    ids = ls.projects.import_tasks(id=project.id, request=tasks, return_task_ids=True).task_ids
    wanted = ids[1:6]
    one_by_one = sorted(p.id for t in wanted for p in ls.predictions.list(task=t))
    assert len(one_by_one) == 8  # tasks 1, 3 and 5 hold two versions, 2 and 4 one
    for page in (2, 100):
        monkeypatch.setattr(publish, "LOOKUP_PAGE", page)
        found = publish.predictions_of_tasks(ls, project.id, wanted)
        assert sorted(p.id for p in found) == one_by_one
        assert {int(p.task) for p in found} == set(wanted)
