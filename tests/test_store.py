"""The SQLite state: coalescing, crash recovery of training jobs, queue ranks, ingest rows."""

from __future__ import annotations

import threading
import time

from detector_al.serving.worker import TrainingWorker
from detector_al.state.store import ImageRow, PredictionRow, Store


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


def test_ranks_follow_the_label_studio_score_batch_first_accepted_last(tmp_path):
    s = Store(tmp_path / "s.sqlite3")
    rows = [
        PredictionRow(1, "a", "v", 0.2, 0.3, "rest", 0, 1),
        PredictionRow(2, "b", "v", 0.9, 0.05, "query", 0, 1),
        PredictionRow(3, "c", "v", 0.01, 0.9, "auto_accept", 0, 1),
        PredictionRow(4, "d", "v", None, None, "error", 0, 0, "bad"),
    ]
    s.record_predictions(5, rows)
    ranks = {r["task_id"]: r["rank"] for r in s.predictions(5)}
    assert ranks == {2: 1, 1: 2, 3: 3, 4: None}


def test_image_rows_round_trip_and_hashes(tmp_path):
    s = Store(tmp_path / "s.sqlite3")
    s.record_images(3, [ImageRow("h1", "/a.jpg", task_id=11, score=0.5), ImageRow("h2", "/b.jpg", error="bad")])
    assert s.image_hashes(3) == {"h1": 11, "h2": None}
    s.set_image_queue(3, [("h1", "query", 1.5)])
    (row,) = s.images(3, "decision = 'query'")
    assert row.priority == 1.5 and row.path == "/a.jpg"


def test_a_rescoring_updates_the_ingested_rows_of_its_tasks(tmp_path):
    """One store per MODEL_DIR: after retraining, ingest's rows follow the new model (a re-run agrees)."""
    s = Store(tmp_path / "s.sqlite3")
    s.record_images(4, [ImageRow("h1", "/a.jpg", task_id=11, score=0.5, decision="query", priority=0.95, round=0)])
    s.set_image_queue_by_task(
        4, [(11, 0.01, 0.9, "auto_accept", 0.2, 1, "v1-abc"), (99, 0.3, 0.5, "rest", 0.7, 1, "v1")]
    )
    (row,) = s.images(4)
    assert (row.score, row.decision, row.priority, row.round, row.model_version) == (
        0.01,
        "auto_accept",
        0.2,
        1,
        "v1-abc",
    )
