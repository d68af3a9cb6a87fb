"""The switch from TypiClust (cold model) to uncertainty (warm model), through build_queue, on every path."""

from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest

from detector_al.label_studio.project_queue import refresh_queue
from detector_al.model.predictions import Detections
from detector_al.pipelines.ingest import plan_queue
from detector_al.policy.decision import Decision
from detector_al.queue.build import AUTO_ACCEPT, QUERY, REST, build_queue, cold_start_batch, pool_max_confidence
from detector_al.queue.ranking import assign_queue
from detector_al.state.store import PoolRow, Store

BUDGET = 3


def pool(n_per_cluster: int = 10, seed: int = 0):
    """Three well separated clusters; the most uncertain images all in the first one; every 7th auto-accepted."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 8, dtype=np.float32) * 10.0
    emb = np.concatenate([rng.normal(c, 0.3, (n_per_cluster, 8)).astype(np.float32) for c in centres])
    n = len(emb)
    u = np.where(np.arange(n) < n_per_cluster, 1.0, 0.1) + rng.uniform(0, 0.05, n)
    accepted = np.arange(n) % 7 == 6
    return u, accepted, emb


def batch_of(queue) -> list[int]:
    return [i for _, i in sorted((e.position, i) for i, e in enumerate(queue) if e.status == QUERY)]


def test_a_cold_pool_gets_the_typiclust_batch_in_its_order():
    u, accepted, emb = pool()
    cold = np.full(len(u), 0.3)
    labeled = emb[:2] + 0.01  # the first cluster is labeled already
    queue = build_queue(u, accepted, emb, BUDGET, max_confidence=cold, labeled_embeddings=labeled)
    expected = cold_start_batch(cold, accepted, emb, BUDGET, labeled).tolist()
    assert batch_of(queue) == expected
    assert batch_of(queue) != batch_of(build_queue(u, accepted, emb, BUDGET))  # not the uncertainty batch
    assert not any(accepted[i] for i in expected)
    assert [queue[i].status for i in np.flatnonzero(accepted)] == [AUTO_ACCEPT] * int(accepted.sum())


def test_a_warm_pool_gets_the_uncertainty_batch():
    u, accepted, emb = pool()
    warm = np.full(len(u), 0.9)
    assert build_queue(u, accepted, emb, BUDGET, max_confidence=warm) == build_queue(u, accepted, emb, BUDGET)


def test_a_pre_chosen_batch_wins():
    u, accepted, emb = pool()
    q = build_queue(u, accepted, emb, BUDGET, batch=np.array([4, 2]), max_confidence=np.zeros(len(u)))
    assert batch_of(q) == [4, 2]


def test_stored_max_confidence_needs_every_row():
    assert pool_max_confidence([0.2, 0.9]).tolist() == pytest.approx([0.2, 0.9])
    assert pool_max_confidence([0.2, None]) is None  # a row of an older version: choose by uncertainty


def test_decision_max_confidence_is_the_top_shown_box():
    shown = Detections(np.zeros((2, 4)), np.array([0.3, 0.7]), np.array([0, 1]))
    assert Decision("a", REST, shown=shown).max_confidence == pytest.approx(0.7)
    assert Decision("a", REST).max_confidence == 0.0


def test_an_old_file_without_max_confidence_migrates_with_it_unknown(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as c:  # the tables as an older version wrote them
        c.execute(
            "CREATE TABLE predictions (project INTEGER NOT NULL, task_id INTEGER NOT NULL, image TEXT,"
            " model_version TEXT, score REAL, confidence REAL, decision TEXT, rank INTEGER, round INTEGER,"
            " n_boxes INTEGER, error TEXT, embedding BLOB, updated_at REAL, PRIMARY KEY (project, task_id))"
        )
        c.execute(
            "CREATE TABLE images (content_hash TEXT NOT NULL, project INTEGER NOT NULL, path TEXT NOT NULL, url TEXT,"
            " task_id INTEGER, width INTEGER, height INTEGER, score REAL, confidence REAL, decision TEXT,"
            " priority REAL, round INTEGER, model_version TEXT, regions TEXT, pseudo_labels TEXT, embedding BLOB,"
            " error TEXT, updated_at REAL, PRIMARY KEY (content_hash, project))"
        )
        c.execute(
            "INSERT INTO predictions VALUES (1, 5, 'a', 'v', 0.3, 0.2, 'rest', NULL, 0, 1, NULL, ?, 0)", (b"\0" * 8,)
        )
        c.execute("INSERT INTO images (content_hash, project, path, score) VALUES ('h', 1, '/a.jpg', 0.3)")
    store = Store(path)
    (row,) = store.iter_queue(1, "v")
    assert row["max_confidence"] is None  # written before the column: unknown
    (image,) = store.pool_rows(1, "key = 'h'")
    assert image.max_confidence is None
    store.record_predictions(
        1,
        [
            PoolRow(
                task_id=5,
                path="a",
                model_version="v",
                score=0.3,
                confidence=0.2,
                embedding=b"\0" * 8,
                max_confidence=0.8,
            )
        ],
    )
    assert next(store.iter_queue(1, "v"))["max_confidence"] == pytest.approx(0.8)
    store.record_ingested(1, [PoolRow("h", path="/a.jpg", score=0.3, max_confidence=0.8)])
    assert store.pool_rows(1, "key = 'h'")[0].max_confidence == pytest.approx(0.8)


def _image_rows(u, emb, max_conf, accepted):
    return [
        PoolRow(
            f"h{i}",
            100 + i,
            f"/{i}.jpg",
            score=float(u[i]),
            decision=AUTO_ACCEPT if accepted[i] else REST,
            embedding=emb[i].tobytes(),
            max_confidence=None if max_conf is None else float(max_conf[i]),
        )
        for i in range(len(u))
    ]


def _expected_cold_batch(planned, labeled_emb):
    """The TypiClust batch over plan_queue's rows (in its row order), as task ids."""
    rows = [row for row, _ in planned]
    emb = np.stack([np.frombuffer(r.embedding, np.float32) for r in rows])
    accepted = np.array([r.decision == AUTO_ACCEPT for r in rows])
    picked = cold_start_batch(np.array([r.max_confidence for r in rows]), accepted, emb, BUDGET, labeled_emb)
    return [rows[i].task_id for i in picked]


def test_ingest_plans_a_cold_batch_when_the_stored_rows_are_cold(tmp_path):
    u, accepted, emb = pool()
    store = Store(tmp_path / "s.sqlite3")
    store.record_ingested(1, _image_rows(u, emb, np.full(len(u), 0.2), accepted))
    planned = plan_queue(store, 1, BUDGET, lambda x: 1 / (1 + x), labeled={100, 101}, cold_start=True)
    assert {row.task_id for row, _ in planned}.isdisjoint({100, 101})
    batch = [row.task_id for row, e in sorted(planned, key=lambda x: x[1].position) if e.status == QUERY]
    assert batch == _expected_cold_batch(planned, emb[:2])  # the labeled images' clusters are covered
    off = plan_queue(store, 1, BUDGET, lambda x: 1 / (1 + x), labeled={100, 101})
    assert [e for _, e in off] != [e for _, e in planned]  # off (the default): the uncertainty batch


def test_ingest_keeps_the_uncertainty_batch_for_a_warm_pool_or_rows_without_max_confidence(tmp_path):
    u, accepted, emb = pool()
    for i, max_conf in enumerate((np.full(len(u), 0.9), None)):
        store = Store(tmp_path / f"s{i}.sqlite3")
        store.record_ingested(1, _image_rows(u, emb, max_conf, accepted))
        on = plan_queue(store, 1, BUDGET, lambda x: 1 / (1 + x), cold_start=True)
        assert [e for _, e in on] == [e for _, e in plan_queue(store, 1, BUDGET, lambda x: 1 / (1 + x))]


class _FakeLabelStudio:
    """What refresh_queue writes to: every task has one prediction of version ``v`` (its id = the task id)."""

    def __init__(self) -> None:
        self.scores: dict[int, float] = {}
        self.predictions = SimpleNamespace(list=self._list, update=self._update)
        self.tasks = SimpleNamespace(update=lambda id, data: None, list=self._tasks)

    def _list(self, task=None, project=None):
        return [SimpleNamespace(id=task, task=task, model_version="v")]

    def _tasks(self, project, fields, query, page_size):  # Data Manager's list of the selected tasks: one page
        ids = json.loads(query)["selectedItems"]["included"]
        return SimpleNamespace(items=[SimpleNamespace(id=t, predictions=self._list(task=t)) for t in ids])

    def _update(self, id, score):
        self.scores[id] = score


def test_the_backends_refresh_picks_a_cold_batch_away_from_labeled_tasks(tmp_path):
    u, accepted, emb = pool()
    store = Store(tmp_path / "s.sqlite3")
    rows = [
        PoolRow(
            task_id=i,
            path=f"/{i}.jpg",
            model_version="v",
            score=float(u[i]),
            confidence=0.3,
            decision=AUTO_ACCEPT if accepted[i] else REST,
            n_boxes=1,
            embedding=emb[i].tobytes(),
            max_confidence=0.2,
        )
        for i in range(len(u))
    ]
    store.record_predictions(1, rows)
    store.record_event("ANNOTATION_CREATED", 1, 0, 1)  # task 0 is labeled: it leaves the queue, covers its cluster
    assert len(store.labeled_embeddings(1)) == 1
    refresh_queue(store, _FakeLabelStudio(), 1, "v", BUDGET, lambda x: 1 / (1 + x), cold_start=True)
    queued = [r["task_id"] for r in store.predictions(1) if r["decision"] == QUERY]
    pending = np.arange(1, len(u))
    picked = cold_start_batch(np.full(len(pending), 0.2), accepted[pending], emb[pending], BUDGET, emb[:1])
    assert queued == [int(pending[i]) for i in picked]  # predictions() lists in queue order


def test_score_ranks_a_cold_pool_with_typiclust():
    u, accepted, emb = pool()
    weak = Detections(np.zeros((1, 4)), np.array([0.3]), np.array([0]))
    images = [
        Decision(f"{i}", AUTO_ACCEPT if accepted[i] else REST, score=float(u[i]), shown=weak, embedding=emb[i])
        for i in range(len(u))
    ]
    entries = assign_queue(images, BUDGET, cold_start=True, labeled_class_counts=np.ones(3))
    ranked = sorted(zip(entries, images, strict=True), key=lambda x: x[0].position)
    batch = [int(d.source) for e, d in ranked if e.status == QUERY]
    assert batch == cold_start_batch(np.full(len(u), 0.3), accepted, emb, BUDGET).tolist()


def test_one_switch_turns_it_off_in_the_backend_and_the_cli(monkeypatch):
    from typer.testing import CliRunner

    from detector_al.cli.app import app
    from detector_al.pipelines.ingest import IngestConfig
    from detector_al.pipelines.retrain import RetrainConfig
    from detector_al.policy.settings import COLD_START
    from ml_backend.settings import Settings

    assert Settings().queue_cold_start is IngestConfig().policy.cold_start is RetrainConfig().cold_start is COLD_START
    monkeypatch.setenv("QUEUE_COLD_START", "false")
    assert Settings().queue_cold_start is False
    monkeypatch.setenv("COLUMNS", "200")
    for command in ("score", "ingest"):
        res = CliRunner().invoke(app, [command, "--help"])
        assert res.exit_code == 0 and "--no-cold-start" in res.output, command
