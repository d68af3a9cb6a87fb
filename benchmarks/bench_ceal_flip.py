"""What CEAL's flip test buys: acceptance and box precision of the auto-accepted images with and without it.

CEAL (:func:`~detector_al.policy.ceal.auto_accept`) accepts an image when every shown box is confident, no anchor
sits in the ambiguous band, and the image's flip consistency (the ``mi_aod`` score between the image and its
horizontal flip) is below ``delta_t``. Only that last test needs the second view. This scores labeled images whose
labels the model never saw, and prints for each dataset: images accepted, pseudo boxes, box precision (a box is
right when matched one to one, IoU >= 0.5, to a true box of its class) with its 95 % Wilson interval, and the share
of accepted images whose pseudo-labels are exactly right (every box right, none missing), with the flip test and
without it (the other tests kept).

Usage: ``python benchmarks/bench_ceal_flip.py MODEL:IMAGES:LABELS [...] [--round 0]`` (YOLO label folders)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    from detector_al.io.images import list_images
    from detector_al.io.yolo_format import read_yolo_labels
    from detector_al.model.detector import Detector
    from detector_al.model.geometry import same_class_matches
    from detector_al.policy.ceal import CealConfig, auto_accept, consistency
    from detector_al.policy.formulas.proportions import wilson_interval

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sets", nargs="+", help="MODEL:IMAGES:LABELS")
    ap.add_argument("--round", type=int, default=0)
    args = ap.parse_args()
    cfg = CealConfig()
    print(f"CEAL round {args.round} (delta_t {cfg.threshold(args.round)}), box right at IoU >= 0.5 with its class")
    print("set | images | test | accepted | pseudo boxes | box precision [95 %] | images exactly right")
    for spec in args.sets:
        model, images, labels = spec.split(":")
        det = Detector.load(model, conf=0.05)
        paths = list_images(Path(images))
        counts = {"with flip": [0, 0, 0, 0], "without": [0, 0, 0, 0]}  # accepted, boxes, right, exact
        for path, pred in zip(paths, det.predict([str(p) for p in paths]), strict=True):
            if not pred.ok:
                continue
            truth = read_yolo_labels(Path(labels) / f"{path.stem}.txt", pred.width, pred.height)
            for name, score in (("with flip", consistency(pred)), ("without", -np.inf)):
                verdict = auto_accept(pred, score, args.round, cfg)
                if not verdict.accepted:
                    continue
                boxes = verdict.pseudo_labels
                right = same_class_matches(boxes, truth)
                c = counts[name]
                c[0] += 1
                c[1] += len(boxes)
                c[2] += right
                c[3] += int(right == len(boxes) == len(truth))
        label = f"{Path(model).parent.name}/{Path(model).name} on {images}"
        for name, (acc, boxes, right, exact) in counts.items():
            lo, hi = wilson_interval(right, boxes)
            prec = right / boxes if boxes else float("nan")
            share = exact / acc if acc else float("nan")
            print(
                f"{label} | {len(paths)} | {name} | {acc} | {boxes} | {prec:.3f} [{lo:.3f}, {hi:.3f}] | "
                f"{exact}/{acc} ({share:.2f})"
            )


if __name__ == "__main__":
    main()
