"""One policy: the backend's /predict, ingest and a simulation round decide the same pool identically."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
from fastapi.testclient import TestClient

from detector_al.label_studio.config import parse_label_config
from detector_al.model.detector import Detector
from detector_al.pipelines.ingest import IngestConfig, ingest, plan_queue
from detector_al.policy.ceal import CealConfig
from detector_al.policy.decision import decide
from detector_al.policy.settings import DIVERSITY, POLICY
from detector_al.policy.strategies import get_strategy
from detector_al.queue.build import AUTO_ACCEPT, QUERY, build_queue
from detector_al.simulation.experiment import choose_from_decisions
from detector_al.state.store import Store
from ml_backend.main import create_app
from ml_backend.settings import Settings

BUDGET = 4
CEAL = CealConfig(delta_0=0.05, min_confidence=0.7)  # not the defaults (0.7 refuses an image 0.5 accepts)


def test_predict_ingest_and_simulation_make_the_same_decisions_and_queue(tmp_path, sample_data, trained_weights):
    folder = tmp_path / "pool"
    folder.mkdir()
    for p in sorted((sample_data / "images" / "pool").glob("*.jpg"))[:16]:
        shutil.copy(p, folder / p.name)
    paths = sorted(folder.glob("*.jpg"))
    label_config = (sample_data / "label_config.xml").read_text()

    # the backend, one /predict over the pool
    settings = Settings(
        model_dir=tmp_path / "models",
        model_path=str(trained_weights),
        local_files_document_root=tmp_path,
        ceal_delta0=CEAL.delta_0,
        ceal_min_confidence=CEAL.min_confidence,
    )
    with TestClient(create_app(settings)) as c:
        tasks = [{"id": i + 1, "data": {"image": str(p)}} for i, p in enumerate(paths)]
        r = c.post("/predict", json={"tasks": tasks, "project": 7, "label_config": label_config})
        assert r.status_code == 200, r.text
        store = c.app.state.backend.store
        backend = {row["path"]: row for row in store.predictions(7)}
        version = c.app.state.backend.service.model_version
        assert c.app.state.backend.service.config.policy.ceal == CEAL
        inputs = list(store.iter_queue(7, version))

    # ingest, offline
    det = Detector.load(trained_weights, conf=0.05)
    ingest_store = Store(tmp_path / "ingest.sqlite3")
    cfg = IngestConfig(policy=replace(POLICY, budget=BUDGET, ceal=CEAL))
    ingest(folder, det, ingest_store, parse_label_config(label_config, det.names), cfg)
    strategy = get_strategy(cfg.policy.strategy)
    ingested = {row.path: (row, e) for row, e in plan_queue(ingest_store, 0, BUDGET, strategy.confidence)}

    # one simulation round
    decisions = [decide(p, strategy, 0, CEAL) for p in det.predict([str(p) for p in paths])]
    batch, pseudo = choose_from_decisions(paths, decisions, BUDGET, diversity=DIVERSITY)

    for p, d in zip(paths, decisions, strict=True):
        row, entry = ingested[str(p)]
        assert backend[str(p)]["score"] == row.score == d.score, p.name  # one score, whatever the path
        accepted = {d.accepted, backend[str(p)]["decision"] == AUTO_ACCEPT, entry.status == AUTO_ACCEPT}
        assert len(accepted) == 1, p.name
        assert (p in pseudo) == d.accepted
    assert 0 < len(pseudo) < len(paths) - BUDGET
    queried = [(e.position, path) for path, (_, e) in ingested.items() if e.status == QUERY]
    ingest_batch = [path for _, path in sorted(queried)]
    assert len(ingest_batch) == BUDGET
    assert [str(p) for p in batch] == ingest_batch  # the simulation labels what ingest queues first

    # the backend's queue refresh runs build_queue over what /predict stored: the same batch
    rows = list(inputs)
    queue = build_queue(
        np.array([r["score"] for r in rows]),
        np.array([r["decision"] == AUTO_ACCEPT for r in rows]),
        np.stack([np.frombuffer(r["embedding"], np.float32) for r in rows]),
        BUDGET,
    )
    by_task = {r["task_id"]: str(paths[r["task_id"] - 1]) for r in rows}
    backend_batch = [
        by_task[r["task_id"]] for r, e in sorted(zip(rows, queue, strict=True), key=lambda x: x[1].position)
    ][:BUDGET]
    assert backend_batch == ingest_batch


def test_labeled_tasks_leave_ingests_queue(tmp_path):
    from detector_al.state.store import PoolRow

    store = Store(tmp_path / "s.sqlite3")
    emb = np.eye(3, dtype=np.float32)
    store.record_ingested(
        1,
        [
            PoolRow(f"h{i}", 10 + i, f"/{i}.jpg", score=s, embedding=emb[i].tobytes())
            for i, s in enumerate([0.9, 0.5, 0.1])
        ],
    )
    planned = plan_queue(store, 1, budget=1, confidence=lambda u: 1 / (1 + u), labeled={10})
    assert [row.task_id for row, _ in planned] == [11, 12]
    assert [e.status for _, e in planned] == [QUERY, "rest"]
