"""Does the shipped queue hold the images the model gets wrong? The sample pool against its oracle.

One model's predictions of the pool (``sample_data/images/pool``; truth in ``sample_data/oracle/pool``, tags in
``pool_meta.jsonl``) go through the production path for every strategy: :func:`~detector_al.queue.ranking.
score_predictions` (score, CEAL) and :func:`~detector_al.queue.ranking.assign_queue` (the batch, then the rest, the
auto-accepted last). Per image, the corrections an annotator makes to the pre-annotation (boxes at
``conf >= 0.25``) are counted against the oracle (:mod:`detector_al.simulation.effort`). Printed per strategy:

* ``AUC err``: the proxy that needs no training: P(an image with model errors scores above one without);
* ``AUC hard``: P(a rare-class or cluttered image is queued before an easy one);
* ``batch err/img``, ``left err/img`` and their ratio: mean corrections per image in the batch of ``--budget``
  and in the images the batch leaves (chance: ratio 1); ``left queued``: the same for the images left that are
  not auto-accepted (what the batch was chosen from);
* ``precision``: of the auto-accepted images, the share whose pseudo-labels need no correction.

``entropy_balanced`` and ``entropy_ppal`` are built as for a round (:func:`detector_al.policy.strategies.build_strategy`:
the class counts of ``labels/train``, the bootstrap model's training set; the pool's predictions). ``typiclust``
(:func:`detector_al.queue.selection.typiclust`, the training images as covered) chooses a batch without a score: its row
has no AUC, and the rest of its queue is ordered by ``entropy_sum``. The cold-start rule's verdict
(:func:`detector_al.queue.selection.use_cold_start`) is printed first.

Usage: ``python benchmarks/bench_queue_quality.py [--model W] [--budget 48] [--out docs/queue_quality.json]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from detector_al.simulation.ranking_quality import auc, auc_interval


def main() -> None:
    from detector_al.demo.bootstrap_model import ensure_bootstrap_model
    from detector_al.io.yolo_format import read_yolo_labels
    from detector_al.model.detector import Detector
    from detector_al.policy.strategies import STRATEGIES, build_strategy
    from detector_al.queue.build import build_queue
    from detector_al.queue.ranking import AUTO_ACCEPT, QUERY, assign_queue, score_predictions
    from detector_al.queue.selection import typiclust, use_cold_start
    from detector_al.simulation.effort import corrections

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", type=Path, default=Path("sample_data"))
    ap.add_argument("--budget", type=int, default=48)
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()

    meta = [json.loads(line) for line in (args.data / "pool_meta.jsonl").read_text().splitlines() if line]
    paths = [args.data / m["image"] for m in meta]
    tags = [set(m["tags"]) for m in meta]
    hard = np.array([bool(t & {"rare", "cluttered"}) for t in tags])
    easy = np.array([t == {"easy"} for t in tags])
    det = Detector.load(args.model or str(ensure_bootstrap_model()), conf=0.05)
    preds = list(det.predict(paths))
    truth = [
        read_yolo_labels(args.data / "oracle" / "pool" / f"{p.stem}.txt", q.width, q.height)
        for p, q in zip(paths, preds, strict=True)
    ]
    shown = [q.detections[q.detections.confidence >= 0.25] for q in preds]
    errors = np.array([corrections(s, t).errors for s, t in zip(shown, truth, strict=True)], np.float64)
    wrong = errors > 0
    print(
        f"pool: {len(preds)} images, {int(wrong.sum())} with model errors ({errors.mean():.2f} corrections/image); "
        f"budget {args.budget}; model {det.version}"
    )
    n_classes = preds[0].probs.shape[1]
    counts = np.zeros(n_classes, np.int64)
    for f in sorted((args.data / "labels" / "train").glob("*.txt")):
        for line in f.read_text().splitlines():
            if line.strip():
                counts[int(line.split()[0])] += 1
    max_conf = np.array([q.detections.confidence.max(initial=0.0) for q in preds])
    print(
        f"labeled (train) boxes per class {counts.tolist()}; pool images with a box at conf >= 0.25: "
        f"{np.mean(max_conf >= 0.25):.0%}, at conf >= 0.5: {np.mean(max_conf >= 0.5):.0%} -> use_cold_start = {use_cold_start(max_conf)}"
    )
    train_emb = np.stack([q.embedding for q in det.predict(sorted((args.data / "images" / "train").glob("*.*")))])
    head = f"{'strategy':22s} {'AUC err':>8s} {'95% interval':>15s} {'AUC hard':>9s} {'batch err/img':>14s} {'left err/img':>13s} {'ratio':>6s} {'left queued':>12s} {'accepted':>9s} {'precision':>10s}"
    print(head)
    results = {}
    for name in [*STRATEGIES, "typiclust"]:
        if name == "typiclust":
            scored = list(score_predictions(preds, STRATEGIES["entropy_sum"]))
            pending = np.flatnonzero([not s.accepted for s in scored])
            emb = np.stack([s.embedding for s in scored])
            picked = pending[typiclust(emb[pending], args.budget, labeled_emb=train_emb)]
            entries = build_queue(
                np.array([s.score for s in scored]),
                np.array([s.accepted for s in scored]),
                emb,
                args.budget,
                batch=picked,
            )
        else:
            scored = list(score_predictions(preds, build_strategy(name, labeled_counts=counts, pool=preds)))
            entries = assign_queue(scored, budget=args.budget)
        score = np.array([s.score for s in scored])
        position = -np.array([e.position + 1 for e in entries], np.float64)  # higher = served earlier
        batch = np.array([e.status == QUERY for e in entries])
        accepted = np.array([e.status == AUTO_ACCEPT for e in entries])
        pl_right = [
            corrections(s.pseudo_labels, t).errors == 0
            for s, e, t in zip(scored, entries, truth, strict=True)
            if e.status == AUTO_ACCEPT
        ]
        row = {
            "auc_errors": auc(score[wrong], score[~wrong]) if name != "typiclust" else float("nan"),
            "auc_interval": auc_interval(score, wrong, np.random.default_rng(1))
            if name != "typiclust"
            else (float("nan"), float("nan")),
            "auc_hard_vs_easy": auc(position[hard], position[easy]),
            "batch_errors_per_image": float(errors[batch].mean()),
            "left_errors_per_image": float(errors[~batch].mean()),
            "left_queued_errors_per_image": float(errors[~batch & ~accepted].mean()),
            "auto_accepted": int(accepted.sum()),
            "pseudo_label_precision": float(np.mean(pl_right)) if pl_right else float("nan"),
        }
        row["ratio"] = row["batch_errors_per_image"] / max(row["left_errors_per_image"], 1e-9)
        results[name] = row
        print(
            f"{name:22s} {row['auc_errors']:8.3f} {'[{:.3f}, {:.3f}]'.format(*row['auc_interval']):>15s} "
            f"{row['auc_hard_vs_easy']:9.3f} {row['batch_errors_per_image']:14.2f} "
            f"{row['left_errors_per_image']:13.2f} {row['ratio']:6.2f} {row['left_queued_errors_per_image']:12.2f} "
            f"{row['auto_accepted']:9d} "
            f"{row['pseudo_label_precision']:10.1%}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"model": det.version, "pool": len(preds), "budget": args.budget, "strategies": results}
        doc["labeled_class_counts"] = counts.tolist()
        doc["pool_share_with_box_at_0.25"] = float(np.mean(max_conf >= 0.25))
        doc["pool_share_with_box_at_0.5"] = float(np.mean(max_conf >= 0.5))
        doc["use_cold_start"] = use_cold_start(max_conf)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
