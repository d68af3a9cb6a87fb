"""The simulation's settings: training recipes, presets and the variant names (see :mod:`detector_al.simulation.experiment`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from detector_al.model.pretrained import PRETRAINED_NAME, SCRATCH_BASE
from detector_al.model.training import FINE_TUNE, Recipe

ALIASES = {"entropy": "entropy_sum"}
FLAGS = ("div", "ceal", "boxes", "cold")
# Experiment-only controls, not strategies: they read the oracle, which no deployment has.
# ``oracle``: the images whose pre-annotations need the most corrections first (the ceiling of error seeking).
CONTROLS = ("oracle",)


RECIPES = {
    "finetune_warm": Recipe("previous", 0.004, 1.0),  # the recipe before issue #14
    "finetune": FINE_TUNE,
    "finetune_lr1e-3": Recipe("previous", 0.001, 0.0),  # FINE_TUNE until issue #30: the cpu-scratch figures' recipe
    "finetune_nowarm": Recipe("previous", 0.004, 0.0),  # the recipe before, without the warm-up's kick
    "round0": Recipe("round0", 0.002, 0.0),
}


@dataclass
class SimConfig:
    """One experiment's settings. ``base`` is what round 0 starts from: ``pretrained`` (the users' regime: the
    checkpoint of :mod:`detector_al.model.pretrained`), ``yolov8n.yaml`` (random init: the ablation), or weights."""

    initial: int = 20
    budget: int = 20
    rounds: int = 3
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = ("random", "entropy", "mi_aod", "mi_aod+div")
    imgsz: int = 224
    batch: int = 16
    epochs_initial: int = 30
    min_steps: int = 60
    max_epochs: int = 10
    base: str = PRETRAINED_NAME
    # Round 0's learning rate. From the pretrained base on BCCD (20 images, 30 epochs, no warm-up, val mAP50):
    # 0.001 -> 0.60 and 0.49 (seeds 0, 1); 0.004 -> 0.006 (seed 0): the higher rate wipes out what was learned.
    lr0: float = 0.001
    # Round 0's warm-up epochs. ultralytics warms up for max(warmup_epochs x steps per epoch, 100) steps, from a bias
    # learning rate of 0.1: 20 images x 30 epochs are 60 steps, all warm-up, and the pretrained base's round-0
    # model reached val mAP50 0.05 on BCCD with 3 (0.8 once fine-tuned on 40 without). 0 = none.
    warmup_initial: float = 0.0
    recipe: str = "finetune"


PRESETS = {
    "cpu": SimConfig(),
    # The regime of every figure before issue #30: YOLOv8n from random init, 40 initial labels, 60 epochs.
    "cpu-scratch": SimConfig(
        initial=40,
        epochs_initial=60,
        max_epochs=20,
        base=SCRATCH_BASE,
        lr0=0.004,
        warmup_initial=3.0,
        recipe="finetune_lr1e-3",
    ),
    "gpu": SimConfig(
        initial=60,
        budget=30,
        rounds=5,
        seeds=(0, 1, 2, 3, 4),
        imgsz=416,
        epochs_initial=150,
        min_steps=300,
        max_epochs=60,
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


def parse_variant(variant: str) -> tuple[str, set[str]]:
    """``"<strategy>[+div][+ceal][+boxes][+cold]"`` -> (registry name or control, flags); unknown names raise
    ``ValueError``."""
    from detector_al.policy.strategies import get_strategy

    name, *flags = variant.split("+")
    unknown = set(flags) - set(FLAGS)
    if unknown:
        raise ValueError(
            f"unknown variant flag(s) {sorted(unknown)} in {variant!r}; use " + ", ".join(f"+{f}" for f in FLAGS)
        )
    return (name if name in CONTROLS else get_strategy(ALIASES.get(name, name)).name), set(flags)


def epochs_for(cfg: SimConfig, n_images: int) -> int:
    """Enough epochs for ``min_steps`` optimizer steps: ``clip(ceil(min_steps / ceil(n / batch)), 3, max_epochs)``."""
    steps_per_epoch = max(1, math.ceil(n_images / cfg.batch))
    return int(min(cfg.max_epochs, max(3, math.ceil(cfg.min_steps / steps_per_epoch))))
