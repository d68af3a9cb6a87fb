"""Annotator time against a real Label Studio: annotations created through its API with known ``lead_time`` reach the
backend's /status (through the webhook, and through retraining's listing for those the webhook never saw)."""

from __future__ import annotations

import shutil

import pytest
import requests

from detector_al.state.annotation_times import AnnotationTimes
from detector_al.state.store import Store
from tests.integration.conftest import BackendServer, connect_backend, sync_local_storage, wait_for
from tests.integration.test_retraining_label_studio import oracle_regions, wait_job

pytestmark = pytest.mark.slow


def annotator_time(server: BackendServer, project: int) -> dict | None:
    status = requests.get(f"{server.url}/status", timeout=10).json()
    return status["annotator_time"]["projects"].get(str(project))


def local_project(ls_client, sample_data, folder, title: str):
    p = ls_client.projects.create(title=title, label_config=(sample_data / "label_config.xml").read_text())
    sync_local_storage(ls_client, p.id, folder)
    return p


def test_annotations_with_known_lead_time_reach_status_with_their_median(ls_client, sample_data, pool_folder, backend):
    p = local_project(ls_client, sample_data, pool_folder, "annotator time")
    connect_backend(ls_client, p.id, backend.url)
    ls_client.actions.create(
        id="retrieve_tasks_predictions", project=p.id, selected_items={"all": True, "excluded": []}
    )
    version = backend.health()["model_version"]
    tasks = list(ls_client.tasks.list(project=p.id, fields="all"))
    assert all(t.predictions for t in tasks), "every task needs the backend's prediction"
    shown = {}
    for t, lead_time in zip(tasks, (10, 20, 30, 40, 50), strict=False):  # the check: five, 10 s to 50 s
        (pred,) = [pr for pr in t.predictions if pr.model_version == version]
        ls_client.annotations.create(id=t.id, result=pred.result, lead_time=lead_time)  # kept as shown
        shown[t.id] = len(pred.result)
    ls_client.annotations.create(id=tasks[5].id, result=[], was_cancelled=True, lead_time=100)  # a skip: time spent
    ls_client.annotations.create(id=tasks[6].id, result=[])  # no lead_time, as an imported annotation: not counted

    def settled():  # the webhooks' records, completed from Label Studio's predictions after the answer
        t = annotator_time(backend, p.id)
        return t if t and t["annotations"] == 5 and version in t["by_model_version"] else None

    t = wait_for(settled, 30)
    assert t, annotator_time(backend, p.id)
    assert (t["annotations"], t["median_s"], t["mean_s"]) == (5, 30, 30)
    assert (t["skipped"], t["without_lead_time"]) == (1, 1)
    assert t["spent_h"] == pytest.approx((150 + 100) / 3600, abs=1e-3)
    assert t["by_model_version"][version]["annotations"] == 5 and t["by_model_version"][version]["median_s"] == 30
    assert sum(b["annotations"] for b in t["by_band"].values()) == 5
    assert set(t["by_band"]) <= {"batch", "uncertain", "auto_accepted"}
    records = {r.task_id: r for r in AnnotationTimes(Store(backend.model_dir / "detector_al.sqlite3")).records(p.id)}
    for task_id, n in shown.items():  # submitted as shown: every box kept, none drawn
        r = records[task_id]
        assert (r.shown, r.edit.verify, r.edit.draw, r.edit.delete) == (n, n, 0, 0), r
    assert t["per_box"]["kept_images"] == sum(n > 0 for n in shown.values())
    assert t["projection"]["tasks"] == len(tasks) - 6 and t["projection"]["hours"] is not None


def test_retrainings_listing_records_the_annotations_the_webhook_never_saw(
    ls_client, label_studio, sample_data, trained_weights, tmp_path
):
    folder = label_studio.files_root / "missed-src"
    folder.mkdir()
    for path in sorted((sample_data / "images" / "pool").glob("*.jpg"))[100:104]:
        shutil.copy(path, folder / path.name)
    p = local_project(ls_client, sample_data, folder, "annotations before the backend")
    tasks = list(ls_client.tasks.list(project=p.id, fields="all"))
    assert len(tasks) == 4, tasks
    truth = oracle_regions(sample_data, tasks[0].data["image"].split("/")[-1])
    ls_client.annotations.create(id=tasks[0].id, result=truth, lead_time=42)  # no backend yet: no webhook
    ls_client.annotations.create(id=tasks[1].id, result=[], was_cancelled=True, lead_time=8)
    server = BackendServer(
        trained_weights,
        label_studio.files_root,
        tmp_path / "models",
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
    ).start()
    try:
        ml = connect_backend(ls_client, p.id, server.url)
        assert not (annotator_time(server, p.id) or {}).get("annotations")
        ls_client.ml.train(id=ml.id)  # one label is too few to train: the job ends waiting, after listing the tasks
        status = wait_job(server, 1, timeout=120)
        assert status["jobs"][0]["status"] == "waiting" and "label at least" in status["jobs"][0]["error"]
        t = annotator_time(server, p.id)
        assert (t["annotations"], t["median_s"], t["skipped"]) == (1, 42, 1)
        assert t["by_model_version"] == {"none": {"annotations": 1, "median_s": 42.0, "mean_s": 42.0, "outliers": 0}}
        (label,) = [
            r for r in AnnotationTimes(Store(server.model_dir / "detector_al.sqlite3")).records(p.id) if not r.skipped
        ]
        assert label.shown == 0 and label.edit.draw == len(truth) > 0  # drawn from scratch: no prediction then
    finally:
        server.stop()
