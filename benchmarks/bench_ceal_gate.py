"""CEAL's gate on a backend-sized validation split: are the boxes it lets through >= 95 % right, and how many?

The backend judges each model's CEAL on its human validation split (:mod:`detector_al.pipelines.ceal_gate`): about a
fifth of the labels, so 4, 8 and 14 images at 20, 40 and 70 labels. This replays that. For every model a ``detector-al
simulate`` run trained that pre-annotated a round (as ``bench_ceal_threshold.py`` takes them), ``k`` images drawn at
random from the run's ``val`` split (``--draws`` draws per model; ``k`` of ``--k``, and all of val) are the held-out
labels; the gate judged on them (:func:`~detector_al.policy.ceal_calibration.calibrate_ceal`) decides the CEAL the model
runs with on the ``test`` split, which the gate never sees. Printed per run and ``k``: the share of model-draws judged
calibrated / unproven / unsafe / untested (the last two: off), the test images auto-accepted (coverage) and the box
precision of their pseudo-labels (right: matched one to one, IoU >= 0.5, to a true box of its class) with its 95 %
Wilson interval, the wrong pseudo boxes per model-draw (what would teach the next model wrong objects), and the share of
firing model-draws whose own test precision is below 0.95; the first row is the fixed threshold without the gate.

With ``--tune-min-boxes N [N ...]`` it first chooses the gate's ``min_boxes`` (the fewest confident held-out boxes
it judges by, :data:`~detector_al.policy.ceal_calibration.MIN_CONFIDENT_BOXES`) on val alone: each draw's ``k`` val
images judge the model and the rest of val measures what its CEAL lets through, for each ``N``; test is not read for
it.

Usage: ``python benchmarks/bench_ceal_gate.py RUN_DIR [RUN_DIR ...] [--k 4 8 14] [--draws 20] [--tune-min-boxes 0 1 3
5 8 10]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ceal_threshold import decision_models

VERDICTS = ("calibrated", "unproven", "unsafe", "untested")


def evidence_of_split(det, images: Path, labels: Path, base) -> list[dict]:
    """Each readable image's CEAL evidence under ``det`` (:func:`~detector_al.pipelines.ceal_gate.evidence_of`)."""
    from detector_al.io.images import list_images
    from detector_al.pipelines.ceal_gate import evidence_of

    paths = list_images(images)
    found = (evidence_of(pred, labels, base) for pred in det.predict([str(p) for p in paths]))
    return [e for e in found if e is not None]


def let_through(evidence: list[dict], cfg) -> tuple[int, int, int]:
    """``(images, right, boxes)``: what CEAL under ``cfg`` auto-accepts of images with this evidence (none when off)."""
    if not cfg.enabled:
        return 0, 0, 0
    per = [e[cfg.min_confidence][:2] for e in evidence]  # (right, boxes) of the auto-accepted
    return sum(b > 0 for _, b in per), sum(r for r, _ in per), sum(b for _, b in per)


def tune_min_boxes(name: str, val: list[list[dict]], args, base) -> None:
    """The val-only table of ``--tune-min-boxes``: judged on ``k`` drawn val images, measured on the rest of val."""
    from detector_al.policy.ceal_calibration import calibrate_ceal, pool_evidence
    from detector_al.policy.formulas.proportions import wilson_interval

    print(f"\n### {name}: min_boxes chosen on val (judged on k val images, measured on the rest of val)\n")
    print(
        "| min_boxes | held-out images | off | coverage | pseudo boxes | box precision [95 %] | wrong boxes per model-draw |"
    )
    print("|---|---|---|---|---|---|---|")
    for n_min in args.tune_min_boxes:
        for k in args.k:
            off = accepted = right = boxes = draws = seen = 0
            for m, v in enumerate(val):
                rng = np.random.default_rng(m)
                for _ in range(args.draws):
                    take = set(rng.choice(len(v), min(k, len(v)), replace=False).tolist())
                    gate = calibrate_ceal(*pool_evidence(v[j] for j in take), base, args.target, min_boxes=n_min)
                    cfg, rest = gate.apply(base), [e for j, e in enumerate(v) if j not in take]
                    draws, seen, off = draws + 1, seen + len(rest), off + (not cfg.enabled)
                    a, r, b = let_through(rest, cfg)
                    accepted, right, boxes = accepted + a, right + r, boxes + b
            lo, hi = wilson_interval(right, boxes)
            prec = f"{right / boxes:.3f} [{lo:.3f}, {hi:.3f}]" if boxes else "-"
            print(
                f"| {n_min} | {k} | {off / draws:.2f} | {accepted / seen:.3f} | {boxes} | {prec} | "
                f"{(boxes - right) / draws:.2f} |"
            )


def main() -> None:
    from detector_al.model.detector import Detector
    from detector_al.policy.ceal import CealConfig
    from detector_al.policy.ceal_calibration import calibrate_ceal, pool_evidence
    from detector_al.policy.formulas.proportions import wilson_interval

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="simulate output folders (results.json, dataset/)")
    ap.add_argument("--k", type=int, nargs="+", default=[4, 8, 14], help="held-out images per judgement")
    ap.add_argument("--draws", type=int, default=20, help="random draws of the k images per model")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--tune-min-boxes", type=int, nargs="*", default=[], help="choose min_boxes on val (see above)")
    args = ap.parse_args()

    base = CealConfig()
    print(f"CEAL gate: held-out val images k in {args.k} and all, {args.draws} draws per model; test split judged")
    print(f"(settings: min_confidence {base.min_confidence}; target box precision {args.target})")
    for run in args.runs:
        imgsz = json.loads((run / "results.json").read_text())["config"]["imgsz"]
        data = run / "dataset"
        models = decision_models(run)
        val, test = [], []
        for i, (weights, _) in enumerate(models, 1):
            det = Detector.load(weights, conf=0.05, imgsz=imgsz)
            val.append(evidence_of_split(det, data / "images" / "val", data / "labels" / "val", base))
            test.append(evidence_of_split(det, data / "images" / "test", data / "labels" / "test", base))
            print(f"  {run.name}: model {i}/{len(models)} scored", flush=True)
        if args.tune_min_boxes:
            tune_min_boxes(run.name, val, args, base)
        n_test = len(test[0])
        print(f"\n### {run.name}: {len(models)} models, {len(val[0])} val images (judged), {n_test} test images\n")
        print("| held-out images | calibrated / unproven / unsafe / untested | test coverage | pseudo boxes | box precision [95 %] "
              "| wrong boxes per model-draw | firing model-draws below target |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for k in [None, *args.k, "all"]:
            verdicts = dict.fromkeys(VERDICTS, 0)
            accepted = right = boxes = firing = low = 0
            draws = 0
            for m, (v, t) in enumerate(zip(val, test, strict=True)):
                rng = np.random.default_rng(m)
                for _ in range(1 if k in (None, "all") else args.draws):
                    if k is None:  # the fixed threshold, no gate
                        cfg = base
                    else:
                        take = v if k == "all" else [v[j] for j in rng.choice(len(v), min(k, len(v)), replace=False)]
                        gate = calibrate_ceal(*pool_evidence(take), base, args.target)
                        verdicts[gate.verdict] += 1
                        cfg = gate.apply(base)
                    draws += 1
                    a, r, b = let_through(t, cfg)
                    accepted, right, boxes = accepted + a, right + r, boxes + b
                    if b:
                        firing += 1
                        low += r / b < args.target
            lo, hi = wilson_interval(right, boxes)
            prec = f"{right / boxes:.3f} [{lo:.3f}, {hi:.3f}]" if boxes else "-"
            label = "no gate" if k is None else str(k)
            split = "-" if k is None else " / ".join(str(verdicts[x]) for x in VERDICTS)
            print(
                f"| {label} | {split} | {accepted}/{draws * n_test} ({accepted / (draws * n_test):.3f}) | {boxes} | "
                f"{prec} | {(boxes - right) / draws:.2f} | {low}/{firing} |"
            )


if __name__ == "__main__":
    main()
