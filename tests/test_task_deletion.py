"""Tasks deleted in Label Studio leave the store: by the TASKS_DELETED webhook, or when a queue refresh finds them
gone (a webhook missed); a refresh never retries them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
from fastapi.testclient import TestClient

from detector_al.label_studio.project_queue import refresh_queue
from detector_al.queue.build import QUERY, REST
from detector_al.state.store import PoolRow, Store
from ml_backend.main import create_app
from ml_backend.settings import Settings


def _prediction(task: int, u: float) -> PoolRow:
    emb = np.random.default_rng(task).normal(size=8).astype(np.float32).tobytes()
    return PoolRow(
        task_id=task,
        path=f"/{task}.jpg",
        model_version="v",
        score=u,
        confidence=0.3,
        decision=REST,
        n_boxes=1,
        embedding=emb,
        max_confidence=0.9,
    )


def _stored(tmp_path, tasks=range(1, 7)) -> Store:
    store = Store(tmp_path / "s.sqlite3")
    store.record_ingested(1, [PoolRow(f"h{t}", t, f"/{t}.jpg", url=f"/data/upload/1/{t}.jpg") for t in tasks])
    store.record_predictions(1, [_prediction(t, 1.0 / t) for t in tasks])  # ingest's tasks, predicted since
    store.record_predictions(2, [_prediction(3, 0.5)])  # another project's task 3 (another Label Studio)
    return store


def test_forgotten_tasks_leave_the_pool_and_their_labels(tmp_path):
    store = _stored(tmp_path)
    store.record_event("ANNOTATION_CREATED", 1, 2, 10)
    assert store.labeled_tasks(1) == {2}
    assert store.forget_tasks(1, [2, 3]) == 2  # their pool rows
    assert {r["task_id"] for r in store.predictions(1)} == {1, 4, 5, 6}
    assert set(store.image_hashes(1)) == {"h1", "h4", "h5", "h6"}  # a re-ingest makes h2 and h3 again
    assert store.labeled_tasks(1) == set()
    assert [r["task_id"] for r in store.predictions(2)] == [3]  # only the named project


def test_the_tasks_deleted_webhook_forgets_the_tasks(tmp_path, trained_weights):
    s = Settings(model_dir=tmp_path / "models", model_path=str(trained_weights))
    with TestClient(create_app(s)) as client:
        store = client.app.state.backend.store
        store.record_predictions(4, [_prediction(t, 0.5) for t in (1, 2, 3)])
        body = {"action": "TASKS_DELETED", "project": {"id": 4}, "tasks": [{"id": 1}, {"id": 3}]}
        r = client.post("/webhook", json=body)
        assert r.status_code == 200, r.text
        assert [row["task_id"] for row in store.predictions(4)] == [2]
        bad = client.post("/webhook", json={"action": "TASKS_DELETED", "tasks": [{"id": -1}]})
        assert bad.status_code == 422 and "tasks.0.id" in bad.json()["detail"]


class _LabelStudioWithoutTask:
    """Label Studio where task ``gone`` was deleted (its webhook missed); every other task has a prediction of ``v``."""

    def __init__(self, gone: int) -> None:
        self.gone, self.scores, self.fields = gone, {}, {}
        self.predictions = SimpleNamespace(list=self._predictions, update=self._update)
        self.tasks = SimpleNamespace(list=self._tasks, update=lambda id, data: self.fields.__setitem__(id, data))

    def _predictions(self, task=None, project=None):
        return [SimpleNamespace(id=task, task=task, model_version="v")]

    def _tasks(self, project, fields, query, page_size):
        ids = [t for t in json.loads(query)["selectedItems"]["included"] if t != self.gone]
        items = [SimpleNamespace(id=t, predictions=self._predictions(task=t), data={}) for t in ids]
        return SimpleNamespace(items=items)

    def _update(self, id, score):
        self.scores[id] = score


def test_a_refresh_forgets_a_task_found_deleted_and_gives_its_slot_away(tmp_path):
    store = _stored(tmp_path)
    ls = _LabelStudioWithoutTask(gone=1)  # task 1 is the most uncertain: the batch's first
    pending = refresh_queue(store, ls, 1, "v", 2, lambda u: 1 / (1 + u)).pending
    assert pending == 0  # nothing left to retry
    assert 1 not in {r["task_id"] for r in store.predictions(1)}
    queued = {r["task_id"] for r in store.predictions(1) if r["decision"] == QUERY}
    assert len(queued) == 2 and set(ls.scores) >= queued  # a whole batch, written
    assert {t for t, data in ls.fields.items() if data["al_status"] == QUERY} == queued  # ingest's fields follow
    assert refresh_queue(store, ls, 1, "v", 2, lambda u: 1 / (1 + u))[:2] == (0, 0)
