"""How fast the dashboard and /status load for a large project: a store holding ``--tasks`` scored tasks (10,000 by
default), a tenth of them labeled, 20 trainings, their agreements and a label review of every labeled task.

Prints the median and the slowest of ``--repeat`` loads of ``GET /dashboard`` and ``GET /status`` (the whole HTTP
round trip through the app, in process) and their ratio to the one-second target.

    python benchmarks/bench_dashboard.py --tasks 10000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from detector_al.demo.bootstrap_model import shipped_sample_weights
from detector_al.signals.label_errors import LabelErrors
from detector_al.state.signals import Signals
from detector_al.state.store import PoolRow
from ml_backend.main import create_app
from ml_backend.settings import Settings

PROJECT = 1


def fill(store, version: str, n: int, rng) -> None:
    decisions = rng.choice(["query", "rest", "auto_accept"], size=n, p=[0.002, 0.9, 0.098])
    emb = np.zeros(256, np.float32).tobytes()
    rows = [
        PoolRow(
            task_id=i,
            path=f"img{i}.jpg",
            model_version=version,
            round=3,
            score=float(rng.gamma(2, 0.5)),
            confidence=0.2,
            decision=str(d),
            n_boxes=4,
            embedding=emb,
        )
        for i, d in enumerate(decisions)
    ]
    store.record_predictions(PROJECT, rows)
    labeled = range(0, n, 10)
    for t in labeled:
        store.record_event("ANNOTATION_CREATED", PROJECT, t, t)
    signals = Signals(store)
    for k in range(20):
        job, _ = store.enqueue_training(PROJECT, "START_TRAINING")
        store.claim_training()
        detail = {"labeled": 50 * (k + 1), "pseudo_labeled": k, "candidate": {"map50": 0.3 + k / 40, "map50_95": 0.2}}
        detail |= {"serving": {"version": f"v{k}", "map50": 0.3}, "promoted": k % 3 != 2, "class_counts": [k, 2 * k, 1]}
        store.finish_training(job, "done", model_version=f"v{k + 1}-0000000{k % 10}", detail=detail)
        signals.record_agreement(PROJECT, f"v{k + 1}", f"v{k}", 0.6 + k / 60, 50, 50 * (k + 1))
    signals.record_label_errors(
        PROJECT, version, {t: (LabelErrors(int(rng.integers(2)), 0, 0, float(rng.random())), True) for t in labeled}
    )


def timed(client: TestClient, path: str, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(path)
        r.raise_for_status()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(model_dir=Path(tmp) / "models", model_path=str(shipped_sample_weights()))
        with TestClient(create_app(s, run_job=lambda job, report: {})) as client:
            state = client.app.state.backend
            t0 = time.perf_counter()
            fill(state.store, state.service.model_version, args.tasks, np.random.default_rng(0))
            print(f"store filled with {args.tasks} tasks in {time.perf_counter() - t0:.1f} s")
            for path in ("/dashboard", "/status"):
                times = timed(client, path, args.repeat)
                med, worst = statistics.median(times), max(times)
                print(
                    f"GET {path}: median {1000 * med:.0f} ms, slowest {1000 * worst:.0f} ms over {args.repeat} loads"
                    f" ({med / 1.0:.2f}x the 1 s target)"
                )


if __name__ == "__main__":
    main()
