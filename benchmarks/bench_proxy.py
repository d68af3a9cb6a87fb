"""The training-free screen on real data: do a strategy's scores point at the images the model gets wrong?

For a dataset (BCCD's VOC folder, or a YOLO ``data.yaml`` such as the aquarium set), as the simulation
prepares it (:func:`detector_al.simulation.experiment.prepare_dataset`): a seeded initial set of ``--initial`` pool
images trains a round-0 model (the simulation's CPU recipe); the model predicts the rest of the pool; each
image's corrections against the oracle are counted (:mod:`detector_al.simulation.effort`). Per strategy:

* ``AUC err``: P(an image that needs more corrections than the median scores above one that needs fewer;
  where the median is 0, more than 0: "has errors"), with a 95 % bootstrap interval over images (1000
  resamples); 0.5 = chance. On dense data (BCCD: every image needs corrections) "has errors" says nothing;
* ``rho``: Spearman's rank correlation of score and corrections;
* ``batch / left``: corrections per image in the production queue's batch of ``--budget`` and in the images
  it leaves (:func:`detector_al.queue.build.build_queue`, auto-accepted images excluded from the batch).

Every strategy of the registry is screened; ``entropy_balanced`` and ``entropy_ppal`` as the simulation would
build them for the round (:func:`detector_al.policy.strategies.build_strategy`: the initial set's class counts, the
pool's predictions). Two batch selectors without a score follow (no AUC, only ``batch / left``): ``typiclust``
(:func:`detector_al.queue.selection.typiclust`, the labeled images as covered) and ``kcenter_cold``
(:func:`detector_al.queue.selection.cold_start`). The cold-start rule's verdict
(:func:`detector_al.queue.selection.use_cold_start`) is printed with the share of pool images showing a box.

* box pseudo-labels: at each confidence threshold, the precision of the model's boxes against the oracle
  (same class, IoU >= 0.5) and the share of true boxes they cover, over the whole pool: what box-level
  pseudo-labels on dense images (issue #14) could be, before any curve.

One model, one seed: a screen for the learning curves, not a measure of label savings.

Usage: ``python benchmarks/bench_proxy.py ../shared/datasets/bccd --out docs/proxy_bccd.json``
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from detector_al.simulation.ranking_quality import auc, auc_interval, spearman


def box_pseudo_table(preds: list, truth: list) -> dict[float, dict]:
    """The shipped box pseudo-label rule (:func:`~detector_al.policy.box_pseudo_labels.box_pseudo_labels`) at several
    ``min_confidence``: box precision (same class, IoU >= 0.5), recall of the true boxes, and the share of true
    boxes neither pseudo-labeled nor masked (they would be taught as background)."""
    from detector_al.model.geometry import box_iou, match_boxes, same_class_matches
    from detector_al.policy.box_pseudo_labels import BoxPseudoConfig, box_pseudo_labels

    table = {}
    print(
        f"{'box conf >=':>12s} {'precision':>10s} {'recall':>8s} {'unseen':>8s} {'boxes':>7s}  (flip-agreed, rest masked)"
    )
    for t in (0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7):
        kept = right = unseen = 0
        for q, tr in zip(preds, truth, strict=True):
            if not q.ok:
                continue
            found = box_pseudo_labels(q, BoxPseudoConfig(min_confidence=t))
            pairs = match_boxes(found.boxes.xyxy, tr.xyxy)
            kept += len(found.boxes)
            right += same_class_matches(found.boxes, tr)
            seen = {j for _, j in pairs}
            if len(found.masked) and len(tr):
                seen |= set(np.flatnonzero(box_iou(tr.xyxy, found.masked).max(axis=1) >= 0.3).tolist())
            unseen += len(tr) - len(seen)
        total = max(sum(len(tr) for tr in truth), 1)
        table[t] = {"precision": right / max(kept, 1), "recall": right / total, "unseen": unseen / total, "boxes": kept}
        row = table[t]
        print(f"{t:12.2f} {row['precision']:10.1%} {row['recall']:8.1%} {row['unseen']:8.1%} {kept:7d}")
    return table


def main() -> None:
    from PIL import Image

    from detector_al.io.yolo_format import read_yolo_labels
    from detector_al.model.detector import Detector
    from detector_al.policy.decision import decide
    from detector_al.policy.strategies import STRATEGIES, build_strategy
    from detector_al.queue.build import QUERY, build_queue
    from detector_al.queue.selection import cold_start, typiclust, use_cold_start
    from detector_al.simulation.config import PRESETS
    from detector_al.simulation.dataset import prepare_dataset
    from detector_al.simulation.effort import corrections
    from detector_al.simulation.experiment import labeled_class_counts
    from detector_al.simulation.training import initial_set, train_initial

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", type=Path, help="VOC folder or YOLO data.yaml")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default runs/proxy-<name>)")
    ap.add_argument("--initial", type=int, default=40)
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--imgsz", type=int, default=None, help="image size (default: the cpu preset's)")
    ap.add_argument("--epochs", type=int, default=None, help="round-0 epochs (default: the cpu preset's)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    name = args.dataset.parent.name if args.dataset.is_file() else args.dataset.name
    work = (args.work or Path("runs") / f"proxy-{name}").resolve()
    cfg = PRESETS["cpu"]
    started = time.perf_counter()
    ds = prepare_dataset(args.dataset.resolve(), work)
    cfg = replace(
        cfg, initial=args.initial, imgsz=args.imgsz or cfg.imgsz, epochs_initial=args.epochs or cfg.epochs_initial
    )
    labeled = initial_set(ds, cfg, args.seed)
    taken = set(labeled)
    pool = [p for p in ds.pool if p not in taken]
    weights = train_initial(ds, work, labeled, cfg, args.seed)
    det = Detector.load(weights, conf=0.05, imgsz=cfg.imgsz)
    preds = list(det.predict([str(p) for p in pool]))
    truth = []
    for p, q in zip(pool, preds, strict=True):
        w, h = (q.width, q.height) if q.ok else Image.open(p).size
        truth.append(read_yolo_labels(ds.label_of(p), w, h))
    print(
        f"{name}: {len(labeled)} labeled -> round-0 model ({cfg.epochs_initial} epochs at {cfg.imgsz} px), "
        f"pool {len(pool)} images; trained and predicted in {time.perf_counter() - started:.0f} s"
    )
    counts = labeled_class_counts(ds, labeled)
    max_conf = np.array([q.detections.confidence.max(initial=0.0) for q in preds if q.ok])
    cold = use_cold_start(max_conf)
    print(
        f"labeled boxes per class {counts.tolist()}; pool images with a box at conf >= 0.25: "
        f"{np.mean(max_conf >= 0.25):.0%}, at conf >= 0.5: {np.mean(max_conf >= 0.5):.0%} -> use_cold_start = {cold}"
    )
    results = {}
    print(
        f"{'strategy':20s} {'AUC err':>8s} {'95% interval':>15s} {'rho':>6s} {'batch':>7s} {'left':>7s} {'ratio':>6s}"
    )
    for sname in STRATEGIES:
        strategy = build_strategy(sname, labeled_counts=counts, pool=preds)
        decisions = [decide(q, strategy) for q in preds]
        ok = [i for i, d in enumerate(decisions) if not d.error]
        errors = np.array([corrections(decisions[i].shown, truth[i]).errors for i in ok], np.float64)
        score = np.array([decisions[i].score for i in ok])
        wrong = errors > np.median(errors)
        queue = build_queue(
            score,
            np.array([decisions[i].accepted for i in ok]),
            np.stack([decisions[i].embedding for i in ok]),
            args.budget,
        )
        batch = np.array([e.status == QUERY for e in queue])
        row = {
            "auc_errors": auc(score[wrong], score[~wrong]),
            "auc_interval": auc_interval(score, wrong, np.random.default_rng(1)),
            "spearman": spearman(score, errors),
            "median_errors": float(np.median(errors)),
            "batch_errors_per_image": float(errors[batch].mean()),
            "left_errors_per_image": float(errors[~batch].mean()),
            "images_with_errors": int(wrong.sum()),
            "images": len(ok),
        }
        row["ratio"] = row["batch_errors_per_image"] / max(row["left_errors_per_image"], 1e-9)
        results[sname] = row
        lo, hi = row["auc_interval"]
        print(
            f"{sname:20s} {row['auc_errors']:8.3f} {f'[{lo:.3f}, {hi:.3f}]':>15s} {row['spearman']:6.3f} "
            f"{row['batch_errors_per_image']:7.2f} {row['left_errors_per_image']:7.2f} {row['ratio']:6.2f}"
        )
    # batch selectors without a score: the same shown boxes (they do not depend on the strategy), CEAL off
    plain = [decide(q, STRATEGIES["entropy_sum"]) for q in preds]
    ok = [i for i, d in enumerate(plain) if not d.error]
    errors = np.array([corrections(plain[i].shown, truth[i]).errors for i in ok], np.float64)
    emb = np.stack([plain[i].embedding for i in ok])
    labeled_preds = [q for q in det.predict([str(p) for p in labeled]) if q.ok]
    labeled_emb = np.stack([q.embedding for q in labeled_preds]) if labeled_preds else None
    selectors = {
        "typiclust": typiclust(emb, args.budget, labeled_emb=labeled_emb, seed=args.seed),
        "kcenter_cold": cold_start(emb, args.budget, seed=args.seed, labeled_emb=labeled_emb),
    }
    for sname, picked in selectors.items():
        batch = np.zeros(len(ok), bool)
        batch[picked] = True
        row = {
            "auc_errors": float("nan"),
            "batch_errors_per_image": float(errors[batch].mean()),
            "left_errors_per_image": float(errors[~batch].mean()),
            "images": len(ok),
        }
        row["ratio"] = row["batch_errors_per_image"] / max(row["left_errors_per_image"], 1e-9)
        results[sname] = row
        print(
            f"{sname:20s} {'-':>8s} {'-':>15s} {'-':>6s} "
            f"{row['batch_errors_per_image']:7.2f} {row['left_errors_per_image']:7.2f} {row['ratio']:6.2f}"
        )
    boxes = box_pseudo_table(preds, truth)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"dataset": name, "initial": len(labeled), "pool": len(pool), "seed": args.seed, "strategies": results}
        doc["labeled_class_counts"] = counts.tolist()
        doc["pool_share_with_box_at_0.25"] = float(np.mean(max_conf >= 0.25))
        doc["pool_share_with_box_at_0.5"] = float(np.mean(max_conf >= 0.5))
        doc["use_cold_start"] = cold
        doc["box_pseudo_labels"] = boxes
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
