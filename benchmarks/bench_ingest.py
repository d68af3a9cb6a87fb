"""Ingest throughput and memory: a generated folder into a real Label Studio vs `detector-al score` alone.

Generates N synthetic images (the sample-data generator, seeded), starts a local Label Studio, and runs,
each as a child process whose peak resident memory and CPU time are read from the kernel (``getrusage``):

* ``detector-al score <folder>`` (predict + score + rank, no Label Studio);
* ``detector-al ingest <folder>`` into a new project (tasks with predictions, priorities, tabs);

for each N of ``--sizes`` (default 1000, 5000, 20000), ``--runs`` times (a new project each time; the order of the
two commands alternates). Printed per run: images/s of both, the Label Studio overhead ``ingest time / score time
- 1`` (target < 10 %), both peak memories, the CPU seconds of both and of Label Studio during ingest, and ingest's
own account of its time (the writes beside the scoring, how long the scoring waited for them, the queue at the end);
per size the overhead's mean and range.

With ``--split-cores`` Label Studio runs on the last CPU and both commands on the others, as when Label Studio
serves from another machine: what is left of the overhead is ingest's own (its writes, its set-up, the queue's
requests), not Label Studio's CPU taken from the scoring.

Usage: ``python benchmarks/bench_ingest.py [--model W] [--sizes 1000,5000,20000] [--runs 3] [--split-cores]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
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


def group_processes(pid: int) -> Iterator[Path]:
    """The ``/proc`` folders of the processes in ``pid``'s process group (Label Studio's server and its children)."""
    group = os.getpgid(pid)
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.getpgid(int(proc.name)) == group:
                yield proc
        except ProcessLookupError:
            continue


def pin_process_group(pid: int, cpus: set[int]) -> None:
    """Pin every thread of the processes in ``pid``'s process group to ``cpus`` (threads made later inherit it)."""
    for proc in group_processes(pid):
        try:
            for tid in (proc / "task").iterdir():
                os.sched_setaffinity(int(tid.name), cpus)
        except (ProcessLookupError, FileNotFoundError):
            continue


def process_group_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by the processes of ``pid``'s process group (Label Studio's)."""
    total = 0.0
    for proc in group_processes(pid):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def measure(cmd: list[str], cpus: set[int] | None = None) -> tuple[float, float, float, str]:
    """Run ``cmd`` in a fresh Python helper so that its own peak RSS and CPU time are reported: (seconds, peak MB,
    CPU seconds, its output). With ``cpus``, the command runs on those CPUs only."""
    helper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], check=True, capture_output=True, text=True); "
        "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(time.perf_counter() - t, u.ru_maxrss / 1024, u.ru_utime + u.ru_stime); "
        "print(r.stdout)"
    )
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    out = subprocess.run(
        [sys.executable, "-c", helper, *cmd], check=True, capture_output=True, text=True, preexec_fn=pin
    ).stdout
    first, _, said = out.partition("\n")
    seconds, mb, cpu = first.split()
    return float(seconds), float(mb), float(cpu), said.strip()


def main() -> None:
    from detector_al.demo.bootstrap_model import ensure_bootstrap_model
    from detector_al.label_studio.local_server import LocalLabelStudio

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--sizes", default="1000,5000,20000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tasks-per-request", type=int, default=None, help="ingest's option (default: its own)")
    ap.add_argument("--split-cores", action="store_true", help="Label Studio on the last CPU, the commands on the rest")
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
            cpus = None
            if args.split_cores:
                all_cpus = sorted(os.sched_getaffinity(0))
                if len(all_cpus) < 2:
                    raise SystemExit("--split-cores needs at least 2 CPUs")
                pin_process_group(ls.proc.pid, {all_cpus[-1]})
                cpus = set(all_cpus[:-1])
                print(f"Label Studio on CPU {all_cpus[-1]}, the commands on CPUs {sorted(cpus)}", flush=True)
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
                    ls_cpu = process_group_cpu_s(ls.proc.pid)
                    if run % 2 == 0:
                        s_time, s_mb, s_cpu, _ = measure(score_cmd, cpus)
                        ls_cpu = process_group_cpu_s(ls.proc.pid)
                        i_time, i_mb, i_cpu, said = measure(ingest_cmd, cpus)
                        ls_cpu = process_group_cpu_s(ls.proc.pid) - ls_cpu
                    else:
                        i_time, i_mb, i_cpu, said = measure(ingest_cmd, cpus)
                        ls_cpu = process_group_cpu_s(ls.proc.pid) - ls_cpu
                        s_time, s_mb, s_cpu, _ = measure(score_cmd, cpus)
                    overheads.append(100 * (i_time / s_time - 1))
                    rows.append((n, n / s_time, n / i_time, s_mb, i_mb))
                    timing = next((line for line in said.splitlines() if line.startswith("time:")), "")
                    print(
                        f"{n:6d} images, run {run + 1}: score {n / s_time:6.1f} img/s ({s_mb:5.0f} MB peak)   ingest "
                        f"{n / i_time:6.1f} img/s ({i_mb:5.0f} MB peak)   Label Studio overhead {overheads[-1]:5.1f} %"
                        f"\n        CPU: score {s_cpu:.1f} s, ingest {i_cpu:.1f} s (+{i_cpu - s_cpu:.1f} s), Label Studio "
                        f"{ls_cpu:.1f} s during ingest ({1000 * ls_cpu / n:.2f} ms an image)"
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
