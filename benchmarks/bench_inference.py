"""Inference cost of the adapter vs a bare ultralytics predict, with the default strategy and with ``mi_aod``.

Measured in one run, on the same images and the same weights, the arms interleaved (best of ``--repeats``):

* images/s of ``YOLO.predict`` (one view, NMS, boxes only): the baseline;
* the default path: ``Detector.predict`` with the views the default strategy and CEAL need
  (:func:`~detector_al.policy.decision.views_needed`: one), then scoring (decide: score + CEAL test; the queue's batch);
* ``mi_aod``: the adapter with both views (image + flip in one batch), then the same scoring;
* each one's ratio to the bare pass (target for the default path <= 1.1x) and the scoring's share.

Usage: ``python benchmarks/bench_inference.py [--model W] [--images DIR] [--n 160] [--batch 16] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from ultralytics import YOLO

    from detector_al.demo.bootstrap_model import ensure_bootstrap_model
    from detector_al.io.images import list_images
    from detector_al.model.detector import Detector
    from detector_al.policy.ceal import CealConfig
    from detector_al.policy.decision import views_needed
    from detector_al.policy.strategies import DEFAULT_STRATEGY, get_strategy
    from detector_al.queue.ranking import assign_queue, score_predictions

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

    ceal = CealConfig()
    arms = {name: get_strategy(name) for name in (DEFAULT_STRATEGY, "mi_aod")}
    views = {name: views_needed(st, ceal) for name, st in arms.items()}
    for name in arms:
        list(det.predict(paths[: args.batch], batch_size=args.batch, views=views[name]))
    times: dict[str, list[float]] = {
        "bare": [],
        **{f"{n} adapter": [] for n in arms},
        **{f"{n} score": [] for n in arms},
    }
    records: dict[str, list] = {}
    for _ in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every arm
        t = time.perf_counter()
        bare.predict(paths, **kw)
        times["bare"].append(time.perf_counter() - t)
        for name, strategy in arms.items():
            t = time.perf_counter()
            records[name] = list(det.predict(paths, batch_size=args.batch, views=views[name]))
            times[f"{name} adapter"].append(time.perf_counter() - t)
            t = time.perf_counter()
            scored = list(score_predictions(records[name], strategy, 0, ceal))
            assign_queue(scored, budget=max(1, len(scored) // 10))
            times[f"{name} score"].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    n = len(paths)
    print(
        f"images: {n} from {args.images} at {det.imgsz} px, batch {args.batch}, model {weights}, "
        f"{det.num_anchors} anchors x {len(det.names)} classes, best of {args.repeats} (interleaved)"
    )
    print(f"bare ultralytics predict      : {n / best['bare']:8.1f} img/s")
    for name in arms:
        adapter, score = best[f"{name} adapter"], best[f"{name} score"]
        target = "  (target <= 1.1x)" if name == DEFAULT_STRATEGY else ""
        print(
            f"{name:13s} ({views[name]} view{'s' if views[name] > 1 else ''}) adapter : {n / adapter:8.1f} img/s, "
            f"{adapter / best['bare']:.2f}x bare; with scoring {n / (adapter + score):8.1f} img/s, "
            f"{(adapter + score) / best['bare']:.2f}x bare{target}; scoring {100 * score / adapter:.1f} % of the adapter"
        )
    records = records[DEFAULT_STRATEGY]
    per_image = np.array([len(r.detections) for r in records])
    print(f"boxes per image (conf >= {args.conf}): mean {per_image.mean():.1f}")


if __name__ == "__main__":
    main()
