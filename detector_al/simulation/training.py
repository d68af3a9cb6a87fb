"""The simulation's models: the round-0 model, each round's training (cached by content) and its evaluation."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from detector_al.io.files import file_sha256
from detector_al.model.training import Recipe
from detector_al.simulation.config import SimConfig
from detector_al.simulation.dataset import SimDataset, link_split


def train_round(
    ds: SimDataset,
    work: Path,
    parent: str,
    labeled: list[Path],
    pseudo: dict[Path, list[str]],
    masks: dict[Path, np.ndarray],
    epochs: int,
    recipe: Recipe,
    cfg: SimConfig,
    seed: int,
) -> Path:
    """The weights trained from ``parent`` on ``labeled`` (oracle labels) and the round's pseudo-labels.

    Pseudo-labeled images with masks are written as copies whose masked regions are filled with grey 114
    (ultralytics' padding value). Cached by content: the key is the SHA-256 of the parent (weights bytes, or
    the model config's name), every training image's name, label lines and mask, the epochs, the recipe, the
    image and batch size and the seed.
    """
    from detector_al.model.training import TrainConfig, train_detector

    items = [(p.name, ds.label_of(p).read_text() if ds.label_of(p).exists() else "") for p in labeled]
    items += [(p.name, "\n".join(lines), np.round(masks.get(p, []), 1).tolist()) for p, lines in pseudo.items()]
    parent_id = file_sha256(parent) if parent.endswith(".pt") else parent
    key_src = json.dumps([parent_id, sorted(items), epochs, asdict(recipe), cfg.imgsz, cfg.batch, seed])
    out = work / "trainings" / hashlib.sha256(key_src.encode()).hexdigest()[:16]
    if (out / "best.pt").exists():
        return out / "best.pt"
    link_split(labeled, [ds.label_of(p) for p in labeled], out, "train")
    for src, dst in zip(pseudo, link_split(list(pseudo), list(pseudo.values()), out, "train"), strict=True):
        if len(masks.get(src, [])):
            write_masked(src, dst, masks[src])
    config = TrainConfig(
        epochs=epochs,
        imgsz=cfg.imgsz,
        batch=cfg.batch,
        base=parent,
        seed=seed,
        lr0=recipe.lr0,
        warmup_epochs=recipe.warmup_epochs,
        val=False,
    )
    return train_detector(ds.write_train_yaml(out), out, config)


def write_masked(src: Path, dst: Path, regions: np.ndarray) -> None:
    """``dst`` = ``src`` with the ``xyxy`` pixel ``regions`` filled with grey 114 (replacing a link at ``dst``)."""
    from PIL import Image, ImageDraw, ImageOps

    with Image.open(src) as im:
        img = ImageOps.exif_transpose(im).convert("RGB")  # the detector's (upright) pixels
    draw = ImageDraw.Draw(img)
    for x1, y1, x2, y2 in np.asarray(regions, np.float64):
        draw.rectangle([x1, y1, x2, y2], fill=(114, 114, 114))
    dst.unlink(missing_ok=True)
    img.save(dst.with_suffix(".png"))


def initial_set(ds: SimDataset, cfg: SimConfig, seed: int) -> list[Path]:
    """The seed's initial labeled images: ``cfg.initial`` drawn uniformly from the pool (the same for every variant)."""
    rng = np.random.default_rng(seed)
    return [ds.pool[i] for i in sorted(rng.choice(len(ds.pool), cfg.initial, replace=False))]


def train_initial(ds: SimDataset, work: Path, initial: list[Path], cfg: SimConfig, seed: int) -> Path:
    """The round-0 model: from ``cfg.base`` (the pretrained checkpoint, random init or weights) on the initial set,
    at ``cfg.lr0`` with ``cfg.warmup_initial`` warm-up epochs."""
    from detector_al.model.pretrained import resolve_base

    first = Recipe("base", cfg.lr0, cfg.warmup_initial)
    return train_round(ds, work, resolve_base(cfg.base), initial, {}, {}, cfg.epochs_initial, first, cfg, seed)


def evaluate_cached(ds: SimDataset, weights: Path, imgsz: int) -> dict[str, float]:
    """mAP50 and mAP50-95 on val and test (``val_map50``, ``map50``, ...), cached beside the weights."""
    from detector_al.model.training import evaluate

    cache = weights.parent / f"metrics-{imgsz}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    m = {}
    for split, prefix in (("val", "val_"), ("test", "")):
        m.update({prefix + k: v for k, v in evaluate(weights, ds.eval_yaml(split), "val", imgsz).items()})
    cache.write_text(json.dumps(m))
    return m
