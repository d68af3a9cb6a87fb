"""What the bigger model costs: the pretrained base's YOLOv8s against the shipped YOLOv8n, on the same images.

Measured in one run, the models interleaved (best of ``--repeats``), the default policy's path:

* ``score`` throughput: files -> hash, one view, decide (:func:`~detector_al.scoring.file_stream.scored_files`),
  images/s over ``--n`` pool images;
* single-image latency (the adapter's share of one ``/predict``): median over ``--single`` calls;
* each model's ratio to the first (``--models`` order), and its parameter count.

Usage: ``python benchmarks/bench_model_costs.py --models sample_data/model/best.pt,models/yolov8s.pt [--n 64]``
(a YOLOv8s for the sample data: ``detector-al train sample_data/data.yaml --base pretrained --out models/v8s``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def main() -> None:
    from detector_al.io.images import list_images
    from detector_al.model.detector import Detector
    from detector_al.policy.decision import DecisionPolicy
    from detector_al.policy.settings import POLICY
    from detector_al.scoring.file_stream import scored_files

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", required=True, help="comma-separated weights; the first is the reference")
    ap.add_argument("--images", type=Path, default=Path("sample_data/images/pool"))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--single", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=256, help="one input size for every model (the demo's: 256)")
    args = ap.parse_args()

    paths = [str(p) for p in list_images(args.images)[: args.n]]
    policy = DecisionPolicy(POLICY.strategy, 0, POLICY.ceal, POLICY.score_threshold)
    dets = {m: Detector.load(m, conf=POLICY.scorer_conf, imgsz=args.imgsz) for m in args.models.split(",")}
    rate = {m: 0.0 for m in dets}
    single = {m: [] for m in dets}
    for det in dets.values():  # warm-up: fuse, build the predictor
        list(scored_files(det, paths[:4], policy, hash_files=False))
    for _ in range(args.repeats):
        for m, det in dets.items():
            t = time.perf_counter()
            n = sum(1 for _ in scored_files(det, paths, policy, hash_files=False))
            rate[m] = max(rate[m], n / (time.perf_counter() - t))
        for _ in range(max(1, args.single // args.repeats)):
            for m, det in dets.items():
                t = time.perf_counter()
                list(det.predict(paths[:1], batch_size=1, views=policy.views))
                single[m].append(1000 * (time.perf_counter() - t))
    ref = next(iter(dets))
    print(
        f"{len(paths)} images from {args.images} at {args.imgsz} px, best of {args.repeats} (interleaved); one view, "
        "the default policy"
    )
    print("| model | parameters | score img/s | ratio | one image ms (median) | ratio |")
    print("|---|---|---|---|---|---|")
    for m, det in dets.items():
        params = sum(p.numel() for p in det.yolo.model.parameters()) / 1e6
        med, ref_med = statistics.median(single[m]), statistics.median(single[ref])
        print(
            f"| {Path(m).name} | {params:.1f} M | {rate[m]:.1f} | {rate[m] / rate[ref]:.2f}x | {med:.1f} | "
            f"{med / ref_med:.2f}x |"
        )


if __name__ == "__main__":
    main()
