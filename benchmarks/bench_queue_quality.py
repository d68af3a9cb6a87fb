"""Does the queue put the hard images first? Each strategy's ranking of the sample pool, against its tags.

For every strategy, the pool (``sample_data/images/pool``, tags in ``pool_meta.jsonl``) is scored with the
same model predictions, and we print

* ``AUC(hard > easy)``: the probability that a random rare-class or cluttered image is ranked above a random
  easy one (ties count half; random ranking gives 0.5);
* the share of rare-class images and of cluttered images in the top 20 % of the queue (random: their share of
  the pool);

each for the plain ranking by score and for the queue with a diverse head (k-center over the top candidates,
as ``detector-al score`` and ingest build it). AUCs are computed on queue positions.

Usage: ``python benchmarks/bench_queue_quality.py [--model W] [--out docs/queue_quality.json]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(equal), over all pairs."""
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def main() -> None:
    from detector_al.cli import ensure_bootstrap_model
    from detector_al.detector import Detector
    from detector_al.selection import select_batch
    from detector_al.uncertainty import STRATEGIES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", type=Path, default=Path("sample_data"))
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()

    meta = [json.loads(line) for line in (args.data / "pool_meta.jsonl").read_text().splitlines() if line]
    paths = [args.data / m["image"] for m in meta]
    tags = [set(m["tags"]) for m in meta]
    rare = np.array(["rare" in t for t in tags])
    clutter = np.array(["cluttered" in t for t in tags])
    easy = np.array([t == {"easy"} for t in tags])
    hard = rare | clutter
    det = Detector.load(args.model or str(ensure_bootstrap_model()), conf=0.05)
    preds = list(det.predict(paths))
    n_top = max(1, len(preds) // 5)
    print(
        f"pool: {len(preds)} images; rare {rare.sum()}, cluttered {clutter.sum()}, easy {easy.sum()}; "
        f"top 20 % = {n_top} images; model {det.version}"
    )
    print(
        f"{'queue of':30s} {'AUC(hard>easy)':>15s} {'AUC(rare>easy)':>15s} {'AUC(clut>easy)':>15s} "
        f"{'rare in top20%':>15s} {'clutter in top20%':>18s}"
    )
    print(
        f"{'(random expectation)':30s} {0.5:15.3f} {0.5:15.3f} {0.5:15.3f} {rare.mean():15.1%} {clutter.mean():18.1%}"
    )
    results = {}
    emb = np.stack([p.embedding for p in preds])
    for name, strategy in STRATEGIES.items():
        scores = np.array([strategy.score(p) for p in preds])
        for diverse in (False, True):
            if diverse and name == "random":
                continue
            picked = select_batch(scores, emb, n_top, diversity=diverse)
            chosen = set(picked.tolist())
            rest = [i for i in np.argsort(-scores, kind="stable") if i not in chosen]
            order = np.concatenate([picked, np.asarray(rest, np.int64)])  # the queue: batch first, then by score
            position = np.empty(len(order))
            position[order] = -np.arange(len(order))  # higher = earlier in the queue
            top = order[:n_top]
            row = {
                "auc_hard_vs_easy": auc(position[hard], position[easy]),
                "auc_rare_vs_easy": auc(position[rare], position[easy]),
                "auc_clutter_vs_easy": auc(position[clutter], position[easy]),
                "rare_share_top20": float(rare[top].mean()),
                "clutter_share_top20": float(clutter[top].mean()),
            }
            label = name + (" + diversity" if diverse else "")
            results[label] = row
            print(
                f"{label:30s} {row['auc_hard_vs_easy']:15.3f} {row['auc_rare_vs_easy']:15.3f} "
                f"{row['auc_clutter_vs_easy']:15.3f} {row['rare_share_top20']:15.1%} "
                f"{row['clutter_share_top20']:18.1%}"
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": det.version, "pool": len(preds), "strategies": results}, indent=2))


if __name__ == "__main__":
    main()
