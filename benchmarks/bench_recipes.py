"""Which per-round training recipe makes the experiment trustworthy? Random labeling under each recipe.

Run ``detector-al simulate DATASET --variants random --recipe R --out runs/<name>/recipe-R`` for each recipe
(:data:`detector_al.simulation.experiment.RECIPES`), with the same seeds; then this script reads the results and prints,
per recipe, on the **val** split (the test split is not used to choose anything):

* the random curve: mAP50 per budget, mean [95 % interval] over seeds;
* ``rising``: seeds whose curve rises at every round (more labels never lower the mAP50);
* ``spread``: the seed-to-seed standard deviation of mAP50, averaged over the rounds after round 0;
* ``s/round``: the mean wall time of a round (scoring + training + evaluation).

The recipe to keep: rising on every seed, then the smallest spread for its cost.

Usage: ``python benchmarks/bench_recipes.py runs/bccd --out docs/recipes_bccd.json``
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from detector_al.simulation.report import curves, plot_learning_curves, summarise


def recipe_row(results: dict, metric: str = "val_map50") -> dict:
    by_seed = curves(results, metric).get("random", {})
    rising = sum(all(b > a for a, b in itertools.pairwise(c.values())) for c in by_seed.values())
    budgets = sorted({n for c in by_seed.values() for n in c})
    spread = [np.std([c[n] for c in by_seed.values() if n in c], ddof=1) for n in budgets[1:]]
    runs = sorted((r for r in results["runs"] if r["variant"] == "random"), key=lambda r: r["elapsed_s"])
    rounds = [b["elapsed_s"] - a["elapsed_s"] for a, b in itertools.pairwise(runs) if b["round"] > 0]
    return {
        "curve": {n: summarise(results, metric)["random"][n] for n in budgets},
        "rising": rising,
        "seeds": len(by_seed),
        "spread": float(np.mean(spread)) if spread else float("nan"),
        "seconds_per_round": float(np.median(rounds)) if rounds else float("nan"),
    }


def choose(table: dict) -> str:
    """Most seeds rising at every round, then the smallest spread, then the cheapest."""
    return min(table, key=lambda r: (-table[r]["rising"], round(table[r]["spread"], 3), table[r]["seconds_per_round"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path, help="folder holding recipe-<name>/results.json")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    table = {}
    files = {f.parent.name.removeprefix("recipe-"): f for f in sorted(args.root.glob("recipe-*/results.json"))}
    for name, f in files.items():
        table[name] = row = recipe_row(json.loads(f.read_text()))
        curve = "  ".join(f"{n}: {m:.3f} [{lo:.3f}, {hi:.3f}]" for n, (m, lo, hi) in row["curve"].items())
        print(
            f"{f.parent.name.removeprefix('recipe-'):14s} rising {row['rising']}/{row['seeds']}  "
            f"spread {row['spread']:.3f}  {row['seconds_per_round']:.0f} s/round  val mAP50 {curve}"
        )
    if table:
        print(f"chosen: {choose(table)}")
    if args.out:
        args.out.write_text(json.dumps({"chosen": choose(table), "recipes": table}, indent=1))
        runs = [r | {"variant": name} for name, f in files.items() for r in json.loads(f.read_text())["runs"]]
        plot_learning_curves({"runs": runs}, args.out.with_suffix(".png"), "val", None, "Random labeling per recipe")


if __name__ == "__main__":
    main()
