"""A cold model in a real Label Studio: "Label All Tasks" serves the TypiClust batch first, not the uncertain one.

A model trained for one epoch is sure of almost nothing, as a new project's model is: the backend's queue
refresh must see that from the stored predictions (no label needed) and queue typical images of distinct
clusters. The stream is read the way the labeling UI reads it (``GET /api/projects/<id>/next``).
"""

from __future__ import annotations

import numpy as np
import pytest

from detector_al.label_studio.client import LabelStudioClient
from detector_al.queue import AUTO_ACCEPT, cold_start_batch, pool_max_confidence
from detector_al.selection import use_cold_start
from detector_al.state.store import STORE_FILE_NAME, Store
from tests.integration.conftest import wait_for
from tests.integration.test_label_stream import queue_order, serve_stream

pytestmark = pytest.mark.slow
BUDGET = 4


@pytest.fixture(scope="module")
def cold_weights(sample_data, tmp_path_factory):
    """One epoch from scratch at 128 px: boxes, embeddings and scores, but sure of none."""
    from detector_al.jobs.training import TrainConfig, train_detector

    out = tmp_path_factory.mktemp("cold-model")
    return train_detector(sample_data / "data.yaml", out, TrainConfig(epochs=1, imgsz=128, val=False))


@pytest.fixture(scope="module")
def cold_project(label_studio, sample_data, cold_weights, tmp_path_factory):
    """Images uploaded through Label Studio's Import, then the backend (cold model) connected to the project."""
    from tests.integration.conftest import BackendServer

    client = LabelStudioClient(label_studio.url, label_studio.token)
    project = client.ls.projects.create(title="cold queue", label_config=(sample_data / "label_config.xml").read_text())
    paths = sorted((sample_data / "images" / "pool").glob("*.jpg"))[100:116]
    files = {f"file{i}": (p.name, p.read_bytes(), "image/jpeg") for i, p in enumerate(paths)}
    client.http.post(
        f"{label_studio.url}/api/projects/{project.id}/import", files=files, timeout=120
    ).raise_for_status()
    server = BackendServer(
        cold_weights,
        label_studio.files_root,
        tmp_path_factory.mktemp("cold-backend") / "models",
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        QUEUE_BUDGET=BUDGET,
        QUEUE_REFRESH_DELAY_S=0.5,
    ).start()
    client.ls.ml.create(project=project.id, url=server.url, title="detector-al", is_interactive=False)
    client.ls.actions.create(
        id="retrieve_tasks_predictions", project=project.id, selected_items={"all": True, "excluded": []}
    )
    yield client, project.id, server
    server.stop()


def test_a_cold_models_stream_serves_the_typiclust_batch_first(cold_project):
    client, project, server = cold_project
    version = server.health()["model_version"]

    def ready():
        scores = [pr.score for pr in client.ls.predictions.list(project=project) if pr.model_version == version]
        return len(scores) == 16 and sum(s < 0.1 for s in scores) == BUDGET  # the query band: the batch

    if not wait_for(ready, timeout=90):
        pytest.fail(f"the backend did not publish a batch of {BUDGET}\n{server.log.read_text()[-3000:]}")
    rows = Store(server.model_dir / STORE_FILE_NAME).queue_inputs(project, version)
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
