"""The batch size's report: hours to reach plain labeling's full-budget mAP50 at each batch, paired by seed, per
dataset and pooled over datasets (each (dataset, seed) one pair), on val (to choose) and test (to confirm).

Reads merged results (``docs/simulate_<dataset>_pretrained_batch.json``: the arms at batch 20 as they ran, the others
renamed ``<arm> b<N>``, their rounds scaled to the batch-20 run's). Where a control (the ``oracle``) ran at a batch,
it is compared with both arms at that batch. An arm run below the unsuffixed arms' batch is compared with that arm
at it (the first rows) and, where another batch ran between them, with both arms at the next batch up (batch 5 with
batch 10). A row is printed only where both of its arms ran.

Usage: ``python benchmarks/report_batch_size.py docs/simulate_{bccd,aquarium,sample}_pretrained_batch.json
--tune bccd aquarium`` (``--tune``: the datasets pooled to choose on; the file name's ``simulate_<dataset>_`` names
them).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ARMS = ("entropy+cold+ceal", "random")
CONTROLS = ("oracle",)
"""Arms that read the truth (what an order could be worth at all), compared with both arms at the same batch."""


def dataset_name(path: Path) -> str:
    """``simulate_<dataset>_...json`` -> ``<dataset>``."""
    m = re.match(r"simulate_([^_]+)_", path.name)
    return m.group(1) if m else path.stem


def main() -> None:
    from detector_al.simulation.report import _fmt, on_split
    from detector_al.simulation.time_report import pooled_ratio

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path, nargs="+", help="merged results JSON files, one per dataset")
    ap.add_argument("--tune", nargs="*", default=[], help="the datasets pooled to choose on")
    args = ap.parse_args()
    data = {dataset_name(p): json.loads(p.read_text()) for p in args.results}
    batches = sorted({int(m) for d in data.values() for r in d["runs"] for m in re.findall(r" b(\d+)$", r["variant"])})
    arms = {r["variant"] for d in data.values() for r in d["runs"]}
    pairs = [(f"{a} b{b}", a) for b in batches for a in ARMS] + [
        (f"{ARMS[0]} b{b}", f"{ARMS[1]} b{b}") for b in batches
    ]
    pairs += [(f"{c} b{b}", f"{a} b{b}") for c in CONTROLS for b in batches for a in ARMS if f"{c} b{b}" in arms]
    base_batch = {d["config"]["budget"] for d in data.values()}  # the unsuffixed arms' batch (20)
    above = {b: min(x for x in {*batches, *base_batch} if x > b) for b in batches if b < min(base_batch)}
    pairs += [(f"{a} b{b}", f"{x} b{up}") for b, up in above.items() if up in batches for a in ARMS for x in ARMS]
    pairs = [(arm, base) for arm, base in pairs if arm in arms and base in arms]
    groups = [[name] for name in data] + ([args.tune] if len(args.tune) > 1 else [])
    groups += [list(data)] if len(data) > 1 and sorted(data) != sorted(args.tune) else []
    for split in ("val", "test"):
        print(f"\n### Paired ratio of modelled hours to reach plain labeling's full-budget mAP50 ({split})\n")
        cols = [" + ".join(g) for g in groups]
        print("| arm / base | " + " | ".join(cols) + " |")
        print("|---|" + "---|" * len(cols))
        for arm, base in pairs:
            cells = []
            for g in groups:
                (m, lo, hi), n = pooled_ratio([on_split(data[d], split) for d in g], arm, base)
                cells.append(f"{_fmt((m, lo, hi), 2)} (n={n})" if n else "-")
            print(f"| `{arm}` / `{base}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
