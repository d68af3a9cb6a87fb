"""Retraining's memory as the project grows: the whole job (collect, pseudo-labels, review, re-score, publish, the
store's records, the stopping signal) on projects of 1,000 to 50,000 stored tasks with the same 30 labels.

What is real: the retraining code (``Retrainer``), the prediction service, the store, the queue's planning. What is
not: Label Studio is an in-memory fake whose state is preallocated numpy arrays (so its own memory does not grow
during the job), answering the SDK calls retraining makes (task pages by id, prediction imports, the Data Manager's
``delete_tasks_predictions``, ``DELETE model-versions``; also the unpaged listings and per-prediction deletes of the
code before #32); the detector is a fake that answers in microseconds with small arrays (an embedding of 256
floats, 64 anchors); the training is skipped (its process is separate anyway) and the candidate promoted.

Each size runs in a fresh process; printed: tracemalloc's peak of Python allocations during the job (numpy
included) and the process's peak resident memory, the Label Studio requests by kind, and the ratio of the largest
size's peak to the smallest's.

Usage: ``python benchmarks/bench_retrain_memory.py [--sizes 1000,10000,50000] [--confident 0.8] [--code DIR]``
(``--code``: import detector_al from another checkout, e.g. ``git archive <commit> detector_al | tar -x -C /tmp/old``
for the figures before; ``--confident 0.3``: a cold model, whose batch is TypiClust's over a sample of at most 4,096
images: the peak grows up to a pool of 4,096 images, then stays).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LABELED = 30
OLD, NEW = 1, 2  # version bits of a task's predictions


class CompactLabelStudio:
    """``n`` tasks (ids 1..n), the first ``LABELED`` validation-rich ones labeled, each with a prediction of ``v-old``;
    state in preallocated arrays, objects made per request only."""

    def __init__(self, n: int, labeled: list[int]) -> None:
        self.n = n
        self.url, self.api_key = "http://ls.invalid", "key"
        self.labeled = np.zeros(n + 1, bool)
        self.labeled[labeled] = True
        self.versions = np.full(n + 1, OLD, np.int8)
        self.names = {OLD: "v-old"}
        self.project = SimpleNamespace(sampling="Uncertainty sampling", model_version="v-old", label_config="")
        self.calls: Counter = Counter()
        self.ls = SimpleNamespace(
            tasks=SimpleNamespace(list=self.list, update=lambda id, data: self.count("tasks.update")),
            projects=SimpleNamespace(get=self.get, update=self.update, import_predictions=self.import_predictions),
            predictions=SimpleNamespace(list=self.predictions, delete=lambda id: self.delete(id)),
            actions=SimpleNamespace(create=self.action),
            views=SimpleNamespace(list=lambda project: [], create=lambda **kw: self.count("views.create")),
            _client_wrapper=SimpleNamespace(httpx_client=SimpleNamespace(request=self.http)),
        )

    def count(self, name: str) -> None:
        self.calls[name] += 1

    def version_names(self, bits: int) -> list[str]:
        return [self.names[b] for b in (OLD, NEW) if bits & b and b in self.names]

    def task(self, i: int, fields: str):
        data = {"image": "/data/local-files/?d=img.jpg", "al_priority": 1.0, "al_status": "rest"}
        t = SimpleNamespace(id=i, data=data, total_annotations=int(self.labeled[i]))
        t.total_predictions = len(self.version_names(int(self.versions[i])))
        if fields == "all":
            t.annotations = [{"id": i, "result": REGIONS, "updated_at": "2026-12-06"}] if self.labeled[i] else []
            t.predictions = [
                SimpleNamespace(id=i * 4 + b, task=i, model_version=v, score=0.3, result=[])
                for b, v in ((OLD, "v-old"), (NEW, self.names.get(NEW)))
                if self.versions[i] & b and v
            ]
        return t

    def list(self, project, fields="all", query=None, page=1, page_size=100, **_):
        self.count("tasks.list")
        if query is None:  # the unpaged listing of the code before #32: every task, made as it is read
            return (self.task(i, fields) for i in range(1, self.n + 1))
        q = json.loads(query)
        after, want = -1, None
        for item in q["filters"]["items"]:
            if item["filter"].endswith(":id"):
                after = item["value"]
            elif item["filter"].endswith(":cancelled_annotations"):
                return SimpleNamespace(items=[])  # no task holds a skip here
            else:
                want = item["operator"] == "greater"
        ids = np.arange(max(after + 1, 1), self.n + 1)
        if want is not None:
            ids = ids[self.labeled[ids] == want]
        ids = ids[(page - 1) * page_size : page * page_size]
        return SimpleNamespace(items=[self.task(int(i), fields) for i in ids])

    def get(self, id):
        self.count("projects.get")
        return SimpleNamespace(**vars(self.project))

    def update(self, id, **fields):
        self.count("projects.update")
        for k, v in fields.items():
            setattr(self.project, k, v)

    def import_predictions(self, id, request):
        self.count("projects.import_predictions")
        for r in request:
            self.names[NEW] = r["model_version"]
            self.versions[int(r["task"])] |= NEW

    def predictions(self, project=None, task=None):
        self.count("predictions.list")
        for i in range(1, self.n + 1):  # every prediction of the project, as Label Studio lists them unpaged
            for b in (OLD, NEW):
                if self.versions[i] & b and b in self.names:
                    yield SimpleNamespace(id=i * 4 + b, task=i, model_version=self.names[b], score=0.3, result=[])

    def delete(self, pid: int) -> None:
        self.count("predictions.delete")
        self.versions[pid // 4] &= ~np.int8(pid % 4)

    def action(self, id, project, selected_items=None, filters=None, **_):
        self.count(f"actions.{id}")
        ids = np.asarray(selected_items["included"], np.int64)
        self.versions[ids[~self.labeled[ids]]] = 0

    def http(self, path, method, json=None, **_):
        self.count(f"{method} model-versions")
        return SimpleNamespace(raise_for_status=lambda: None, json=lambda: {}, status_code=200)


REGIONS = [
    {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 64,
        "original_height": 64,
        "value": {"x": 10, "y": 10, "width": 30, "height": 30, "rotation": 0, "rectanglelabels": ["circle"]},
    }
]


class FakeDetector:
    """Answers ``predict`` with small, deterministic arrays (by image order), no model: a share ``confident`` of the
    images hold one box at 0.9 (auto-accepted), the others one at 0.4."""

    names = ("circle", "square", "star")
    conf, imgsz, max_decode_bytes = 0.05, 256, 512 * 2**20
    confident = 0.8

    def __init__(self, version: str) -> None:
        self.version = version
        self.rng = np.random.default_rng(0)

    def predict(self, paths, batch=16, views=1):
        from detector_al.model.predictions import Detections, ImagePredictions

        for p in paths:
            confident = self.rng.random() < self.confident
            conf = np.array([0.9 if confident else 0.4], np.float32)
            boxes = np.array([[10, 10, 40, 40]], np.float32)
            probs = np.full((64, 3), 0.01, np.float32)
            emb = self.rng.standard_normal(256).astype(np.float32)
            yield ImagePredictions(
                str(p),
                64,
                64,
                Detections(boxes, conf, np.array([0])),
                None,
                probs,
                None,
                np.zeros(64, np.int64),
                np.tile(boxes, (64, 1)),
                emb / np.linalg.norm(emb),
            )


def run_one(n: int, work: Path, confident: float) -> dict:
    from detector_al.pipelines import retrain as retrain_module
    from detector_al.pipelines.retrain import RetrainConfig, Retrainer
    from detector_al.pipelines.retrain_dataset import in_validation
    from detector_al.serving.service import PredictionService, ServiceConfig
    from detector_al.state.registry import ModelRegistry
    from detector_al.state.store import Store

    root = work / "files"
    root.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (64, 64), (90, 120, 150)).save(root / "img.jpg")
    val = [i for i in range(1, 10_000) if in_validation(i)][:10]
    train = [i for i in range(1, 10_000) if not in_validation(i)][: LABELED - 10]
    fake = CompactLabelStudio(n, val + train)
    FakeDetector.confident = confident
    registry = ModelRegistry(work / "models")
    weights = REPO / "sample_data" / "model" / "best.pt"
    v0, _ = registry.resolve(str(weights))
    store = Store(work / "store.sqlite3")
    service = PredictionService(FakeDetector(v0), store, ServiceConfig(local_files_root=root, cache_dir=work / "c"))
    service.load_detector = lambda path, **kw: FakeDetector(kw["version"])
    config = RetrainConfig(epochs=1, tolerance=1.0)
    retrainer = Retrainer(service, registry, store, lambda: fake, lambda p: None, work / "training", config)

    def skip_training(self, detector, root, *args, **kwargs):
        return weights, {"map50": 0.5, "map50_95": 0.3}, {"map50": 0.4, "map50_95": 0.25}

    Retrainer._train = skip_training
    retrain_module.parse_label_config = lambda text, names, mapping: _target(names)
    tracemalloc.start()
    started = time.perf_counter()
    result = retrainer({"id": 1, "project": 1, "cancel": None}, lambda **kw: None)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.get("promoted") and result.get("rescored", n - LABELED) == n - LABELED, result
    return {
        "tasks": n,
        "peak_mb": peak / 2**20,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": seconds,
        "rescored": result.get("rescored"),
        "calls": dict(sorted(fake.calls.items())),
    }


def _target(names):
    from detector_al.label_studio.config import parse_label_config

    return parse_label_config((REPO / "sample_data" / "label_config.xml").read_text(), names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--code", type=Path, default=REPO, help="the checkout whose detector_al is measured")
    ap.add_argument(
        "--confident",
        type=float,
        default=0.8,
        help="share of images the fake model is sure of (0.8: a warm model, the uncertainty batch; below 0.5 the "
        "model is cold and the batch is TypiClust's over a sample of at most 4,096 images)",
    )
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        sys.path.insert(0, str(args.code))
        work = Path(tempfile.mkdtemp(prefix="bench-retrain-memory-"))
        try:
            print(json.dumps(run_one(args.one, work, args.confident)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        env = {**os.environ, "PYTHONPATH": str(args.code), "YOLO_VERBOSE": "False"}
        cmd = [sys.executable, __file__, "--one", str(n), "--code", str(args.code), "--confident", str(args.confident)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"{n} tasks failed:\n{out.stderr[-3000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{n:>6} tasks: peak {row['peak_mb']:7.1f} MB (tracemalloc), max RSS {row['max_rss_mb']:6.0f} MB, "
            f"{row['seconds']:6.1f} s; Label Studio requests: {row['calls']}",
            flush=True,
        )
    if len(rows) > 1:
        print(
            f"peak at {rows[-1]['tasks']} / at {rows[0]['tasks']} tasks: {rows[-1]['peak_mb'] / rows[0]['peak_mb']:.2f}x"
        )


if __name__ == "__main__":
    main()
