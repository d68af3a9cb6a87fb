"""The annotator-time program's report over the seeds that finished: every arm's tables, the cost-model sensitivity
and the plot, from one or more ``detector-al simulate`` result folders (a running experiment's too) or their
``results.json`` files (the rows docs/ publishes).

A seed counts once every variant has every round; unfinished seeds are left out and counted.

Usage: ``python benchmarks/report_annotator_time.py runs/bccd runs/aquarium runs/sample [--arm entropy+cold+ceal]
[--versus entropy+cold+ceal]`` (``--versus``: also every arm's paired ratio of hours to that arm's, and with several
folders that ratio pooled over all their (dataset, seed) pairs: what a default is chosen on).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def finished(results: dict) -> dict:
    """``results`` restricted to the seeds whose every variant reached the config's last round."""
    cfg = results["config"]
    want = {(v, r) for v in cfg["variants"] for r in range(cfg["rounds"] + 1)}
    seeds = {r["seed"] for r in results["runs"]}
    done = {s for s in seeds if want <= {(r["variant"], r["round"]) for r in results["runs"] if r["seed"] == s}}
    return {**results, "runs": [r for r in results["runs"] if r["seed"] in done]}


def main() -> None:
    from detector_al.policy.annotator_cost import CostModel
    from detector_al.simulation.report import on_split, report
    from detector_al.simulation.time_report import (
        plot_annotator_time,
        pooled_ratio,
        sensitivity_table,
        time_report,
        versus_table,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="simulate --out folders (each with results.json), or such files")
    ap.add_argument("--arm", default="entropy+cold+ceal", help="the arm of the sensitivity table (the shipped one)")
    ap.add_argument("--versus", default=None, help="also the paired ratio of every arm's hours to this arm's")
    ap.add_argument("--plots", type=Path, default=None, help="write <name>.png plots into this folder")
    ap.add_argument(
        "--split", default="test", choices=("test", "val"), help="val: every mAP read from val (to tune on)"
    )
    args = ap.parse_args()
    cost = CostModel()
    done = []
    for folder in args.runs:
        published = not folder.is_dir()  # a results file (the rows docs/ publishes), else a run's folder
        file = folder if published else folder / "results.json"
        raw = on_split(json.loads(file.read_text()), args.split)  # the tables say test
        res = finished(raw)
        seeds = sorted({r["seed"] for r in res["runs"]})
        left = sorted({r["seed"] for r in raw["runs"]} - set(seeds))
        cfg = raw["config"]
        split = " -- **every mAP below is val's** (the tables say test)" if args.split == "val" else ""
        print(f"\n## {folder.stem}: seeds {seeds} finished (unfinished, left out: {left or 'none'}){split}\n")
        print(
            f"base {cfg['base']}, {cfg['initial']} initial images, +{cfg['budget']} a round, {cfg['rounds']} rounds, "
            f"{cfg['imgsz']} px, round 0 {cfg['epochs_initial']} epochs at lr0 {cfg['lr0']}, then at most "
            f"{cfg['max_epochs']} epochs a round ({cfg['recipe']}: {raw.get('recipe', 'lr0 0.001 before issue #30')})\n"
        )
        if not seeds:
            continue
        done.append(res)
        print(report(res))
        print("\n" + time_report(res, cost))
        print(f"\n**Sensitivity to the cost model** (`{args.arm}`; modelled)\n")
        print(sensitivity_table(res, args.arm, cost))
        if args.versus:
            print(f"\n**Against `{args.versus}`** (modelled hours to reach scratch's full-budget mAP50)\n")
            print(versus_table(res, args.versus, cost))
        if args.plots:
            args.plots.mkdir(parents=True, exist_ok=True)
            name = (  # a file: simulate_<name>.json
                f"annotator_time_{folder.stem.removeprefix('simulate_')}"
                if published
                else f"annotator_time_pretrained_{folder.name}"
            )
            path = plot_annotator_time(res, cost, args.plots / f"{name}.png")
            print(f"\nplot: {path}")
    if args.versus and len(done) > 1:
        names = ", ".join(f.stem for f in args.runs)
        print(f"\n## Pooled over {names}: hours to reach scratch's full-budget mAP50 / `{args.versus}`'s (modelled)\n")
        arms = sorted({r["variant"] for res in done for r in res["runs"]} - {args.versus})
        print("| arm | ratio (paired within each dataset) | pairs |\n|---|---|---|")
        for arm in arms:
            (m, lo, hi), n = pooled_ratio(done, arm, args.versus, cost)
            print(f"| `{arm}` | {m:.2f} [{lo:.2f}, {hi:.2f}] | {n} |")


if __name__ == "__main__":
    main()
