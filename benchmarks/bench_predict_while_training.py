"""What a retraining costs the annotator who opens a task meanwhile: ``POST /predict`` latency of one task while a
training process shares the cores, at the niceness the backend gives it (``RetrainConfig.niceness``) and at 0.

Since ``TRAIN_EVERY`` retrains after each batch by default, a training runs for minutes while annotators label. The
backend (``detector-al serve`` on the shipped sample weights) answers single-task /predict requests, each a pool image
it has not seen (no cache), in blocks that alternate three conditions: no training, a fine-tuning of the same weights
on the sample data (``train_detector`` in :func:`~detector_al.model.training.run_in_subprocess`, as the retraining
runs it) at niceness 0, and the same at the backend's niceness. Each block's training is started, its first epoch
awaited, then the block's requests are timed and the training is cancelled.

Prints each condition's median latency, and the per-block ratio (condition / idle, paired by block) as a median with
its range over the blocks.

Usage: ``python benchmarks/bench_predict_while_training.py [--blocks 5] [--requests 20] [--imgsz 256]``
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("YOLO_VERBOSE", "False")  # the trainings' progress bars would bury the results


def train_until_cancelled(
    weights: str, out: Path, imgsz: int, niceness: int, started: threading.Event, cancel: threading.Event
) -> None:
    """Fine-tune ``weights`` on the sample data as a retraining does (a spawned process at ``niceness``); ``started``
    is set when an epoch ends; it runs until ``cancel``."""
    from detector_al.model.training import TrainConfig, TrainingCancelled, run_in_subprocess, train_detector

    cfg = TrainConfig(epochs=100, imgsz=imgsz, base=weights, lr0=0.0002, warmup_epochs=0)
    data = str(REPO / "sample_data" / "data.yaml")
    with contextlib.suppress(TrainingCancelled):
        run_in_subprocess(
            train_detector, data, str(out), cfg, on_epoch=lambda e, n: started.set(), cancel=cancel, niceness=niceness
        )


def main() -> None:
    from detector_al.demo.bootstrap_model import ensure_bootstrap_model
    from detector_al.demo.run import ChildServer
    from detector_al.label_studio.local_server import free_port
    from detector_al.pipelines.retrain import RetrainConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--requests", type=int, default=20, help="single-task requests per condition and block")
    ap.add_argument("--imgsz", type=int, default=256, help="the training's image size")
    args = ap.parse_args()
    niceness = RetrainConfig().niceness
    weights = str(ensure_bootstrap_model())
    root = REPO / "sample_data" / "images"
    images = itertools.cycle(sorted(root.rglob("*.jpg")))  # 420 images: none repeats in the default run
    config = (REPO / "sample_data" / "label_config.xml").read_text()
    url = f"http://127.0.0.1:{free_port()}"
    # each condition's training niceness (None: no training)
    conditions = {"idle": None, "training, niceness 0": 0, f"training, niceness {niceness}": niceness}
    times: dict[str, list[list[float]]] = {c: [] for c in conditions}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MODEL_DIR": f"{tmp}/models", "LOCAL_FILES_DOCUMENT_ROOT": str(root), "TRAIN_EVERY": "0"}
        port = url.rsplit(":", 1)[1]
        cmd = [sys.executable, "-m", "detector_al", "serve", "--model", weights, "--port", port]
        # in this process's session, so in the CPU scheduling group (autogroup) of the trainings this process starts,
        # as the backend's own training processes are in its
        server = ChildServer(cmd, env, url, Path(tmp) / "backend.log", own_session=False)
        session = requests.Session()

        def predict_one() -> float:
            body = {
                "tasks": [{"id": 1, "data": {"image": str(next(images))}}],
                "label_config": config,
                "project": "1.1",
            }
            t = time.perf_counter()
            session.post(f"{url}/predict", json=body, timeout=120).raise_for_status()
            return time.perf_counter() - t

        try:
            server.wait_ready()
            for _ in range(3):
                predict_one()  # warm-up
            for block in range(args.blocks):
                order = list(conditions) if block % 2 == 0 else list(conditions)[::-1]  # none always goes first
                for name in order:
                    cancel, started = threading.Event(), threading.Event()
                    trainer = None
                    nice = conditions[name]
                    if nice is not None:
                        out = Path(tmp) / f"run-{block}-{nice}"
                        trainer = threading.Thread(
                            target=train_until_cancelled, args=(weights, out, args.imgsz, nice, started, cancel)
                        )
                        trainer.start()
                        if not started.wait(600):
                            raise RuntimeError("the training did not finish an epoch in 10 minutes")
                    times[name].append([predict_one() for _ in range(args.requests)])
                    if trainer is not None:
                        cancel.set()
                        trainer.join()
                    print(f"block {block + 1}/{args.blocks} {name:24s} median "
                          f"{1000 * statistics.median(times[name][-1]):6.1f} ms", flush=True)  # fmt: skip
        finally:
            server.stop()
    print(f"\n/predict of one task ({args.blocks} blocks x {args.requests} requests, {os.cpu_count()} CPU cores)")
    idle = [statistics.median(b) for b in times["idle"]]
    for name in conditions:
        med = statistics.median(t for b in times[name] for t in b)
        line = f"{name:24s} median {1000 * med:7.1f} ms"
        if name != "idle":
            ratios = sorted(statistics.median(b) / i for b, i in zip(times[name], idle, strict=True))
            line += f"   / idle, by block: median {statistics.median(ratios):.2f} [{ratios[0]:.2f}, {ratios[-1]:.2f}]"
        print(line)


if __name__ == "__main__":
    main()
