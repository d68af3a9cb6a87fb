"""``bench_proxy.py``'s screen over several seeds: per strategy the mean AUC of errors and the batch / left ratio with
their 95 % t intervals, the paired AUC difference to ``random``, and one named pair's paired difference.

Input: the ``--out`` JSON of each seed's ``bench_proxy.py`` run, or one file holding them as ``{"seeds": [...]}``.

Usage: ``python benchmarks/report_proxy.py docs/proxy_bccd_pretrained.json [--pair mi_aod mi_aod_unweighted]``
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def seeds_of(paths: list[Path]) -> list[dict]:
    out = []
    for p in paths:
        doc = json.loads(p.read_text())
        out += doc.get("seeds", [doc])
    return out


def main() -> None:
    from detector_al.simulation.report import t_interval

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--pair", nargs=2, default=("mi_aod", "mi_aod_unweighted"), help="A B: A's AUC minus B's, paired")
    args = ap.parse_args()
    docs = seeds_of(args.files)

    def fmt(values, sign: str = "") -> str:
        m, lo, hi = t_interval(values)
        return f"{m:{sign}.3f} [{lo:{sign}.3f}, {hi:{sign}.3f}]"

    names = [n for n, row in docs[0]["strategies"].items() if not math.isnan(row["auc_errors"])]
    print(
        f"{docs[0]['dataset']}: {len(docs)} seeds (seed {[d['seed'] for d in docs]}), {docs[0]['initial']} labeled, ",
        end="",
    )
    print(f"pool {docs[0]['pool']}; use_cold_start {[d['use_cold_start'] for d in docs]}\n")
    print("| strategy | AUC err, mean [95 % t] | batch / left errors per image | AUC minus random's (paired) |")
    print("|---|---|---|---|")
    for n in names:
        auc = [d["strategies"][n]["auc_errors"] for d in docs]
        ratio = [d["strategies"][n]["ratio"] for d in docs]
        diff = [d["strategies"][n]["auc_errors"] - d["strategies"]["random"]["auc_errors"] for d in docs]
        print(f"| `{n}` | {fmt(auc)} | {fmt(ratio)} | {fmt(diff, '+')} |")
    a, b = args.pair
    diff = [d["strategies"][a]["auc_errors"] - d["strategies"][b]["auc_errors"] for d in docs]
    ratio = [d["strategies"][a]["ratio"] - d["strategies"][b]["ratio"] for d in docs]
    print(f"\n`{a}` minus `{b}`, paired: AUC {fmt(diff, '+')}; batch / left ratio {fmt(ratio, '+')}")


if __name__ == "__main__":
    main()
