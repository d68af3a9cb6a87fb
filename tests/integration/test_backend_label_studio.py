"""The backend against a real Label Studio: connect, retrieve predictions, order the queue, receive webhooks."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from detector_al.label_studio.regions import xyxy_to_percent
from detector_al.model.detector import Detector
from tests.integration.conftest import connect_backend, sync_local_storage, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(ls_client, sample_data, pool_folder, backend):
    p = ls_client.projects.create(
        title="backend integration", label_config=(sample_data / "label_config.xml").read_text()
    )
    sync_local_storage(ls_client, p.id, pool_folder)
    connect_backend(ls_client, p.id, backend.url)
    ls_client.actions.create(
        id="retrieve_tasks_predictions", project=p.id, selected_items={"all": True, "excluded": []}
    )
    return p


def tasks_of(ls_client, project_id, **kw):
    return list(ls_client.tasks.list(project=project_id, fields="all", **kw))


def test_every_task_gets_the_adapters_boxes_and_the_projects_model_version(
    ls_client, project, backend, trained_weights, pool_folder
):
    version = backend.health()["model_version"]
    assert wait_for(lambda: ls_client.projects.get(id=project.id).model_version == version)
    tasks = tasks_of(ls_client, project.id)
    assert len(tasks) == 12
    det = Detector.load(trained_weights, conf=0.05)
    n_boxes = 0
    for t in tasks:
        preds = list(ls_client.predictions.list(task=t.id))
        assert len(preds) == 1 and preds[0].model_version == version
        name = t.data["image"].split("d=")[-1].split("/")[-1]
        (ref,) = det.predict([pool_folder / name])
        ref_boxes = ref.detections[ref.detections.confidence >= 0.25]
        got = sorted(
            (r["value"]["x"], r["value"]["y"], r["value"]["width"], r["value"]["height"]) for r in preds[0].result
        )
        want = sorted(xyxy_to_percent(b, ref.width, ref.height) for b in ref_boxes.xyxy)
        assert len(got) == len(want), name
        np.testing.assert_allclose(np.array(got).reshape(-1, 4), np.array(want).reshape(-1, 4), atol=0.05)
        n_boxes += len(got)
    assert n_boxes > 0


def test_data_manager_order_by_prediction_score_is_the_queue_order(ls_client, project, backend):
    """Sorting by "Prediction score" (and uncertainty sampling) gives the backend's queue: batch, rest, accepted."""
    from detector_al.queue.build import AUTO_ACCEPT, QUERY, REST
    from detector_al.state.store import Store

    version = backend.health()["model_version"]
    wait_for(lambda: ls_client.projects.get(id=project.id).model_version == version)
    view = ls_client.views.create(
        project=project.id, data={"title": "AL queue", "ordering": ["tasks:predictions_score"]}
    )
    store = Store(backend.model_dir / "detector_al.sqlite3")

    def orders():  # once the backend has re-built the queue over the pool (a batch exists), both orders agree
        rows = [r for r in store.predictions(project.id) if r["confidence"] is not None]
        if not any(r["decision"] == QUERY for r in rows):
            return False
        ls_order = [t.id for t in tasks_of(ls_client, project.id, view=view.id)]
        return ls_order == [r["task_id"] for r in rows] and ls_order

    assert wait_for(orders, timeout=90), "Label Studio's order by prediction score is not the backend's queue"
    status = requests.get(f"{backend.url}/status", timeout=5).json()
    assert status["model_version"] == version
    bands = [r["decision"] for r in store.predictions(project.id) if r["confidence"] is not None]
    rank = {QUERY: 0, REST: 1, AUTO_ACCEPT: 2}
    assert [rank[b] for b in bands] == sorted(rank[b] for b in bands)
    assert QUERY in bands  # the backend chose a diverse batch once the pool was predicted


def test_a_real_annotation_reaches_the_store_through_the_webhook(ls_client, project, backend):
    from detector_al.state.store import Store

    task = tasks_of(ls_client, project.id)[0]
    region = {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 256,
        "original_height": 192,
        "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0, "rectanglelabels": ["circle"]},
    }
    ann = ls_client.annotations.create(id=task.id, result=[region])
    store = Store(backend.model_dir / "detector_al.sqlite3")
    events = wait_for(lambda: [e for e in store.events(project.id) if e["action"] == "ANNOTATION_CREATED"])
    assert events and events[-1]["task_id"] == task.id and events[-1]["annotation_id"] == ann.id


def test_unfetchable_images_fail_only_their_task(ls_client, project, backend, sample_data, pool_folder):
    good = ls_client.tasks.create(
        project=project.id, data={"image": "/data/local-files/?d=pool/" + next(pool_folder.glob("*.jpg")).name}
    )
    missing = ls_client.tasks.create(project=project.id, data={"image": "/data/upload/999/no-such-file.jpg"})
    outside = ls_client.tasks.create(project=project.id, data={"image": "/data/local-files/?d=pool/absent.jpg"})
    ls_client.actions.create(
        id="retrieve_tasks_predictions",
        project=project.id,
        selected_items={"all": False, "included": [good.id, missing.id, outside.id]},
    )
    preds = {t: list(ls_client.predictions.list(task=t)) for t in (good.id, missing.id, outside.id)}
    assert len(preds[good.id]) == 1 and preds[good.id][0].score is not None
    for t in (missing.id, outside.id):
        assert all(p.result == [] for p in preds[t])
    from detector_al.state.store import Store

    rows = {r["task_id"]: r for r in Store(backend.model_dir / "detector_al.sqlite3").predictions(project.id)}
    assert rows[missing.id]["error"] and "cannot fetch" in rows[missing.id]["error"]
    assert rows[good.id]["error"] is None


def test_a_wrong_token_fails_only_the_tasks_that_need_label_studio(
    label_studio, trained_weights, sample_data, tmp_path, pool_folder
):
    from tests.integration.conftest import BackendServer

    server = BackendServer(
        trained_weights,
        pool_folder,  # holds the image of task 2, but not "pool/<name>" of task 1: that one needs Label Studio
        tmp_path / "models",
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY="wrong-token",
    ).start()
    try:
        img = next(pool_folder.glob("*.jpg"))
        body = {
            "tasks": [
                {"id": 1, "data": {"image": f"/data/local-files/?d=pool/{img.name}"}},
                {"id": 2, "data": {"image": str(img)}},
            ],
            "label_config": (sample_data / "label_config.xml").read_text(),
            "project": "900.1",
        }
        res = requests.post(f"{server.url}/predict", json=body, timeout=60).json()["results"]
        assert res[0]["result"] == [] and res[0]["score"] is None
        assert res[1]["score"] is not None
        assert "unauthorized" in server.log.read_text()
    finally:
        server.stop()
