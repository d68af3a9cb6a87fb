"""Ingest throughput and memory: a generated folder into a real Label Studio vs `detector-al score` alone.

Generates N synthetic images (the sample-data generator, seeded), starts a local Label Studio, and runs,
each as a child process whose peak resident memory is read from the kernel (``ru_maxrss``):

* ``detector-al score <folder>`` (predict + score + rank, no Label Studio);
* ``detector-al ingest <folder>`` into a new project (tasks with predictions, priorities, tabs);

for each N of ``--sizes`` (default 1000, 5000, 20000), ``--runs`` times (a new project each time; the order of the
two commands alternates). Printed per run: images/s of both, the Label Studio overhead ``ingest time / score time
- 1`` (target < 10 %), both peak memories, and ingest's own account of its time (the writes beside the scoring,
how long the scoring waited for them, the queue at the end); per size the overhead's mean and range.

Usage: ``python benchmarks/bench_ingest.py [--model W] [--sizes 1000,5000,20000] [--runs 3]``
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def make_folder(folder: Path, n: int, seed: int = 7) -> None:
    import numpy as np

    from detector_al.demo.sample_data import make_scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kinds = ["easy", "cluttered", "rare", "small", "occluded"]
    for i in range(n):
        sub = folder / f"part{i // 500:03d}"
        sub.mkdir(exist_ok=True)
        make_scene(rng, kinds[i % 5]).image.save(sub / f"img_{i:05d}.jpg", quality=85)


def measure(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd`` in a fresh Python helper so that its own peak RSS is reported; also its output."""
    helper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], check=True, capture_output=True, text=True); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); "
        "print(r.stdout)"
    )
    out = subprocess.run([sys.executable, "-c", helper, *cmd], check=True, capture_output=True, text=True).stdout
    first, _, said = out.partition("\n")
    seconds, mb = first.split()
    return float(seconds), float(mb), said.strip()


def main() -> None:
    from detector_al.demo.bootstrap_model import ensure_bootstrap_model
    from detector_al.label_studio.local_server import LocalLabelStudio

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--sizes", default="1000,5000,20000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tasks-per-request", type=int, default=None, help="ingest's option (default: its own)")
    args = ap.parse_args()
    weights = args.model or str(ensure_bootstrap_model())
    sizes = [int(s) for s in args.sizes.split(",")]
    py = [sys.executable, "-m", "detector_al"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = tmp / "files"
        ls = LocalLabelStudio(tmp / "ls", files_root=files)
        template = Path(".cache/ls-template")
        if template.exists():
            ls.copy_from(template)
        with ls:
            rows = []
            for n in sizes:
                folder = files / f"gen{n}"
                make_folder(folder, n)
                overheads = []
                for run in range(args.runs):
                    score_cmd = [*py, "score", str(folder), "--model", weights, "--out", str(tmp / f"score{n}.jsonl")]
                    ingest_cmd = [
                        *py,
                        "ingest",
                        str(folder),
                        "--model",
                        weights,
                        "--ls-url",
                        ls.url,
                        "--api-key",
                        ls.token,
                        "--project-title",
                        f"bench {n} run {run}",
                        "--ls-files-root",
                        str(files),
                        "--store",
                        str(tmp / f"ingest{n}-{run}.sqlite3"),
                    ]
                    if args.tasks_per_request:
                        ingest_cmd += ["--tasks-per-request", str(args.tasks_per_request)]
                    if run % 2 == 0:
                        s_time, s_mb, _ = measure(score_cmd)
                        i_time, i_mb, said = measure(ingest_cmd)
                    else:
                        i_time, i_mb, said = measure(ingest_cmd)
                        s_time, s_mb, _ = measure(score_cmd)
                    overheads.append(100 * (i_time / s_time - 1))
                    rows.append((n, n / s_time, n / i_time, s_mb, i_mb))
                    timing = next((line for line in said.splitlines() if line.startswith("time:")), "")
                    print(
                        f"{n:6d} images, run {run + 1}: score {n / s_time:6.1f} img/s ({s_mb:5.0f} MB peak)   ingest "
                        f"{n / i_time:6.1f} img/s ({i_mb:5.0f} MB peak)   Label Studio overhead {overheads[-1]:5.1f} %"
                        f"\n        ingest {timing}",
                        flush=True,
                    )
                print(
                    f"{n:6d} images: overhead mean {sum(overheads) / len(overheads):.1f} % "
                    f"[{min(overheads):.1f}, {max(overheads):.1f}] over {len(overheads)} runs (target < 10 %)",
                    flush=True,
                )
                shutil.rmtree(folder)
    if len(rows) >= 2:
        print(
            f"ingest peak memory growth {rows[0][0]} -> {rows[-1][0]} images: {rows[-1][4] - rows[0][4]:.0f} MB "
            "(target < 150 MB)"
        )


if __name__ == "__main__":
    main()
