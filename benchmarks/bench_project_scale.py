"""Costs that must not grow with the project: ``/predict`` latency, the queue refresh and the end of ingest's queue
plan, at 1k and 100k stored images (synthetic rows: embeddings of the real size, uncertainties, decisions).

For each size a model folder gets a store of N images (ingested, then predicted by the backend: one pool row each),
and then, in one run:

* ``/predict`` of one task on the real app (the shipped model, a local image) for both sizes, in alternating
  blocks: the server's own time (``Server-Timing``) per request, median and 90th percentile;
* the backend's queue refresh (:func:`~detector_al.label_studio.project_queue.refresh_queue`, Label Studio replaced by a
  recorder: no network): seconds and peak Python memory (``tracemalloc``);
* the plan alone (:func:`~detector_al.label_studio.project_queue.plan_project_queue`, as the end of an offline ingest
  runs it: every model version): seconds and peak memory;
* for contrast, what holding the whole pool costs: all rows' embeddings in memory and ``build_queue`` over them.

Printed: each figure per size and the ratio 100k / 1k (flat: per-request near 1; refresh and plan memory near 1,
their time linear in N as they read every row once).

Usage: ``python benchmarks/bench_project_scale.py [--sizes 1000,100000] [--requests 40]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np

PROJECT, BUDGET, DIM = 7, 20, 448


class RecordingLabelStudio:
    """What refresh_queue writes to: tasks 1..n, each with one prediction of the version (its id = the task id)."""

    def __init__(self, version: str, n: int) -> None:
        self.version, self.n, self.writes = version, n, 0
        self.predictions = SimpleNamespace(list=self._list, update=self._update)
        self.tasks = SimpleNamespace(update=lambda id, data: None, list=self._tasks)

    def _tasks(self, project, fields, query=None, page_size=None, include=None):
        """The tasks' data: of the ones asked for (``selectedItems``), else of the whole project (ids 1..n)."""
        ids = json.loads(query)["selectedItems"]["included"] if query else range(1, self.n + 1)
        items = [SimpleNamespace(id=t, data={}, predictions=self._list(task=t)) for t in ids]
        return SimpleNamespace(items=items) if query else items

    def _list(self, task=None, project=None):
        return [SimpleNamespace(id=task, task=task, model_version=self.version)]

    def _update(self, id, score):
        self.writes += 1


def fill(store, n: int, version: str, seed: int = 0) -> None:
    from detector_al.queue.build import AUTO_ACCEPT, REST, label_studio_score
    from detector_al.state.store import PoolRow

    rng = np.random.default_rng(seed)
    for start in range(0, n, 5000):
        m = min(5000, n - start)
        emb = rng.normal(size=(m, DIM)).astype(np.float32)
        u = rng.gamma(2.0, 1.0, m)
        acc = rng.uniform(size=m) < 0.3
        conf = rng.uniform(0.3, 1.0, m)
        preds, images = [], []
        for j in range(m):
            i = start + j
            status = AUTO_ACCEPT if acc[j] else REST
            ls = label_studio_score(status, 1 / (1 + u[j]))
            e = emb[j].tobytes()
            preds.append(
                PoolRow(
                    task_id=i + 1,
                    path=f"/cache/{i}.jpg",
                    model_version=version,
                    score=float(u[j]),
                    confidence=ls,
                    decision=status,
                    n_boxes=3,
                    embedding=e,
                    max_confidence=float(conf[j]),
                )
            )
            images.append(
                PoolRow(
                    f"{i:064x}",
                    i + 1,
                    f"/data/{i}.jpg",
                    url=f"/data/local-files/?d={i}.jpg",
                    width=640,
                    height=480,
                    score=float(u[j]),
                    confidence=ls,
                    decision=status,
                    model_version=version,
                    regions="[]",
                    embedding=e,
                    max_confidence=float(conf[j]),
                )
            )
        store.record_ingested(PROJECT, images)
        store.record_predictions(PROJECT, preds)


def measured(fn):
    tracemalloc.start()
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, out


def main() -> None:
    from fastapi.testclient import TestClient

    from detector_al.demo.bootstrap_model import shipped_sample_weights
    from detector_al.label_studio.project_queue import plan_project_queue, refresh_queue
    from detector_al.queue.build import AUTO_ACCEPT, build_queue, default_confidence
    from detector_al.state.store import STORE_FILE_NAME, Store
    from ml_backend.main import create_app
    from ml_backend.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,100000")
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    image = sorted(Path("sample_data/images/pool").resolve().glob("*.jpg"))[0]
    label_config = Path("sample_data/label_config.xml").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        apps, stores = {}, {}
        for n in sizes:
            settings = Settings(
                model_dir=Path(tmp) / f"m{n}",
                model_path=str(shipped_sample_weights()),
                local_files_document_root=image.parent,
            )
            client = TestClient(create_app(settings)).__enter__()
            version = client.app.state.backend.service.model_version
            store = Store(settings.model_dir / STORE_FILE_NAME)
            t = time.perf_counter()
            fill(store, n, version)
            print(f"{n} rows stored in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            apps[n], stores[n] = client, store

        latency: dict[int, list[float]] = {n: [] for n in sizes}
        body = {
            "tasks": [{"id": 10**9, "data": {"image": str(image)}}],
            "project": PROJECT,
            "label_config": label_config,
        }
        for block in range(4):
            for n in sizes if block % 2 == 0 else reversed(sizes):
                for _ in range(args.requests // 4):
                    r = apps[n].post("/predict", json=body)
                    assert r.status_code == 200, r.text
                    latency[n].append(float(r.headers["Server-Timing"].split("dur=")[1]))

        rows = []
        for n in sizes:
            version = apps[n].app.state.backend.service.model_version
            store = stores[n]
            ls = RecordingLabelStudio(version, n)
            ref_s, ref_mb, _ = measured(
                lambda store=store, ls=ls, version=version: refresh_queue(
                    store, ls, PROJECT, version, BUDGET, default_confidence
                )
            )
            plan_s, plan_mb, _ = measured(
                lambda store=store: plan_project_queue(store, PROJECT, None, BUDGET, default_confidence)
            )

            def whole_pool(store=store, version=version):
                inputs = list(store.iter_queue(PROJECT, version))
                emb = np.stack([np.frombuffer(r["embedding"], np.float32) for r in inputs])
                u = np.array([r["score"] for r in inputs])
                return build_queue(u, np.array([r["decision"] == AUTO_ACCEPT for r in inputs]), emb, BUDGET)

            old_s, old_mb, _ = measured(whole_pool)
            lat = sorted(latency[n])
            rows.append(
                (
                    n,
                    statistics.median(lat),
                    lat[int(0.9 * (len(lat) - 1))],
                    ref_s,
                    ref_mb,
                    plan_s,
                    plan_mb,
                    old_s,
                    old_mb,
                )
            )
        for c in apps.values():
            c.__exit__(None, None, None)

    head = (
        "stored",
        "/predict ms p50",
        "p90",
        "refresh s",
        "refresh MB",
        "plan s",
        "plan MB",
        "whole pool s",
        "MB",
    )
    print(" | ".join(head))
    for r in rows:
        print(" | ".join([str(r[0])] + [f"{x:.3g}" for x in r[1:]]))
    if len(rows) == 2:
        (_, *a), (_, *b) = rows
        print("ratio " + " | ".join(f"{y / x:.2f}" for x, y in zip(a, b, strict=True)))


if __name__ == "__main__":
    main()
