"""CEAL's confidence threshold: box precision and coverage of the auto-accepted images, over a grid.

CEAL (:func:`~detector_al.policy.ceal.auto_accept`) accepts an image when every shown box has ``conf_b >=
min_confidence`` and no anchor sits in the ambiguous band ``band_low <= max_c p_ic < 0.25`` (a likely missed
object). This takes the models a ``detector-al simulate`` run
trained (every model that pre-annotated a round: all rows but each arm's last), scores a labeled split those
models never trained on (``val`` to choose, ``test`` to confirm) and prints, for each ``(band_low, min_confidence)`` of the
grid (the other tests kept): images accepted over images scored (coverage), pseudo boxes, box precision (a box is right
when matched one to one, IoU >= 0.5, to a true box of its class) with its 95 % Wilson interval, the true boxes of
the accepted images the pseudo-labels miss (taught as background), and the share of accepted images exactly right.

The chosen setting is the one of highest coverage whose pooled box precision is at least ``--target`` (0.95,
issue #30) over at least ``--min-boxes`` pseudo boxes (fewer tell nothing); ties: the higher ``min_confidence``.

Usage: ``python benchmarks/bench_ceal_threshold.py RUN_DIR [RUN_DIR ...] --split val [--models-per-run N]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MIN_CONFIDENCE = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BAND_LOW = (0.1, 0.15, 0.2)
GRID = [(b, t) for b in BAND_LOW for t in MIN_CONFIDENCE]


def decision_models(run_dir: Path) -> list[tuple[Path, int]]:
    """``(weights, round)`` of every model of ``run_dir/results.json`` that pre-annotated a round (distinct files)."""
    rows = json.loads((run_dir / "results.json").read_text())["runs"]
    last = {}
    for r in rows:
        key = (r["seed"], r["variant"])
        last[key] = max(last.get(key, 0), r["round"])
    out = {}
    for r in rows:
        if r["round"] < last[(r["seed"], r["variant"])] and r.get("weights") and Path(r["weights"]).exists():
            out.setdefault(Path(r["weights"]), r["round"])
    return sorted(out.items(), key=lambda x: str(x[0]))


def main() -> None:
    from dataclasses import replace

    from detector_al.io.images import list_images
    from detector_al.io.yolo_format import read_yolo_labels
    from detector_al.model.detector import Detector
    from detector_al.policy.ceal import CealConfig
    from detector_al.policy.ceal_calibration import accepted_boxes
    from detector_al.policy.formulas.proportions import wilson_interval

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="simulate output folders (results.json, dataset/)")
    ap.add_argument("--split", default="val", choices=("val", "test"))
    ap.add_argument("--imgsz", type=int, default=None, help="default: the run's")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--min-boxes", type=int, default=50)
    ap.add_argument("--models-per-run", type=int, default=0, help="0: every model")
    args = ap.parse_args()

    base = CealConfig()
    print(
        f"CEAL grid: band_low {BAND_LOW} x min_confidence {MIN_CONFIDENCE}; split {args.split}; box right at IoU >= 0.5"
    )
    print(f"(shipped: band_low {base.band_low}, min_confidence {base.min_confidence})")
    for run in args.runs:
        imgsz = args.imgsz or json.loads((run / "results.json").read_text())["config"]["imgsz"]
        images = run / "dataset" / "images" / args.split
        labels = run / "dataset" / "labels" / args.split
        paths = list_images(images)
        models = decision_models(run)
        if args.models_per_run:
            models = models[: args.models_per_run]
        counts = {bt: np.zeros(6, int) for bt in GRID}  # images, accepted, boxes, right, missed truth, exact
        for i, (weights, _) in enumerate(models, 1):
            det = Detector.load(weights, conf=0.05, imgsz=imgsz)
            for path, pred in zip(paths, det.predict([str(p) for p in paths]), strict=True):
                if not pred.ok:
                    continue
                truth = read_yolo_labels(labels / f"{path.stem}.txt", pred.width, pred.height)
                for b, t in GRID:
                    c = counts[(b, t)]
                    c[0] += 1
                    right, boxes = accepted_boxes(pred, truth, replace(base, band_low=b, min_confidence=t))
                    if boxes:  # accepted (an image without a box is never accepted)
                        c[1:] += (1, boxes, right, len(truth) - right, int(right == boxes == len(truth)))
            print(f"  {run.name}: model {i}/{len(models)} scored ({len(paths)} {args.split} images)", flush=True)
        print(f"\n### {run.name}: {len(models)} models x {len(paths)} {args.split} images\n")
        print(
            "| band_low | min_confidence | coverage | pseudo boxes | box precision [95 %] | true boxes missed | exact |"
        )
        print("|---|---|---|---|---|---|---|")
        chosen, best = None, -1
        for b, t in GRID:
            n, acc, boxes, right, missed, exact = (int(v) for v in counts[(b, t)])
            lo, hi = wilson_interval(right, boxes)
            prec = right / boxes if boxes else float("nan")
            if boxes >= args.min_boxes and prec >= args.target and acc >= best:
                chosen, best = (b, t), acc
            print(
                f"| {b:g} | {t:g} | {acc}/{n} ({acc / max(n, 1):.3f}) | {boxes} | {prec:.3f} [{lo:.3f}, {hi:.3f}] | "
                f"{missed} | {exact}/{acc} |"
            )
        print(
            f"\nhighest coverage with box precision >= {args.target} over >= {args.min_boxes} boxes "
            f"(band_low, min_confidence): {chosen}"
        )


if __name__ == "__main__":
    main()
