"""The SQLite state: coalescing, crash recovery of training jobs, queue ranks, pool rows."""

from __future__ import annotations

import threading
import time

import pytest

from detector_al.serving.worker import TrainingWorker
from detector_al.state.store import PoolRow, Store


def test_training_requests_coalesce_while_one_is_queued(tmp_path):
    s = Store(tmp_path / "s.sqlite3")
    assert s.enqueue_training(1, "a") == (1, True)
    assert s.enqueue_training(1, "b") == (1, False)
    assert s.enqueue_training(2, "c") == (2, True)  # another project gets its own job
    assert s.claim_training()["id"] == 1
    assert s.enqueue_training(1, "d") == (3, True)  # job 1 is running: a follow-up is queued


def test_a_job_running_when_the_process_died_is_requeued_and_run(tmp_path):
    path = tmp_path / "s.sqlite3"
    crashed = Store(path)
    crashed.enqueue_training(7, "START_TRAINING")
    assert crashed.claim_training()["status"] == "running"
    del crashed  # the process dies mid-training: nothing marks the job

    ran = threading.Event()
    store = Store(path)
    worker = TrainingWorker(store, lambda job, report: ran.set() or {"model_version": "v9"}, poll_s=0.05)
    worker.start()
    try:
        assert ran.wait(5)
        deadline = time.time() + 5
        while store.training_jobs()[0]["status"] != "done" and time.time() < deadline:
            time.sleep(0.02)
        job = store.training_jobs()[0]
        assert (job["id"], job["status"], job["model_version"]) == (1, "done", "v9")  # the same job, run to the end
    finally:
        worker.stop()


def _prediction(task, score, confidence, decision, error=None):
    return PoolRow(
        task_id=task,
        path="x",
        model_version="v",
        score=score,
        confidence=confidence,
        decision=decision,
        n_boxes=1,
        error=error,
    )


def test_ranks_follow_the_label_studio_score_batch_first_accepted_last(tmp_path):
    s = Store(tmp_path / "s.sqlite3")
    rows = [
        _prediction(1, 0.2, 0.3, "rest"),
        _prediction(2, 0.9, 0.05, "query"),
        _prediction(3, 0.01, 0.9, "auto_accept"),
        _prediction(4, None, None, "error", "bad"),
    ]
    s.record_predictions(5, rows)
    ranks = {r["task_id"]: r["rank"] for r in s.predictions(5)}
    assert ranks == {2: 1, 1: 2, 3: 3, 4: None}


def test_pool_rows_round_trip_and_hashes(tmp_path):
    s = Store(tmp_path / "s.sqlite3")
    s.record_ingested(3, [PoolRow("h1", 11, "/a.jpg", score=0.5), PoolRow("h2", path="/b.jpg", error="bad")])
    s.record_predictions(3, [_prediction(12, 0.4, 0.5, "rest")])  # a task ingest did not make: a row of its own
    assert s.image_hashes(3) == {"h1": 11, "h2": None}
    s.set_queue(3, [("h1", "query", 0.25)])
    (row,) = s.pool_rows(3, "decision = 'query'")
    assert (row.confidence, row.priority, row.path, row.content_hash) == (0.25, 0.75, "/a.jpg", "h1")
    assert s.pool_rows(3, "task_id = 12")[0].key == "task:12"


def test_a_prediction_of_an_ingested_task_updates_its_row_and_keeps_its_file(tmp_path):
    """One store per MODEL_DIR: the backend's prediction (or a retraining's re-scoring) of a task ingest made is the same
    row, so a re-run of ingest agrees and every count sees the task once."""
    s = Store(tmp_path / "s.sqlite3")
    s.record_ingested(4, [PoolRow("h1", 11, "/a.jpg", url="/data/a.jpg", score=0.5, confidence=0.05, decision="query")])
    s.record_predictions(4, [_prediction(11, 0.01, 0.8, "auto_accept"), _prediction(99, 0.3, 0.5, "rest")])
    row = s.pool_rows(4, "task_id = 11")[0]
    assert (row.key, row.path, row.url) == ("h1", "/a.jpg", "/data/a.jpg")
    assert (row.score, row.confidence, row.decision, row.model_version) == (0.01, 0.8, "auto_accept", "v")
    assert s.count_pool(4) == 2 and s.image_hashes(4) == {"h1": 11}


def test_ingest_recording_a_task_the_backend_predicted_takes_its_row(tmp_path):
    """A run killed after creating its tasks: the backend predicts one, the next run records its file: one row."""
    s = Store(tmp_path / "s.sqlite3")
    s.record_predictions(4, [_prediction(11, 0.01, 0.8, "auto_accept")])
    s.record_ingested(4, [PoolRow("h1", 11, "/a.jpg", score=0.5, confidence=0.4)])
    (row,) = s.pool_rows(4)
    assert (row.key, row.task_id, row.score) == ("h1", 11, 0.5)


OLD_TABLES = """
CREATE TABLE predictions (project INTEGER NOT NULL, task_id INTEGER NOT NULL, image TEXT, model_version TEXT,
    score REAL, confidence REAL, decision TEXT, rank INTEGER, round INTEGER, n_boxes INTEGER, error TEXT,
    embedding BLOB, updated_at REAL, max_confidence REAL, PRIMARY KEY (project, task_id));
CREATE TABLE images (content_hash TEXT NOT NULL, project INTEGER NOT NULL, path TEXT NOT NULL, url TEXT,
    task_id INTEGER, width INTEGER, height INTEGER, score REAL, confidence REAL, decision TEXT, priority REAL,
    round INTEGER, model_version TEXT, regions TEXT, pseudo_labels TEXT, embedding BLOB, error TEXT, updated_at REAL,
    max_confidence REAL, PRIMARY KEY (content_hash, project));
CREATE INDEX images_by_score ON images (project, score);
"""


def test_an_old_file_s_images_and_predictions_become_one_pool_row_per_image(tmp_path):
    """A state file of the version before ``pool``: ingest's ``images`` and the backend's ``predictions`` name the same
    tasks. Opened by Store, each image is one row (the prediction's score and band, ingest's file), the old tables
    are gone, and the queue and the dashboard count each task once."""
    import sqlite3

    from detector_al.signals.dashboard import queue_counts

    emb = b"\0\0\x80?" * 2
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as c:
        c.executescript(OLD_TABLES)
        c.executemany(  # ingest: tasks 1-4 of project 1 and an unreadable file
            "INSERT INTO images (content_hash, project, path, url, task_id, width, height, score, confidence, decision,"
            " priority, round, model_version, regions, embedding, error, updated_at, max_confidence)"
            " VALUES (?, 1, ?, ?, ?, 64, 48, ?, 0.5, ?, ?, 0, 'v1', '[]', ?, ?, 10, 0.9)",
            [
                ("h1", "/pool/1.jpg", "/data/1.jpg", 1, 0.5, "query", 0.98, emb, None),
                ("h2", "/pool/2.jpg", "/data/2.jpg", 2, 0.2, "rest", 0.4, emb, None),
                ("h3", "/pool/3.jpg", "/data/3.jpg", 3, 0.1, "auto_accept", 0.3, emb, None),
                ("h4", "/pool/4.jpg", "/data/4.jpg", 4, 0.6, "rest", 0.45, emb, None),
                ("h5", "/pool/5.jpg", None, None, None, "error", None, None, "truncated"),
            ],
        )
        c.executemany(  # the backend: tasks 1 and 2 again (newer), task 6 only it saw, and project 2's task 1
            "INSERT INTO predictions VALUES (?, ?, ?, 'v1', ?, ?, ?, NULL, 0, 2, NULL, ?, 20, 0.8)",
            [
                (1, 1, "/cache/1.jpg", 0.7, 0.6, "rest", emb),
                (1, 2, "/cache/2.jpg", 0.9, 0.02, "query", emb),
                (1, 6, "/cache/6.jpg", 0.3, 0.55, "rest", emb),
                (2, 1, "/cache/other.jpg", 0.4, 0.5, "rest", emb),
            ],
        )
    store = Store(path)
    store.record_event("ANNOTATION_CREATED", 1, 4, 40)  # task 4 labeled since
    rows = {r.key: r for r in store.pool_rows(1)}
    assert set(rows) == {"h1", "h2", "h3", "h4", "h5", "task:6"}
    h1 = rows["h1"]
    assert (h1.task_id, h1.path, h1.url, h1.width, h1.height) == (1, "/pool/1.jpg", "/data/1.jpg", 64, 48)  # ingest's
    assert (h1.score, h1.confidence, h1.decision, h1.n_boxes, h1.max_confidence) == (0.7, 0.6, "rest", 2, 0.8)
    assert rows["h3"].confidence == pytest.approx(0.7) and rows["h3"].decision == "auto_accept"  # 1 - priority
    assert rows["task:6"].path == "/cache/6.jpg" and rows["h5"].error == "truncated"
    assert [r.task_id for r in store.pool_rows(2)] == [1]  # another project's task 1 stays its own
    with sqlite3.connect(path) as c:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"images", "predictions"}.isdisjoint(tables) and "pool" in tables
    assert [r["task_id"] for r in store.iter_queue(1, "v1")] == [1, 2, 3, 6]  # each task once, 4 labeled
    counts = queue_counts(store, 1, "v1")
    assert (counts["batch"], counts["queued"], counts["auto_accepted"], counts["failed"]) == (1, 3, 1, 1)
    assert counts["labeled"] == 1 and len(counts["scores"]) == 4
    assert [r.key for r in Store(path).pool_rows(1)] == sorted(rows)  # opened again: nothing moves twice
