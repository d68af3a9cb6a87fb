"""A cold model in a real Label Studio: "Label All Tasks" serves the TypiClust batch first, not the uncertain one.

A model trained for one epoch is sure of almost nothing, as a new project's model is: the backend's queue
refresh must see that from the stored predictions (no label needed) and queue typical images of distinct
clusters. The stream is read the way the labeling UI reads it (``GET /api/projects/<id>/next``).
"""

from __future__ import annotations

import numpy as np
import pytest

from detector_al.queue.build import AUTO_ACCEPT, cold_start_batch, pool_max_confidence
from detector_al.queue.selection import use_cold_start
from detector_al.state.store import STORE_FILE_NAME, Store
from tests.integration.conftest import queue_published, uploads_with_backend, wait_for
from tests.integration.test_label_stream import queue_order, serve_stream

pytestmark = pytest.mark.slow
BUDGET = 4


@pytest.fixture(scope="module")
def cold_weights(sample_data, tmp_path_factory):
    """One epoch from scratch at 128 px: boxes, embeddings and scores, but sure of none."""
    from detector_al.model.training import TrainConfig, train_detector

    out = tmp_path_factory.mktemp("cold-model")
    return train_detector(
        sample_data / "data.yaml", out, TrainConfig(epochs=1, imgsz=128, val=False, base="yolov8n.yaml")
    )


@pytest.fixture(scope="module")
def cold_project(label_studio, sample_data, cold_weights, tmp_path_factory):
    """Images uploaded through Label Studio's Import, then the backend (cold model) connected to the project."""
    paths = sorted((sample_data / "images" / "pool").glob("*.jpg"))[100:116]
    model_dir = tmp_path_factory.mktemp("cold-backend") / "models"
    client, project, server = uploads_with_backend(
        label_studio, sample_data, cold_weights, paths, "cold queue", model_dir, budget=BUDGET
    )
    yield client, project, server
    server.stop()


def test_a_cold_models_stream_serves_the_typiclust_batch_first(cold_project):
    client, project, server = cold_project
    version = server.health()["model_version"]

    if not wait_for(
        lambda: queue_published(client, project, version, 16, BUDGET), timeout=180
    ):  # generous: a loaded machine scores 16 images slowly
        pytest.fail(f"the backend did not publish a batch of {BUDGET}\n{server.log.read_text()[-3000:]}")
    rows = list(Store(server.model_dir / STORE_FILE_NAME).iter_queue(project, version))
    assert len(rows) == 16
    top = pool_max_confidence(r["max_confidence"] for r in rows)
    assert top is not None and use_cold_start(top), f"the one-epoch model should be cold: {top}"
    emb = np.stack([np.frombuffer(r["embedding"], np.float32) for r in rows])
    accepted = np.array([r["decision"] == AUTO_ACCEPT for r in rows])
    typical = [rows[int(i)]["task_id"] for i in cold_start_batch(top, accepted, emb, BUDGET)]
    most_uncertain = [r["task_id"] for r in sorted(rows, key=lambda r: -r["score"])[:BUDGET]]
    assert set(typical) != set(most_uncertain), "the test needs a TypiClust batch unlike the uncertainty one"

    order = queue_order(client, project)
    assert [t.id for t in order[:BUDGET]] == typical  # the batch, in TypiClust's order
    assert serve_stream(client, project, BUDGET) == typical  # what the annotator gets
