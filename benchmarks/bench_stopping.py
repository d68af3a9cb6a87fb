"""Where the stopping signal fires against where the learning curve flattens, from a finished simulation.

For every run (variant, seed) of ``simulate``'s results, the round models predict a fixed stop set: 50 pool images
that run never labeled, drawn with the run's seed. The agreement of consecutive models (box F1 at IoU 0.5,
:func:`detector_al.signals.stopping.agreement`) gives, for each threshold and patience, the labels at which the signal
fires (:func:`detector_al.signals.stopping.stopping_state`); the curve **flattens** at the first round whose val mAP50 reaches
95 % of the run's final val mAP50 (val chooses; test is reported beside). Printed per setting: how often the signal
fired, the labels at the signal minus the labels at the flattening (paired per run, mean [95 % interval]; a signal
that never fires counts as one round past the last), and the test mAP50 lost by stopping there.

    python benchmarks/bench_stopping.py runs/time-bccd --out docs/stopping_bccd.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from detector_al.model.detector import Detector
from detector_al.policy.settings import POLICY, SCORER_CONF
from detector_al.signals.stopping import agreement, stopping_state
from detector_al.simulation.report import t_interval

THRESHOLDS = (0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
PATIENCES = (1, 2)


def stop_boxes(weights: str, images: list[Path], imgsz: int) -> list:
    det = Detector.load(weights, conf=SCORER_CONF, imgsz=imgsz)
    return [
        p.detections[p.detections.confidence >= POLICY.score_threshold] for p in det.predict([str(i) for i in images])
    ]


def runs_of(results: dict) -> dict[tuple[str, int], list[dict]]:
    out: dict[tuple[str, int], list[dict]] = {}
    for r in results["runs"]:
        out.setdefault((r["variant"], r["seed"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["round"]) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sim", type=Path, help="a simulate --out folder (results.json, dataset/, trainings/)")
    ap.add_argument("--size", type=int, default=50)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    results = json.loads((args.sim / "results.json").read_text())
    imgsz = results["config"]["imgsz"]
    pool = sorted((args.sim / "dataset" / "images" / "pool").iterdir())
    per_run = {}
    rounds = results["config"]["rounds"]
    for (variant, seed), rows in runs_of(results).items():
        if len(rows) != rounds + 1 or not all(Path(r["weights"]).is_file() for r in rows):
            continue  # unfinished, or its trainings are gone
        labeled = set(Path(p).name for r in rows for p in r["chosen"])
        free = [p for p in pool if p.name not in labeled]
        rng = np.random.default_rng(seed)
        stop = [free[i] for i in sorted(rng.choice(len(free), size=min(args.size, len(free)), replace=False))]
        boxes = [stop_boxes(r["weights"], stop, imgsz) for r in rows]
        agree = [agreement(a, b) for a, b in itertools.pairwise(boxes)]
        per_run[f"{variant}/{seed}"] = {
            "labeled": [r["labeled"] for r in rows],
            "val_map50": [r["val_map50"] for r in rows],
            "map50": [r["map50"] for r in rows],
            "agreement": agree,
        }
        print(f"{variant:>22} seed {seed}: agreement {', '.join(f'{a:.3f}' for a in agree)}; val mAP50 "
              f"{', '.join(f'{m:.3f}' for m in per_run[f'{variant}/{seed}']['val_map50'])}")  # fmt: skip
    table = []
    print(
        "\n| threshold | patience | fired | labels at signal minus at 95 % of final val mAP50 | val mAP50 lost | test mAP50 lost |"
    )
    print("|---|---|---|---|---|---|")
    for th in THRESHOLDS:
        for pat in PATIENCES:
            deltas, lost, val_lost, fired = [], [], [], 0
            for run in per_run.values():
                lab, val, test, agree = run["labeled"], run["val_map50"], run["map50"], run["agreement"]
                flat = next(i for i, v in enumerate(val) if v >= 0.95 * val[-1])
                at = next((k + 1 for k in range(len(agree)) if stopping_state(agree[: k + 1], th, pat)["stop"]), None)
                fired += at is not None
                step = lab[-1] - lab[-2] if len(lab) > 1 else 0
                stop_labels = lab[at] if at is not None else lab[-1] + step
                deltas.append(stop_labels - lab[flat])
                lost.append(test[-1] - test[at] if at is not None else 0.0)
                val_lost.append(val[-1] - val[at] if at is not None else 0.0)
            d, loss, vloss = t_interval(deltas), t_interval(lost), t_interval(val_lost)
            row = {"threshold": th, "patience": pat, "fired": fired, "runs": len(per_run), "delta": d}
            table.append(row | {"val_lost": vloss, "lost": loss})
            cells = [f"{th}", f"{pat}", f"{fired}/{len(per_run)}", f"{d[0]:+.1f} [{d[1]:+.1f}, {d[2]:+.1f}]"]
            cells += [f"{x[0]:+.3f} [{x[1]:+.3f}, {x[2]:+.3f}]" for x in (vloss, loss)]
            print("| " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps({"runs": per_run, "settings": table}, indent=1))


if __name__ == "__main__":
    main()
