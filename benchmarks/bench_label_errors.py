"""How well the label review finds corrupted human labels: precision and recall of the flagged images.

A known fraction of a held-out split's boxes (never trained on by ``--model``) is corrupted, each chosen box one of:
dropped (an overlooked object), class swapped, or shifted by half to one box size (badly located). The model's
review (:func:`detector_al.signals.label_errors.find_label_errors`) flags images whose score is above 0; an image is a true
positive when one of its boxes was corrupted. Random flagging of as many images has precision = the share of
corrupted images. The precision of the ``--top`` highest scores is what a reviewer reading the tab first meets.
Corruption seeds are paired across rates; 95 % t-intervals over seeds.

    python benchmarks/bench_label_errors.py --data sample_data/data.yaml --model sample_data/model/best.pt
    python benchmarks/bench_label_errors.py --data runs/time-bccd/dataset/test.yaml --model <a round's best.pt>
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from detector_al.io.yolo_format import read_yolo_labels
from detector_al.model.detector import Detector
from detector_al.model.predictions import Detections
from detector_al.policy.settings import SCORER_CONF
from detector_al.signals.label_errors import find_label_errors
from detector_al.simulation.report import t_interval

KINDS = ("drop", "swap", "shift")


def split_images(data: Path, split: str) -> list[Path]:
    data = data.resolve()
    spec = yaml.safe_load(data.read_text())
    root = Path(spec["path"]) if spec.get("path") else data.parent
    root = root if root.is_absolute() else data.parent / root
    folder = root / spec[split]
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def label_file(image: Path) -> Path:
    parts = list(image.parts)
    i = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")


def corrupt(truths: list[Detections], rate: float, n_classes: int, rng) -> tuple[list[Detections], set[int]]:
    """Corrupt ``rate`` of all boxes (at least one); returns the new labels and the corrupted images' indices."""
    where = [(i, j) for i, t in enumerate(truths) for j in range(len(t))]
    k = max(1, round(rate * len(where)))
    chosen = rng.choice(len(where), size=k, replace=False)
    out = [Detections(t.xyxy.copy(), t.confidence.copy(), t.class_id.copy()) for t in truths]
    drop: dict[int, list[int]] = {}
    hit = set()
    for c in chosen:
        i, j = where[c]
        kind = KINDS[rng.integers(len(KINDS))] if n_classes > 1 else rng.choice(["drop", "shift"])
        hit.add(i)
        if kind == "drop":
            drop.setdefault(i, []).append(j)
        elif kind == "swap":
            out[i].class_id[j] = (out[i].class_id[j] + rng.integers(1, n_classes)) % n_classes
        else:
            w, h = out[i].xyxy[j, 2:] - out[i].xyxy[j, :2]
            dx, dy = rng.uniform(0.5, 1.0, 2) * (w, h) * rng.choice([-1, 1], 2)
            out[i].xyxy[j] += np.array([dx, dy, dx, dy], np.float32)
    for i, js in drop.items():
        keep = np.setdiff1d(np.arange(len(out[i])), js)
        out[i] = out[i][keep]
    return out, hit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="YOLO data.yaml (or a split yaml whose val is the split)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", required=True)
    ap.add_argument("--imgsz", type=int, default=None)
    ap.add_argument("--rates", default="0.05,0.10")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument(
        "--top", type=int, default=10, help="precision of the highest-scored flags (what a reviewer sees first)"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    images = split_images(args.data, args.split)
    det = Detector.load(args.model, conf=SCORER_CONF, imgsz=args.imgsz)
    preds = list(det.predict([str(p) for p in images]))
    truths = [read_yolo_labels(label_file(p), q.width, q.height) for p, q in zip(images, preds, strict=True)]
    n_classes = len(det.names)
    clean = [find_label_errors(q.detections, t).score > 0 for q, t in zip(preds, truths, strict=True)]
    print(f"{len(images)} images, {sum(map(len, truths))} boxes; flagged with clean labels: {sum(clean)}")
    results = {"model": str(args.model), "images": len(images), "flagged_clean": int(sum(clean)), "rates": {}}
    print(
        f"| corrupted boxes | images corrupted (= random's precision) | flagged | precision | recall | precision of the top {args.top} |"
    )
    print("|---|---|---|---|---|---|")
    for rate in (float(r) for r in args.rates.split(",")):
        prec, rec, share, flagged_n, top = [], [], [], [], []
        for seed in range(args.seeds):
            labels, hit = corrupt(truths, rate, n_classes, np.random.default_rng(seed))
            scores = [find_label_errors(q.detections, t).score for q, t in zip(preds, labels, strict=True)]
            flagged = {i for i, s in enumerate(scores) if s > 0}
            ranked = sorted(flagged, key=lambda i: -scores[i])[: args.top]
            top.append(len(set(ranked) & hit) / max(len(ranked), 1))
            tp = len(flagged & hit)
            prec.append(tp / len(flagged) if flagged else 0.0)
            rec.append(tp / len(hit))
            share.append(len(hit) / len(images))
            flagged_n.append(len(flagged))
        row = {
            k: t_interval(v)
            for k, v in (("precision", prec), ("recall", rec), ("share", share), ("flagged", flagged_n), ("top", top))
        }
        results["rates"][str(rate)] = row

        def f(t, d=2):
            return f"{t[0]:.{d}f} [{t[1]:.{d}f}, {t[2]:.{d}f}]"

        print(
            f"| {rate:.0%} | {f(row['share'])} | {f(row['flagged'], 1)} | {f(row['precision'])} | {f(row['recall'])} | {f(row['top'])} |"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
