"""The README's first command, headless: the demo sets everything up, a batch of labels later the backend has
retrained by itself and refreshed the queue with a new model version, "Start Training" promotes another, and Ctrl-C
stops both servers."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from label_studio_sdk import LabelStudio

from detector_al.label_studio.local_server import free_port
from detector_al.policy.settings import QUEUE_BATCH
from detector_al.state.store import FINISHED
from tests.integration.conftest import REPO
from tests.integration.test_retraining_label_studio import oracle_regions, pick_labels

pytestmark = pytest.mark.slow


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_demo_end_to_end(trained_weights, sample_data, tmp_path):
    ls_port, be_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "detector_al",
        "demo",
        "--model",
        str(trained_weights),
        "--ls-port",
        str(ls_port),
        "--backend-port",
        str(be_port),
        "--data-dir",
        str(tmp_path / "demo"),
        "--train-epochs",
        "3",
        # a 3-epoch fine-tune on 5 labels is often (rightly) not promoted; the promotion rule has its own tests
        # (test_retraining.py), this one checks that a promoted model reaches the queue
        "--train-tolerance",
        "1.0",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines[-50:])
            lines.append(line)
            if line.startswith("READY"):
                break
        ready = dict(kv.split("=", 1) for kv in lines[-1].split()[1:])
        project_id = int(ready["project"])
        assert ready["token"].startswith("eyJ")  # a personal access token, as a stock Label Studio gives
        ls = LabelStudio(base_url=ready["ls"], api_key=ready["token"])
        backend = ready["backend"]

        # the project, the backend connection, the tasks with predictions and the queue tab exist
        assert ls.projects.get(id=project_id).title == "detector-al demo"
        ml = list(ls.ml.list(project=project_id))
        assert [m.url.rstrip("/") for m in ml] == [backend]
        v0 = requests.get(f"{backend}/health", timeout=5).json()["model_version"]
        tasks = list(ls.tasks.list(project=project_id, fields="all"))
        assert len(tasks) == 240 and all(len(t.predictions) == 1 for t in tasks)
        assert ls.projects.get(id=project_id).model_version == v0
        views = {v.data["title"]: v.id for v in ls.views.list(project=project_id)}
        queue = list(ls.tasks.list(project=project_id, view=views["Active learning queue"], fields="all"))
        assert queue[0].data["al_status"] == "query"
        before = {t.id: t.data["al_priority"] for t in queue}

        def finished(reason: str) -> list[dict]:
            jobs = requests.get(f"{backend}/status", timeout=5).json()["jobs"]
            return [j for j in jobs if j["reason"].startswith(reason) and j["status"] in FINISHED]

        def wait_finished(reason: str) -> dict:
            deadline = time.time() + 600
            while time.time() < deadline and not finished(reason):
                time.sleep(2)
            jobs = finished(reason)
            assert jobs, requests.get(f"{backend}/status", timeout=5).json()["jobs"]
            return jobs[0]

        # a batch of labels from the head of the queue (3 of them from the validation split, which judges a
        # candidate): TRAIN_EVERY unset follows QUEUE_BUDGET (the demo's --budget, by default the batch), so the
        # backend retrains by itself
        chosen = pick_labels(queue, max(QUEUE_BATCH, 5))
        for t in chosen:
            ls.annotations.create(id=t.id, result=oracle_regions(sample_data, t.data["image"].split("/")[-1]))
        job = wait_finished(f"{len(chosen)} new or updated annotations")
        assert job["status"] == "done", job
        v1 = requests.get(f"{backend}/health", timeout=5).json()["model_version"]
        assert v1 != v0 and ls.projects.get(id=project_id).model_version == v1

        # the queue is refreshed: new predictions and priorities on the unlabeled tasks
        labeled = {t.id for t in chosen}
        after = list(ls.tasks.list(project=project_id, view=views["Active learning queue"], fields="all"))
        unlabeled = [t for t in after if t.id not in labeled]
        assert all([p.model_version for p in t.predictions] == [v1] for t in unlabeled)
        changed = sum(before.get(t.id) != t.data["al_priority"] for t in unlabeled)
        assert changed > len(unlabeled) // 2
        prio = [t.data["al_priority"] for t in after]
        assert prio == sorted(prio, reverse=True)

        # "Start Training" retrains too, and its model reaches Label Studio
        ls.ml.train(id=ml[0].id)
        job = wait_finished("START_TRAINING")
        assert job["status"] == "done", job
        v2 = requests.get(f"{backend}/health", timeout=5).json()["model_version"]
        assert v2 not in (v0, v1) and ls.projects.get(id=project_id).model_version == v2
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0, "".join(lines[-30:])
    assert not port_open(ls_port) and not port_open(be_port)
