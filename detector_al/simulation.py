"""The active-learning experiment with an oracle: does a strategy reach a given mAP with fewer labels?

Protocol (the lessons of ``shared/docs/active-learning.md``):

* every strategy of a seed starts from the **same initial labeled set** and the **same round-0 weights**;
* each round scores the unlabeled pool with the previous round's model, labels ``budget`` images (the
  oracle reveals their ground truth), and **fine-tunes from the previous round's weights**;
* training is deterministic for a seed and runs at least ``min_steps`` optimizer steps per round (with 30
  images and batch 16, 30 epochs are only 60 steps: the model would learn nothing);
* mAP50 and mAP50-95 are measured on a **fixed test split** after every round;
* ``+ceal`` variants add the round's auto-accepted images, with the model's boxes as labels, to the
  training set of that round only; ``+div`` picks a diverse batch (k-center) from the top candidates.

Results are written after every round to ``results.json`` (a re-run resumes where it stopped), with a
learning-curve plot (mean and spread over seeds).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from detector_al.files import atomic_write
from detector_al.yolo_format import yolo_lines

log = logging.getLogger(__name__)

VARIANTS = ("random", "entropy", "mi_aod", "mi_aod+div")
STRATEGY_OF = {"random": "random", "entropy": "entropy_sum", "mi_aod": "mi_aod"}


@dataclass
class SimConfig:
    initial: int = 40
    budget: int = 20
    rounds: int = 3
    seeds: tuple[int, ...] = (0, 1)
    variants: tuple[str, ...] = tuple(v + c for v in VARIANTS for c in ("", "+ceal"))
    imgsz: int = 224
    batch: int = 16
    epochs_initial: int = 60
    min_steps: int = 60
    max_epochs: int = 20
    base: str = "yolov8n.yaml"
    lr0: float = 0.004


PRESETS = {
    "cpu": SimConfig(),
    "gpu": SimConfig(
        initial=60, budget=30, rounds=5, seeds=(0, 1, 2), imgsz=416, epochs_initial=150, min_steps=300, max_epochs=60
    ),
    "smoke": SimConfig(
        initial=8,
        budget=4,
        rounds=1,
        seeds=(0,),
        variants=("random", "mi_aod+div+ceal"),
        imgsz=128,
        epochs_initial=2,
        min_steps=2,
        max_epochs=2,
    ),
}


@dataclass
class SimDataset:
    """The pool (with oracle labels) and a fixed test split, as YOLO files under ``root``."""

    root: Path
    names: list[str]
    pool: list[Path] = field(default_factory=list)

    def label_of(self, image: Path) -> Path:
        return self.root / "labels" / "pool" / f"{image.stem}.txt"


def _voc_boxes(xml: Path, names: list[str]) -> list[str]:
    tree = ET.parse(xml).getroot()
    w = float(tree.findtext("size/width"))
    h = float(tree.findtext("size/height"))
    lines = []
    for obj in tree.iter("object"):
        name = obj.findtext("name").strip()
        if name not in names:
            names.append(name)
        b = obj.find("bndbox")
        x1, y1, x2, y2 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        x1, x2 = max(0.0, min(x1, x2)), min(w, max(x1, x2))
        y1, y2 = max(0.0, min(y1, y2)), min(h, max(y1, y2))
        if x2 - x1 < 1 or y2 - y1 < 1:  # e.g. BCCD's two zero-size boxes
            continue
        lines += yolo_lines([[x1, y1, x2, y2]], [names.index(name)], w, h)
    return lines


def _link_split(images: list[Path], labels: list[list[str] | Path], root: Path, split: str) -> list[Path]:
    out = []
    for img, lab in zip(images, labels, strict=True):
        dst = root / "images" / split / img.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(img.resolve())
        lab_dst = root / "labels" / split / f"{img.stem}.txt"
        lab_dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(lab, Path):
            shutil.copyfile(lab, lab_dst) if lab.exists() else lab_dst.write_text("")
        else:
            lab_dst.write_text("\n".join(lab) + ("\n" if lab else ""))
        out.append(dst)
    return out


def _label_path(image: Path) -> Path:
    """ultralytics' convention: the last ``/images/`` of the path becomes ``/labels/``, the suffix ``.txt``."""
    parts = list(image.parts)
    i = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    if i is not None:
        parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def prepare_dataset(source: Path, work: Path) -> SimDataset:
    """VOC folder (Annotations/, JPEGImages/, ImageSets/Main/) or YOLO ``data.yaml`` -> pool + test split."""
    import yaml

    root = work / "dataset"
    if source.is_dir() and (source / "Annotations").is_dir():
        sets = source / "ImageSets" / "Main"
        names: list[str] = []
        split_ids = {s: (sets / f"{s}.txt").read_text().split() for s in ("train", "test")}
        data = {}
        for s, ids in split_ids.items():
            imgs = [source / "JPEGImages" / f"{i}.jpg" for i in ids]
            data[s] = (imgs, [_voc_boxes(source / "Annotations" / f"{i}.xml", names) for i in ids])
        pool = _link_split(*data["train"], root, "pool")
        _link_split(*data["test"], root, "test")
    else:
        cfg = yaml.safe_load(source.read_text())
        base = source.parent / cfg["path"] if cfg.get("path") else source.parent
        raw = cfg["names"]
        names = [raw[k] for k in sorted(raw)] if isinstance(raw, dict) else list(raw)

        def split(key: str) -> tuple[list[Path], list[Path]]:
            imgs = sorted(p for p in (base / cfg[key]).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            return imgs, [_label_path(p) for p in imgs]

        pool = _link_split(*split("train"), root, "pool")
        _link_split(*split("test" if cfg.get("test") else "val"), root, "test")
    yaml_names = "\n".join(f"  {i}: {n}" for i, n in enumerate(names))
    (root / "test.yaml").write_text(
        f"path: {root}\ntrain: images/test\nval: images/test\ntest: images/test\nnames:\n{yaml_names}\n"
    )
    return SimDataset(root=root, names=names, pool=sorted(pool))


def _train_set(ds: SimDataset, labeled: list[Path], pseudo: dict[Path, list[str]], out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    _link_split(labeled, [ds.label_of(p) for p in labeled], out, "train")
    if pseudo:
        _link_split(list(pseudo), list(pseudo.values()), out, "train")
    yaml_names = "\n".join(f"  {i}: {n}" for i, n in enumerate(ds.names))
    test_images = ds.root / "images" / "test"
    data = out / "data.yaml"
    data.write_text(f"path: {out}\ntrain: images/train\nval: {test_images}\nnames:\n{yaml_names}\n")
    return data


def _epochs(cfg: SimConfig, n_images: int) -> int:
    """Enough epochs for ``min_steps`` optimizer steps (at most ``max_epochs``)."""
    steps_per_epoch = max(1, math.ceil(n_images / cfg.batch))
    return int(min(cfg.max_epochs, max(3, math.ceil(cfg.min_steps / steps_per_epoch))))


def _train(data: Path, out: Path, base: str, epochs: int, cfg: SimConfig, seed: int) -> Path:
    from detector_al.training import TrainConfig, train_detector

    final = out / "best.pt"
    if final.exists():
        return final
    return train_detector(
        data,
        out,
        TrainConfig(
            epochs=epochs,
            imgsz=cfg.imgsz,
            batch=cfg.batch,
            base=base,
            seed=seed,
            lr0=cfg.lr0,
            warmup_epochs=1.0 if base.endswith(".pt") else 3.0,
            val=False,
        ),
    )


def _choose(
    ds: SimDataset, weights: Path, unlabeled: list[Path], variant: str, cfg: SimConfig, seed: int, round_index: int
) -> tuple[list[Path], dict[Path, list[str]]]:
    """The images to label next and (for +ceal) the round's pseudo-labels."""
    from detector_al.decision import decide
    from detector_al.detector import Detector
    from detector_al.pseudo_labels import CealConfig
    from detector_al.uncertainty import get_strategy, random_score

    name = variant.replace("+ceal", "").replace("+div", "")
    strategy = get_strategy(STRATEGY_OF[name])
    if name == "random" and "+ceal" not in variant:
        order = sorted(unlabeled, key=lambda p: -random_score(str(p.name), seed * 1000 + round_index))  # as below
        return order[: cfg.budget], {}
    det = Detector.load(weights, conf=0.05, imgsz=cfg.imgsz)
    ceal = CealConfig(enabled="+ceal" in variant)
    decisions = [decide(p, strategy, round_index, ceal) for p in det.predict([str(x) for x in unlabeled])]
    scores = {p: random_score(str(p.name), seed * 1000 + round_index) for p in unlabeled} if name == "random" else None
    return choose_from_decisions(unlabeled, decisions, cfg.budget, "+div" in variant, scores)


def choose_from_decisions(
    paths: list[Path], decisions: list, budget: int, diversity: bool, scores: dict[Path, float] | None = None
) -> tuple[list[Path], dict[Path, list[str]]]:
    """The production queue over a round's decisions: the batch (in queue order) and the CEAL pseudo-labels.

    The same :func:`~detector_al.queue.build_queue` the backend and ingest run; ``scores`` replaces the
    strategy's (the random baseline).
    """
    from detector_al.queue import QUERY, build_queue

    ok = [(path, d) for path, d in zip(paths, decisions, strict=True) if not d.error]
    pseudo = {
        path: yolo_lines(d.pseudo_labels.xyxy, d.pseudo_labels.class_id, d.width, d.height)
        for path, d in ok
        if d.accepted
    }
    if not ok:
        return [], pseudo
    queue = build_queue(
        np.array([scores[path] if scores else d.score for path, d in ok], np.float64),
        np.array([d.accepted for _, d in ok]),
        np.stack([d.embedding for _, d in ok]),
        budget,
        diversity=diversity,
    )
    batch = sorted((e.position, i) for i, e in enumerate(queue) if e.status == QUERY)
    return [ok[i][0] for _, i in batch], pseudo


def run_simulation(source: Path, out: Path, cfg: SimConfig) -> dict:
    """Run (or resume) the experiment; returns and writes ``out/results.json``."""
    from detector_al.training import evaluate

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    ds = prepare_dataset(source.resolve(), out)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {"config": asdict(cfg), "runs": []}
    done = {(r["seed"], r["variant"], r["round"]) for r in results["runs"]}
    test_yaml = ds.root / "test.yaml"
    started = time.perf_counter()

    def record(seed, variant, rnd, n_labeled, n_pseudo, weights) -> None:
        m = evaluate(weights, test_yaml, "test", cfg.imgsz)
        results["runs"].append(
            {
                "seed": seed,
                "variant": variant,
                "round": rnd,
                "labeled": n_labeled,
                "pseudo": n_pseudo,
                **m,
                "elapsed_s": round(time.perf_counter() - started, 1),
            }
        )
        with atomic_write(results_file) as f:
            json.dump(results, f, indent=1)
        log.info(
            "seed %d %-18s round %d: %d labeled (+%d pseudo) mAP50 %.3f mAP50-95 %.3f",
            seed,
            variant,
            rnd,
            n_labeled,
            n_pseudo,
            m["map50"],
            m["map50_95"],
        )

    for seed in cfg.seeds:
        rng = np.random.default_rng(seed)
        initial = [ds.pool[i] for i in sorted(rng.choice(len(ds.pool), cfg.initial, replace=False))]
        sdir = out / f"seed{seed}"
        data0 = _train_set(ds, initial, {}, sdir / "round0-data")
        w0 = _train(data0, sdir / "round0", cfg.base, cfg.epochs_initial, cfg, seed)
        for variant in cfg.variants:
            if (seed, variant, 0) not in done:
                record(seed, variant, 0, len(initial), 0, w0)
            labeled, weights = list(initial), w0
            for rnd in range(1, cfg.rounds + 1):
                vdir = sdir / variant.replace("+", "_") / f"round{rnd}"
                unlabeled = [p for p in ds.pool if p not in set(labeled)]
                chosen, pseudo = _choose(ds, weights, unlabeled, variant, cfg, seed, rnd - 1)
                labeled = labeled + chosen
                if (seed, variant, rnd) in done and (vdir / "best.pt").exists():
                    weights = vdir / "best.pt"
                    continue
                data = _train_set(ds, labeled, pseudo, vdir / "data")
                weights = _train(data, vdir, str(weights), _epochs(cfg, len(labeled) + len(pseudo)), cfg, seed)
                record(seed, variant, rnd, len(labeled), len(pseudo), weights)
    plot_learning_curves(results, out / "learning_curves.png")
    return results


def summarise(results: dict, metric: str = "map50") -> dict[str, dict[int, tuple[float, float]]]:
    """variant -> labeled count -> (mean, sd) of ``metric`` over seeds."""
    table: dict[str, dict[int, list[float]]] = {}
    for r in results["runs"]:
        table.setdefault(r["variant"], {}).setdefault(r["labeled"], []).append(r[metric])
    return {v: {n: (float(np.mean(x)), float(np.std(x))) for n, x in sorted(d.items())} for v, d in table.items()}


def labels_to_reach(curve: dict[int, tuple[float, float]], target: float) -> int | None:
    """Fewest labeled images at which the mean curve reaches ``target`` (None if it never does)."""
    for n, (mean, _) in sorted(curve.items()):
        if mean >= target:
            return n
    return None


def plot_learning_curves(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ("map50", "map50_95"), strict=True):
        for variant, curve in summarise(results, metric).items():
            n = np.array(list(curve))
            mean = np.array([m for m, _ in curve.values()])
            sd = np.array([s for _, s in curve.values()])
            style = "--" if "+ceal" in variant else "-"
            (line,) = ax.plot(n, mean, style, marker="o", label=variant)
            ax.fill_between(n, mean - sd, mean + sd, alpha=0.12, color=line.get_color())
        ax.set_xlabel("labeled images")
        ax.set_ylabel(metric.replace("map", "mAP").replace("_", "-"))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    seeds = sorted({r["seed"] for r in results["runs"]})
    fig.suptitle(f"Active learning, mean ± sd over seeds {seeds}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
