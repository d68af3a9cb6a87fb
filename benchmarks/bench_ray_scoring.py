"""Scoring on Ray against the plain path: the same generated folder, images/s of each, and the same records.

Generates N synthetic images (the sample-data generator, seeded; ``bench_ingest.make_folder``) and runs, each as a
child process, ``detector-al score <folder>`` plainly and with ``--ray --ray-workers W`` (a local Ray) for each W of
``--workers``, ``--repeats`` times in alternating order. Printed: wall images/s (model load and, for Ray, the local
cluster's start included) and the steady images/s the command itself reports (``score ... N img in S s``), their
the rate once Ray's first results arrived (the cluster, the actors and their models started: Ray's fixed cost,
logged by the command), their ratio to the plain path's (mean and range over repeats), and the record check: every image's decision and rank the
same, the largest score difference (float noise between processes: thread counts change the order of sums).

With ``--ray-address`` the Ray runs join that cluster instead (on a GPU machine: the GPU's utilisation is sampled
with ``nvidia-smi`` while each run works, and printed).

Usage: ``python benchmarks/bench_ray_scoring.py [--model W] [--images 1000] [--workers 1,2] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import make_folder


def run_score(model: str, folder: Path, out: Path, extra: list[str]) -> tuple[float, float, float, float | None]:
    """``(wall seconds, steady img/s, seconds before Ray's first results (0 for the plain path), mean GPU
    utilisation or None)`` of one ``detector-al score`` run."""
    cmd = [sys.executable, "-m", "detector_al", "score", str(folder), "-m", model, "--out", str(out), *extra]
    util: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            try:
                q = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
                util.extend(float(x) for x in subprocess.run(q, capture_output=True, text=True).stdout.split())
            except (OSError, ValueError):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    if shutil.which("nvidia-smi"):
        sampler.start()
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    done.set()
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    m = re.search(r"(\d+) img in ([\d.]+) s", res.stderr + res.stdout)
    steady = int(m.group(1)) / float(m.group(2)) if m else float("nan")
    ready = re.search(r"first results after ([\d.]+) s", res.stderr)
    return wall, steady, float(ready.group(1)) if ready else 0.0, statistics.mean(util) if util else None


def compare(plain: Path, other: Path) -> tuple[int, int, float]:
    """``(images, images whose decision and rank agree, largest score difference)``."""
    a = [json.loads(x) for x in plain.read_text().splitlines()]
    b = [json.loads(x) for x in other.read_text().splitlines()]
    assert [r["image"] for r in a] == [r["image"] for r in b], "the two runs scored different images"
    same = sum((r["decision"], r["rank"]) == (s["decision"], s["rank"]) for r, s in zip(a, b, strict=True))
    diff = max((abs(r["score"] - s["score"]) for r, s in zip(a, b, strict=True) if r["score"] is not None), default=0)
    return len(a), same, diff


def main() -> None:
    from detector_al.demo.bootstrap_model import shipped_sample_weights

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="weights (default: the shipped sample-data model)")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ray-address", default=None, help="a running Ray cluster (default: a local Ray per run)")
    args = ap.parse_args()
    model = args.model or str(shipped_sample_weights())
    ray_flags = ["--ray-address", args.ray_address] if args.ray_address else ["--ray"]
    arms = {"plain": []} | {f"ray x{w}": [*ray_flags, "--ray-workers", w] for w in args.workers.split(",") if w.strip()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        make_folder(folder, args.images)
        print(f"{args.images} generated images, model {model}, {args.repeats} repeats (alternating order)")
        wall: dict[str, list[float]] = {a: [] for a in arms}
        running: dict[str, list[float]] = {a: [] for a in arms}  # img/s once Ray's first results arrived
        steady: dict[str, list[float]] = {a: [] for a in arms}
        util: dict[str, list[float]] = {a: [] for a in arms}
        for rep in range(args.repeats):
            order = list(arms) if rep % 2 == 0 else list(reversed(arms))
            for arm in order:
                w, s, ready, u = run_score(model, folder, Path(tmp) / f"{arm}.jsonl", arms[arm])
                wall[arm].append(args.images / w)
                steady[arm].append(s)
                running[arm].append(args.images / (args.images / s - ready))
                if u is not None:
                    util[arm].append(u)
                print(
                    f"  repeat {rep + 1} {arm:8s}: {args.images / w:7.1f} img/s wall, {s:7.1f} img/s steady, "
                    f"{running[arm][-1]:7.1f} img/s once running ({ready:.1f} s to Ray's first results)"
                )
        base_w, base_s = statistics.mean(wall["plain"]), statistics.mean(steady["plain"])
        base_r = statistics.mean(running["plain"])
        print(
            f"\n{'arm':8s} {'wall img/s':>20s} {'ratio':>6s} {'steady img/s':>20s} {'ratio':>6s} "
            f"{'once running':>20s} {'ratio':>6s}  records"
        )
        for arm in arms:
            n, same, diff = compare(Path(tmp) / "plain.jsonl", Path(tmp) / f"{arm}.jsonl")
            gpu = f", GPU {statistics.mean(util[arm]):.0f} %" if util[arm] else ""
            print(
                f"{arm:8s} {statistics.mean(wall[arm]):7.1f} [{min(wall[arm]):5.1f},{max(wall[arm]):5.1f}] "
                f"{statistics.mean(wall[arm]) / base_w:6.2f} {statistics.mean(steady[arm]):7.1f} "
                f"[{min(steady[arm]):5.1f},{max(steady[arm]):5.1f}] {statistics.mean(steady[arm]) / base_s:6.2f} "
                f"{statistics.mean(running[arm]):7.1f} [{min(running[arm]):5.1f},{max(running[arm]):5.1f}] "
                f"{statistics.mean(running[arm]) / base_r:6.2f}  "
                f"{same}/{n} same decision and rank, max |score diff| {diff:.2g}{gpu}"
            )


if __name__ == "__main__":
    main()
