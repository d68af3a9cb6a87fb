"""The loop closes: annotations in Label Studio -> "Start Training" -> a promoted model -> a refreshed queue."""

from __future__ import annotations

import json
import shutil

import pytest
import requests

from detector_al.demo.sample_data import oracle_regions
from detector_al.policy.ceal_calibration import calibrate_ceal
from detector_al.state.store import FINISHED, Store
from tests.integration.conftest import BackendServer, connect_backend, sync_local_storage, wait_for

pytestmark = pytest.mark.slow


def with_validation_tasks(ls, project: int, n_val: int = 3) -> list:
    """The project's tasks, made to hold at least ``n_val`` tasks of the validation split (``sha256(id) mod 5 == 0``):
    a candidate is judged only on those, so a training needs them. Tasks are added (copies of the first task's image)
    until enough task ids fall there; returns every task, listed with its predictions and annotations."""
    from detector_al.pipelines.retrain_dataset import in_validation

    tasks = list(ls.tasks.list(project=project, fields="all"))
    while sum(in_validation(t.id) for t in tasks) < n_val:
        ls.tasks.create(project=project, data=dict(tasks[0].data))
        tasks = list(ls.tasks.list(project=project, fields="all"))
    return tasks


def pick_labels(tasks: list, n: int, n_val: int = 3) -> list:
    """``n`` tasks to label, ``n_val`` of them from the validation split (in the order given)."""
    from detector_al.pipelines.retrain_dataset import in_validation

    val = [t for t in tasks if in_validation(t.id)][:n_val]
    return val + [t for t in tasks if not in_validation(t.id)][: n - len(val)]


def wait_job(server: BackendServer, done_jobs: int, timeout: float = 600) -> dict:
    """The backend's /status once ``done_jobs`` jobs have finished and none is queued or running."""

    def settled():
        status = requests.get(f"{server.url}/status", timeout=5).json()
        finished = [j for j in status["jobs"] if j["status"] in FINISHED]
        busy = any(j["status"] in ("queued", "running") for j in status["jobs"])
        return status if len(finished) >= done_jobs and not busy else None

    status = wait_for(settled, timeout=timeout, every=1)
    if status is None:
        raise TimeoutError(requests.get(f"{server.url}/status", timeout=5).json())
    return status


def test_start_training_promotes_a_new_version_and_refreshes_the_queue(
    ls_client, label_studio, sample_data, trained_weights, tmp_path_factory
):
    folder = label_studio.files_root / "retrain-src"
    folder.mkdir()
    for p in sorted((sample_data / "images" / "pool").glob("*.jpg"))[60:78]:
        shutil.copy(p, folder / p.name)
    server = BackendServer(
        trained_weights,
        label_studio.files_root,
        tmp_path_factory.mktemp("rt") / "models",
        LABEL_STUDIO_URL=label_studio.url,  # a stock install refuses /setup's (legacy) token: a PAT of its own
        LABEL_STUDIO_API_KEY=label_studio.token,
        TRAIN_EPOCHS=4,
        TRAIN_TOLERANCE=1.0,
        TRAIN_EVERY=0,  # "Start Training" only: its jobs are this test's (the backend's own cadence: test_demo)
    ).start()
    try:
        project = ls_client.projects.create(
            title="retraining", label_config=(sample_data / "label_config.xml").read_text()
        )
        sync_local_storage(ls_client, project.id, folder)
        ml = connect_backend(ls_client, project.id, server.url)
        ls_client.actions.create(
            id="retrieve_tasks_predictions", project=project.id, selected_items={"all": True, "excluded": []}
        )
        v0 = server.health()["model_version"]
        tasks = list(ls_client.tasks.list(project=project.id, fields="all"))
        assert len(tasks) == 18 and all(len(t.predictions) == 1 for t in tasks)
        tasks = with_validation_tasks(ls_client, project.id)  # a candidate is judged on 3 held-out labels at least
        if len(tasks) > 18:  # copies added: their predictions, as "Retrieve predictions" makes them
            ls_client.actions.create(
                id="retrieve_tasks_predictions", project=project.id, selected_items={"all": True, "excluded": []}
            )
        tasks = pick_labels(tasks, len(tasks))

        def annotate(task):
            ls_client.annotations.create(
                id=task.id, result=oracle_regions(sample_data, task.data["image"].split("/")[-1])
            )

        # too few labels to train on, for real: the job ends waiting, saying so, and the serving model stays
        annotate(tasks[0])
        ls_client.ml.train(id=ml.id)
        status = wait_job(server, 1)
        assert status["jobs"][0]["status"] == "waiting" and "label at least" in status["jobs"][0]["error"]
        assert server.health()["model_version"] == v0

        for t in tasks[1:8]:  # three of the eight labels are in the validation split
            annotate(t)
        ls_client.ml.train(id=ml.id)
        status = wait_job(server, 2)
        job = status["jobs"][0]
        assert job["status"] == "done", job
        v1 = server.health()["model_version"]
        assert v1 != v0 and v1 == job["model_version"] and v1 in status["versions"] and v0 in status["versions"]
        assert ls_client.projects.get(id=project.id).model_version == v1

        labeled = {t.id for t in tasks[:8]}
        for t in ls_client.tasks.list(project=project.id, fields="all"):
            versions = [p.model_version for p in t.predictions]
            if t.id not in labeled:
                assert versions == [v1], (t.id, versions)
            assert len(t.annotations) == (1 if t.id in labeled else 0)  # pseudo-labels never became annotations
        rows = [
            r
            for r in Store(server.model_dir / "detector_al.sqlite3").predictions(project.id)
            if r["task_id"] not in labeled
        ]
        assert rows and all(r["model_version"] == v1 and r["round"] == 1 for r in rows)
        ranks = sorted(
            r["rank"]
            for r in Store(server.model_dir / "detector_al.sqlite3").predictions(project.id)
            if r["rank"] is not None
        )
        assert ranks == list(range(1, len(ranks) + 1))
        meta = requests.get(f"{server.url}/status", timeout=5).json()["jobs"][0]
        assert meta["model_version"] == v1
        # CEAL's gate: both models judged on the 3 held-out labels, the verdict the one its evidence gives, and kept
        gates = json.loads(meta["detail"])["ceal"]
        assert (gates["serving"]["version"], gates["candidate"]["version"]) == (v0, v1)
        for gate in gates.values():
            assert gate["images"] == 3 and gate["right"] <= gate["boxes"] <= gate["confident_boxes"]
            counts = tuple(gate[k] for k in ("right", "boxes", "confident_right", "confident_boxes"))
            judged = calibrate_ceal({gate["min_confidence"]: counts}, 3, grid=(gate["min_confidence"],))
            assert gate["verdict"] == judged.verdict
        kept = json.loads((server.model_dir / "versions" / v1 / "meta.json").read_text())["ceal"]
        assert kept["verdict"] == gates["candidate"]["verdict"]
        served = requests.get(f"{server.url}/status", timeout=5).json()["ceal"]
        assert served["version"] == v1 and served["gate"]["verdict"] == gates["candidate"]["verdict"]
    finally:
        server.stop()
