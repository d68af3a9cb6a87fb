"""The tables of the backend's SQLite state file, the columns added since the first release, and the one row of a
project's pool (:class:`PoolRow`) :class:`~detector_al.state.store.Store` writes.

:func:`create_schema` makes a new file, and brings a file written by an older version up to date. Columns are only
ever added, with a default. One change was more: the pool's images were two tables, ``images`` (what ``ingest``
recorded, by content hash) and ``predictions`` (what the backend predicted, by task), and are one, ``pool``, since;
:func:`merge_old_tables` moves an older file's rows into ``pool`` and DROPS the two old tables (an older backend
given the file again starts them empty: its queue and dashboard are empty until it predicts again).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    project INTEGER PRIMARY KEY,
    round INTEGER NOT NULL DEFAULT 0,
    model_version TEXT,
    annotations_since_training INTEGER NOT NULL DEFAULT 0,
    sampling_configured INTEGER NOT NULL DEFAULT 0,
    sampling_warning TEXT,
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,
    project INTEGER,
    task_id INTEGER,
    annotation_id INTEGER,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS annotations (
    project INTEGER NOT NULL,
    annotation_id INTEGER NOT NULL,
    task_id INTEGER,
    cancelled INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    updated_at REAL,
    PRIMARY KEY (project, annotation_id)
);
CREATE TABLE IF NOT EXISTS stop_boxes (
    project INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    boxes TEXT NOT NULL,
    PRIMARY KEY (project, task_id, model_version)
);
CREATE TABLE IF NOT EXISTS agreements (
    project INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    previous_version TEXT NOT NULL,
    agreement REAL NOT NULL,
    images INTEGER NOT NULL,
    labeled INTEGER,
    measured_at REAL NOT NULL,
    PRIMARY KEY (project, model_version)
);
CREATE TABLE IF NOT EXISTS label_errors (
    project INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    score REAL NOT NULL,
    kinds TEXT NOT NULL,
    in_sample INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (project, task_id)
);
CREATE TABLE IF NOT EXISTS training_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project INTEGER,
    reason TEXT,
    status TEXT NOT NULL,
    requested_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    model_version TEXT,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS pool (  -- one image of a project's pool: detector_al.state.pool_table
    project INTEGER NOT NULL,
    key TEXT NOT NULL,  -- the image's content hash (ingest), or 'task:<id>' (a task only the backend scored)
    task_id INTEGER,  -- its Label Studio task (NULL: none, e.g. an offline ingest or an unreadable file)
    path TEXT,  -- the file scored: ingest's, or the backend's fetched copy
    url TEXT,  -- the image as ingest gave it to Label Studio
    width INTEGER,
    height INTEGER,
    model_version TEXT,  -- of the latest prediction
    round INTEGER,
    score REAL,  -- the strategy's uncertainty
    confidence REAL,  -- the score Label Studio serves the task by (lowest first; al_priority = 1 - confidence)
    decision TEXT,  -- query, rest, auto_accept, error (detector_al.queue.build)
    n_boxes INTEGER,  -- boxes the backend showed (NULL: ingest's, see regions)
    regions TEXT,  -- ingest's pre-annotation (Label Studio regions, JSON)
    pseudo_labels TEXT,  -- ingest's CEAL pseudo-labels (JSON)
    embedding BLOB,  -- float32, for the batch's diversity
    max_confidence REAL,  -- highest shown box confidence (NULL: written before the column), for the cold start
    error TEXT,
    updated_at REAL,
    PRIMARY KEY (project, key)
);
CREATE TABLE IF NOT EXISTS annotation_times (  -- one row per annotation: detector_al.state.annotation_times
    project INTEGER NOT NULL,
    annotation_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    lead_time REAL,  -- Label Studio's seconds; NULL (an imported annotation): never counted
    skipped INTEGER NOT NULL DEFAULT 0,
    annotator INTEGER,  -- completed_by: kept, never shown per person by default
    model_version TEXT,  -- what the annotator started from: the prediction's version (NULL: none shown)
    band TEXT,  -- its queue band (detector_al.queue.build: query, rest, auto_accept)
    shown INTEGER,  -- its boxes
    boxes INTEGER,  -- the result's boxes
    draw INTEGER, adjust INTEGER, "delete" INTEGER, relabel INTEGER, verify INTEGER,  -- the edit; NULL: unknown
    source TEXT NOT NULL,  -- webhook or listing
    ls_updated_at TEXT,  -- Label Studio's updated_at: a later version of the annotation replaces this row
    recorded_at REAL NOT NULL,
    PRIMARY KEY (project, annotation_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS pool_by_task ON pool (project, task_id) WHERE task_id IS NOT NULL;
"""

MIGRATIONS = (  # (table, column, declaration) added since the first release
    ("projects", "sampling_configured", "INTEGER NOT NULL DEFAULT 0"),
    ("projects", "sampling_warning", "TEXT"),
)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"  # training_jobs.status
WAITING = "waiting"
"""A training job that ended before training because the project has too few labels yet: nothing failed, so it costs
no back-off, and its ``error`` says how many more labels the next one needs."""
FINISHED = (DONE, FAILED, CANCELLED, WAITING)
"""The statuses of a job that has ended (the others: queued, running)."""

TASK_KEY = "task:"
"""The key prefix of a pool row the backend made for a task ingest never recorded (``task:<id>``); any other key is
a content hash."""


@dataclass(frozen=True)
class PoolRow:
    """One image of a project's pool (a row of ``pool``): which task shows it, where its file is, and its latest
    prediction (score, queue band, the score Label Studio serves by). ``ingest`` writes whole rows by content hash
    (:meth:`~detector_al.state.pool_table.PoolTable.record_ingested`); the backend writes its predictions by task
    (:meth:`~detector_al.state.pool_table.PoolTable.record_predictions`): ``key`` None is ``task:<task_id>``."""

    key: str | None = None
    task_id: int | None = None
    path: str | None = None
    url: str | None = None
    width: int = 0
    height: int = 0
    model_version: str | None = None
    round: int = 0
    score: float | None = None
    confidence: float | None = None
    decision: str = "rest"
    n_boxes: int | None = None
    regions: str | None = None
    pseudo_labels: str | None = None
    embedding: bytes | None = None
    max_confidence: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.key is None:
            if self.task_id is None:
                raise ValueError("a pool row needs a content hash or a task id")
            object.__setattr__(self, "key", f"{TASK_KEY}{int(self.task_id)}")

    @property
    def content_hash(self) -> str | None:
        """The image's content hash (None: a task only the backend scored)."""
        return None if self.key.startswith(TASK_KEY) else self.key

    @property
    def priority(self) -> float | None:
        """``al_priority = 1 - confidence``: the tabs' descending order is the queue order."""
        return None if self.confidence is None else 1.0 - self.confidence


POOL_COLUMNS = tuple(PoolRow.__dataclass_fields__)
PREDICTION_COLUMNS = (
    "model_version",
    "round",
    "score",
    "confidence",
    "decision",
    "n_boxes",
    "embedding",
    "max_confidence",
    "error",
)
"""What a prediction of the backend sets in a row ingest recorded for the same task (path, URL, size, regions and
content hash stay ingest's)."""
ON_PREDICTION = (
    "ON CONFLICT(project, task_id) WHERE task_id IS NOT NULL DO UPDATE SET "
    + ", ".join(f"{c}=excluded.{c}" for c in PREDICTION_COLUMNS)
    + ", path=COALESCE(path, excluded.path), updated_at=excluded.updated_at"
)


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the missing tables, add the columns a file written by an older version lacks, and move the rows of the
    two tables before ``pool`` into it (:func:`merge_old_tables`)."""
    conn.executescript(SCHEMA)
    for table, column, decl in MIGRATIONS:
        if column not in _columns(conn, table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    if not conn.execute("SELECT 1 FROM annotations LIMIT 1").fetchone():  # a file from before the table: its events
        conn.execute(
            "INSERT OR IGNORE INTO annotations (project, annotation_id, task_id, updated_at)"
            " SELECT project, COALESCE(annotation_id, -id), task_id, received_at FROM events"
            " WHERE action IN ('ANNOTATION_CREATED', 'ANNOTATION_UPDATED') AND project IS NOT NULL"
            " AND task_id IS NOT NULL"
        )
    merge_old_tables(conn)


def merge_old_tables(conn: sqlite3.Connection) -> None:
    """Move the rows of ``images`` (ingest's, by content hash) and ``predictions`` (the backend's, by task) of a file
    written before ``pool`` into ``pool``, then drop the two tables: one transaction, once (a second process that
    opens the file finds them gone).

    An ingested image and a prediction of the same task become one row: the prediction's model version, score,
    queue band, embedding and error (the backend's is the newer: a retraining's re-scoring wrote both), ingest's
    content hash, path, URL, size and regions. ``confidence`` of an ingested row is ``1 - priority`` (the old row
    kept both); an ingested image whose task another image already holds is left out (none is written so)."""
    if not {"images", "predictions"} & _tables(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        tables = _tables(conn)
        if "images" in tables:
            col = _column_or_null(conn, "images")
            conn.execute(
                "INSERT OR IGNORE INTO pool (project, key, task_id, path, url, width, height, model_version, round,"
                " score, confidence, decision, regions, pseudo_labels, embedding, max_confidence, error, updated_at)"
                " SELECT project, content_hash, task_id, path, url, width, height, model_version, round, score,"
                f" 1.0 - priority, decision, regions, pseudo_labels, {col('embedding')}, {col('max_confidence')},"
                " error, updated_at FROM images ORDER BY project, content_hash"
            )
            conn.execute("DROP TABLE images")
        if "predictions" in tables:
            col = _column_or_null(conn, "predictions")
            conn.execute(
                f"INSERT INTO pool (project, key, task_id, path, {', '.join(PREDICTION_COLUMNS)}, updated_at)"
                f" SELECT project, '{TASK_KEY}' || task_id, task_id, image, model_version, round, score, confidence,"
                f" decision, n_boxes, {col('embedding')}, {col('max_confidence')}, error, updated_at FROM predictions"
                f" WHERE true {ON_PREDICTION}"
            )
            conn.execute("DROP TABLE predictions")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def _column_or_null(conn: sqlite3.Connection, table: str):
    """``col(name)``: the column's name in a SELECT of ``table``, or NULL where that file's table lacks it."""
    have = _columns(conn, table)
    return lambda name: name if name in have else "NULL"
