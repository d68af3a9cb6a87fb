"""The simulation's settings: training recipes, presets and the variant names (see :mod:`detector_al.simulation.experiment`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from detector_al.jobs.training import FINE_TUNE, Recipe

ALIASES = {"entropy": "entropy_sum"}
FLAGS = ("div", "ceal", "boxes", "cold")
# Experiment-only controls, not strategies: they read the oracle, which no deployment has.
# ``oracle``: the images whose pre-annotations need the most corrections first (the ceiling of error seeking).
CONTROLS = ("oracle",)


RECIPES = {
    "finetune_warm": Recipe("previous", 0.004, 1.0),  # the recipe before issue #14
    "finetune": FINE_TUNE,
    "finetune_nowarm": Recipe("previous", 0.004, 0.0),  # the recipe before, without the warm-up's kick
    "round0": Recipe("round0", 0.002, 0.0),
}


@dataclass
class SimConfig:
    initial: int = 40
    budget: int = 20
    rounds: int = 3
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = ("random", "entropy", "mi_aod", "mi_aod+div")
    imgsz: int = 224
    batch: int = 16
    epochs_initial: int = 60
    min_steps: int = 60
    max_epochs: int = 20
    base: str = "yolov8n.yaml"
    lr0: float = 0.004  # round 0 (from scratch)
    recipe: str = "finetune"


PRESETS = {
    "cpu": SimConfig(),
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
    from detector_al.uncertainty import get_strategy

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
