"""The tables of the backend's SQLite state file, the columns added since the first release, and the rows
:class:`~detector_al.state.store.Store` writes to them.

:func:`create_schema` makes a new file, and brings a file written by an older version up to date (columns
are only ever added, with a default, so an older backend can still read a newer file).
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
CREATE TABLE IF NOT EXISTS predictions (
    project INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    image TEXT,
    model_version TEXT,
    score REAL,
    confidence REAL,
    decision TEXT,
    rank INTEGER,
    round INTEGER,
    n_boxes INTEGER,
    error TEXT,
    embedding BLOB,
    updated_at REAL,
    max_confidence REAL,
    PRIMARY KEY (project, task_id)
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
CREATE TABLE IF NOT EXISTS images (
    content_hash TEXT NOT NULL,
    project INTEGER NOT NULL,
    path TEXT NOT NULL,
    url TEXT,
    task_id INTEGER,
    width INTEGER,
    height INTEGER,
    score REAL,
    confidence REAL,
    decision TEXT,
    priority REAL,
    round INTEGER,
    model_version TEXT,
    regions TEXT,
    pseudo_labels TEXT,
    embedding BLOB,
    error TEXT,
    updated_at REAL,
    max_confidence REAL,
    PRIMARY KEY (content_hash, project)
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
CREATE INDEX IF NOT EXISTS images_by_score ON images (project, score);
CREATE INDEX IF NOT EXISTS images_by_hash ON images (project, content_hash);  -- paged reads (Store.iter_images)
"""

MIGRATIONS = (  # (table, column, declaration) added since the first release
    ("projects", "sampling_configured", "INTEGER NOT NULL DEFAULT 0"),
    ("projects", "sampling_warning", "TEXT"),
    ("predictions", "embedding", "BLOB"),
    ("predictions", "max_confidence", "REAL"),  # NULL in rows written before: see queue.pool_max_confidence
    ("images", "max_confidence", "REAL"),
)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"  # training_jobs.status


@dataclass(frozen=True)
class ImageRow:
    """One ingested image file: where it is, which task shows it, how uncertain it is."""

    content_hash: str
    path: str
    url: str | None = None
    task_id: int | None = None
    width: int = 0
    height: int = 0
    score: float | None = None
    confidence: float | None = None
    decision: str = "rest"
    priority: float | None = None
    round: int = 0
    model_version: str | None = None
    regions: str | None = None
    pseudo_labels: str | None = None
    embedding: bytes | None = None
    error: str | None = None
    max_confidence: float | None = None  # highest shown box confidence, for the cold-start rule


IMAGE_COLUMNS = tuple(ImageRow.__dataclass_fields__)


@dataclass(frozen=True)
class PredictionRow:
    """What the backend remembers of one task's latest prediction."""

    task_id: int
    image: str
    model_version: str
    score: float | None
    confidence: float | None
    decision: str
    round: int
    n_boxes: int
    error: str | None = None
    embedding: bytes | None = None  # float32 image embedding, for choosing the diverse batch
    max_confidence: float | None = None  # highest shown box confidence, for the cold-start rule


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the missing tables, and add the columns a file written by an older version lacks."""
    conn.executescript(SCHEMA)
    for table, column, decl in MIGRATIONS:
        if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    if not conn.execute("SELECT 1 FROM annotations LIMIT 1").fetchone():  # a file from before the table: its events
        conn.execute(
            "INSERT OR IGNORE INTO annotations (project, annotation_id, task_id, updated_at)"
            " SELECT project, COALESCE(annotation_id, -id), task_id, received_at FROM events"
            " WHERE action IN ('ANNOTATION_CREATED', 'ANNOTATION_UPDATED') AND project IS NOT NULL"
            " AND task_id IS NOT NULL"
        )
