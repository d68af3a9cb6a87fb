"""Inference cost of the adapter (two views + per-anchor arrays + embedding) vs a bare ultralytics predict.

Measured in one run, on the same images and the same weights:

* images/s of ``YOLO.predict`` (one view, NMS, boxes only): the baseline;
* images/s of ``Detector.predict`` (image + flip in one batch, per-anchor probabilities, embedding);
* images/s of scoring on top of the adapter (``mi_aod`` score + CEAL test + diverse selection);
* the ratios. Targets: adapter <= 2.2x the bare pass; scoring adds <= 5 % to the adapter.

Usage: ``python benchmarks/bench_inference.py [--model W] [--images DIR] [--n 160] [--batch 16] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    from ultralytics import YOLO

    from detector_al.demo.bootstrap_model import ensure_bootstrap_model
    from detector_al.detector import Detector
    from detector_al.images import list_images
    from detector_al.pseudo_labels import CealConfig
    from detector_al.ranking import assign_queue, score_predictions
    from detector_al.uncertainty import get_strategy

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="weights (default: the bootstrap model)")
    ap.add_argument("--images", type=Path, default=Path("sample_data/images/pool"))
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--conf", type=float, default=0.05)
    args = ap.parse_args()

    weights = args.model or str(ensure_bootstrap_model())
    paths = [str(p) for p in list_images(args.images)[: args.n]]
    det = Detector.load(weights, conf=args.conf)
    bare = YOLO(weights, task="detect")
    kw = dict(imgsz=det.imgsz, batch=args.batch, conf=args.conf, iou=det.iou, verbose=False, device="cpu")
    bare.predict(paths[: args.batch], **kw)  # warm-up (fuses, builds the predictor)
    list(det.predict(paths[: args.batch], batch_size=args.batch))

    t_bare = best_of(lambda: bare.predict(paths, **kw), args.repeats)
    records = []
    t_adapter = best_of(
        lambda: records.__setitem__(slice(None), list(det.predict(paths, batch_size=args.batch))), args.repeats
    )
    strategy, ceal = get_strategy("mi_aod"), CealConfig()

    def score_only():
        scored = list(score_predictions(records, strategy, 0, ceal))
        assign_queue(scored, budget=max(1, len(scored) // 10))

    t_score = best_of(score_only, args.repeats)
    n = len(paths)
    print(
        f"images: {n} from {args.images} at {det.imgsz} px, batch {args.batch}, model {weights}, "
        f"{det.num_anchors} anchors x {len(det.names)} classes, best of {args.repeats}"
    )
    print(f"bare ultralytics predict : {n / t_bare:8.1f} img/s")
    print(f"adapter (two views)      : {n / t_adapter:8.1f} img/s")
    print(f"adapter + scoring        : {n / (t_adapter + t_score):8.1f} img/s")
    print(f"ratio adapter / bare     : {t_adapter / t_bare:8.2f}x  (target <= 2.2x)")
    print(f"scoring overhead         : {100 * t_score / t_adapter:8.2f} %  (target <= 5 %)")
    per_image = np.array([len(r.detections) for r in records])
    print(f"boxes per image (conf >= {args.conf}): mean {per_image.mean():.1f}")


if __name__ == "__main__":
    main()
