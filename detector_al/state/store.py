"""The backend's state in one SQLite file: projects, predictions and their queue ranks, ingested images, webhook
events, training jobs.

One file, one :class:`Store`, made of one class per concern: :mod:`~detector_al.state.database` (connections and
transactions), :mod:`~detector_al.state.projects_table`, :mod:`~detector_al.state.predictions_table`,
:mod:`~detector_al.state.images_table`, :mod:`~detector_al.state.events_table`, :mod:`~detector_al.state.jobs_table`.
Id spaces are kept apart by name: ``project`` (Label Studio project id), ``task_id`` (Label Studio task id),
``content_hash`` (image bytes), ``job_id``.

Example:
    >>> s = Store(":memory:")
    >>> s.enqueue_training(1, "START_TRAINING")
    (1, True)
"""

from __future__ import annotations

from detector_al.state.events_table import ANNOTATION_EVENTS, LABELED_TASKS, MAX_EVENTS, EventsTable
from detector_al.state.images_table import ImagesTable
from detector_al.state.jobs_table import JobsTable
from detector_al.state.predictions_table import PredictionsTable
from detector_al.state.projects_table import ProjectsTable
from detector_al.state.schema import CANCELLED, DONE, FAILED, QUEUED, RUNNING, ImageRow, PredictionRow

__all__ = [
    "ANNOTATION_EVENTS",
    "CANCELLED",
    "DONE",
    "FAILED",
    "LABELED_TASKS",
    "MAX_EVENTS",
    "QUEUED",
    "RUNNING",
    "STORE_FILE_NAME",
    "ImageRow",
    "PredictionRow",
    "Store",
]

STORE_FILE_NAME = "detector_al.sqlite3"
"""The store's file in a backend's model folder (``MODEL_DIR``): one store for the backend, ingest and the demo."""


class Store(ProjectsTable, PredictionsTable, ImagesTable, EventsTable, JobsTable):
    """Thread-safe access to the SQLite state file (created on first use); its methods come from the tables."""
