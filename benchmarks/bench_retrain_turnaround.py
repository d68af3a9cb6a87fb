"""How long "Start Training" takes in the demo: a real Label Studio, the demo's backend and project (the 240-image
sample pool ingested, the shipped weights ``sample_data/model/best.pt``), a handful of labels, then "Start Training".

Prints the seconds from the press to the job's end (what a user waits for), the seconds of each phase the backend
reported (``/health``), the job's result (labels, pseudo-labels, promoted) and, to see what the pseudo-label cap does
to the model, the mAP50 and mAP50-95 of the serving and the new weights on the sample data's test split (60 images,
never in the pool).

The labels are the queue's head as an annotator gets it, with enough of them in the validation split
(``sha256(task id) mod 5 == 0``) for a candidate to be judged on held-out labels: ``--labels`` tasks, ``--val`` of
them from the validation split.

Usage: ``python benchmarks/bench_retrain_turnaround.py [--labels 6] [--val 3] [--epochs 20] [--pseudo-ratio 2]
[--model WEIGHTS]`` (``--model``: other serving weights of the sample data's classes, e.g. a YOLOv8s fine-tuned from
the pretrained base)
(``--pseudo-ratio -1``: no cap, every CEAL-accepted image trains). Environment variables of the backend
(``TRAIN_*``) pass through.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def pick_labels(queue: list, n: int, n_val: int) -> list:
    """The first ``n_val`` validation tasks and the first ``n - n_val`` others, in queue order."""
    from detector_al.pipelines.retrain_dataset import in_validation

    val = [t for t in queue if in_validation(t.id)][:n_val]
    train = [t for t in queue if not in_validation(t.id)][: n - n_val]
    return sorted(val + train, key=queue.index)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=int, default=6)
    ap.add_argument("--val", type=int, default=3, help="of the labels, how many from the validation split")
    ap.add_argument("--epochs", type=int, default=20, help="TRAIN_EPOCHS (the demo's default: 20)")
    ap.add_argument("--tolerance", type=float, default=0.005, help="TRAIN_TOLERANCE (the demo's default)")
    ap.add_argument("--pseudo-ratio", type=float, default=None, help="TRAIN_PSEUDO_RATIO (default: the backend's)")
    ap.add_argument(
        "--model", default=None, help="the serving weights (default: the shipped sample_data/model/best.pt)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    from detector_al.demo.run import DemoConfig, _fill_project, _start_backend
    from detector_al.demo.sample_data import oracle_regions
    from detector_al.label_studio.client import LabelStudioClient
    from detector_al.label_studio.local_server import LocalLabelStudio, free_port
    from detector_al.label_studio.task_sink import QUEUE_TAB
    from detector_al.model.training import evaluate
    from detector_al.state.registry import ModelRegistry
    from detector_al.state.store import FINISHED

    sample = REPO / "sample_data"
    if args.pseudo_ratio is not None:
        os.environ["TRAIN_PSEUDO_RATIO"] = str(args.pseudo_ratio)
    tmp = Path(tempfile.mkdtemp(prefix="bench-turnaround-"))
    ls = LocalLabelStudio(tmp / "label-studio", files_root=sample)
    template = REPO / ".cache" / "ls-template"
    if (template / "label_studio.sqlite3").exists():
        ls.copy_from(template)
    backend = None
    try:
        ls.start()
        cfg = DemoConfig(
            data_dir=tmp,
            sample_data=sample,
            model=args.model or str(sample / "model" / "best.pt"),
            ls_port=ls.port,
            backend_port=free_port(),
            train_epochs=args.epochs,
            train_tolerance=args.tolerance,
        )
        client = LabelStudioClient(ls.url, ls.token)
        model_dir = tmp / "backend"
        backend, v0 = _start_backend(cfg, model_dir, ls.url, ls.token, sample, tmp / "backend.log")
        project, tab = _fill_project(cfg, client, backend.url, model_dir, v0, sample / "images" / "pool", sample)
        queue = list(client.ls.tasks.list(project=project, view=tab, fields="all"))
        chosen = pick_labels(queue, args.labels, args.val)
        for t in chosen:
            client.ls.annotations.create(id=t.id, result=oracle_regions(sample, t.data["image"].split("/")[-1]))
        ml = next(iter(client.ls.ml.list(project=project)))
        print(f"{len(queue)} tasks, {len(chosen)} labeled ({args.val} in validation); {QUEUE_TAB!r} head labeled")

        phases: list[tuple[str, float]] = []
        started = time.perf_counter()
        client.ls.ml.train(id=ml.id)
        while True:
            health = requests.get(f"{backend.url}/health", timeout=5).json()
            phase = (health.get("training") or {}).get("phase") or health.get("phase") or "?"
            if not phases or phases[-1][0] != phase:
                phases.append((phase, time.perf_counter() - started))
            jobs = requests.get(f"{backend.url}/status", timeout=5).json()["jobs"]
            if jobs and jobs[0]["status"] in FINISHED:
                break
            time.sleep(0.5)
        total = time.perf_counter() - started
        job = jobs[0]
        print(f"turnaround: {total:.1f} s ({job['status']}; {os.cpu_count()} CPUs)")
        for (name, t0), (_, t1) in zip(phases, [*phases[1:], ("end", total)], strict=True):
            print(f"  {name:<24} {t1 - t0:7.1f} s")
        detail = job.get("detail") or {}
        if isinstance(detail, str):
            import json

            detail = json.loads(detail)
        keys = ("labeled", "train_images", "val_images", "pseudo_labeled", "promoted", "validated_on")
        print(
            "  "
            + ", ".join(f"{k}={detail.get(k)}" for k in keys)
            + (f" error={job.get('error')}" if job.get("error") else "")
        )
        registry = ModelRegistry(model_dir)
        data = sample / "data.yaml"
        for name, version in (("serving before", v0), ("candidate", job.get("model_version"))):
            if version:
                m = evaluate(registry.path(version), data, "test", 256)
                print(f"  {name:<15} {version}: test mAP50 {m['map50']:.3f}, mAP50-95 {m['map50_95']:.3f}")
    finally:
        if backend is not None:
            backend.stop()
        ls.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
