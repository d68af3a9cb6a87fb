"""The bootstrap model: the project's own weights for the sample data, shipped in ``sample_data/model/``.

Training on CPU is not repeatable across processors: the same seed gives another model on another machine. So
the demo and the tests do not train the model they need; they use these weights, made once by
``detector-al make-sample-weights`` (:func:`make_sample_weights`) and committed with the recipe and the data's hash
beside them (``recipe.json``), so that anyone can see how they were made and whether the data changed since.

Example:
    >>> ensure_bootstrap_model().name  # doctest: +SKIP
    'best.pt'

``ensure_bootstrap_model(train=True)`` (``detector-al demo --train-bootstrap``) trains one here instead (minutes),
cached in ``models/bootstrap``. No pretrained weights are needed either way (``yolo11n.pt`` needs the internet).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DATA = REPO / "sample_data"
SAMPLE_WEIGHTS_DIR = SAMPLE_DATA / "model"
SAMPLE_EPOCHS = 60
RECIPE_FILE = "recipe.json"
BOOTSTRAP_DIR = Path("models") / "bootstrap"


def sample_recipe(seed: int = 0):
    """The shipped weights' training recipe: YOLOv8n from random init, 60 epochs at 256 px (see TrainConfig)."""
    from detector_al.model.pretrained import SCRATCH_BASE
    from detector_al.model.training import TrainConfig

    return TrainConfig(epochs=SAMPLE_EPOCHS, seed=seed, base=SCRATCH_BASE)


def training_data_hash(data_yaml: Path) -> str:
    """sha256 over what training reads: the dataset yaml, then every train/val image and label (path and bytes),
    in sorted order."""
    root = data_yaml.parent
    h = hashlib.sha256(data_yaml.read_bytes())
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            for p in sorted((root / kind / split).glob("*")):
                if p.suffix == ".cache":
                    continue
                h.update(p.relative_to(root).as_posix().encode())
                h.update(p.read_bytes())
    return h.hexdigest()


def make_sample_weights(
    out: Path = SAMPLE_WEIGHTS_DIR,
    data_yaml: Path = SAMPLE_DATA / "data.yaml",
    seed: int = 0,
    on_epoch: Callable[[int, int], None] | None = None,
) -> Path:
    """Train the sample model and write ``out/best.pt`` plus ``out/recipe.json`` (recipe, data hash, metrics,
    versions). The training run itself stays in a temporary folder: only the two files are kept."""
    import torch
    import ultralytics

    from detector_al.model.training import evaluate, train_detector

    config = sample_recipe(seed)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sample-weights-") as run:
        best = train_detector(data_yaml, Path(run) / "run", config, on_epoch=on_epoch)
        shutil.copyfile(best, out / "best.pt")
    metrics = evaluate(out / "best.pt", data_yaml, "val", config.imgsz)
    recipe = {
        "command": "detector-al make-sample-weights",
        "train_config": dataclasses.asdict(config),
        "data": str(data_yaml.relative_to(REPO)) if data_yaml.is_relative_to(REPO) else str(data_yaml),
        "data_sha256": training_data_hash(data_yaml),
        "val_metrics": {k: round(v, 4) for k, v in metrics.items()},
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    (out / RECIPE_FILE).write_text(json.dumps(recipe, indent=2) + "\n")
    log.info("sample weights: %s (val mAP50 %.3f)", out / "best.pt", metrics["map50"])
    return out / "best.pt"


def shipped_sample_weights(folder: Path = SAMPLE_WEIGHTS_DIR) -> Path:
    """The shipped weights' path; warns (once per call) when the sample data no longer matches their recipe.

    Raises:
        FileNotFoundError: the weights are missing (make them with ``detector-al make-sample-weights``).
    """
    best = folder / "best.pt"
    if not best.is_file():
        raise FileNotFoundError(f"{best} not found: make it with `detector-al make-sample-weights`")
    recipe_file = folder / RECIPE_FILE
    if recipe_file.is_file():
        recipe = json.loads(recipe_file.read_text())
        data = REPO / recipe.get("data", "sample_data/data.yaml")
        if data.is_file() and recipe.get("data_sha256") != training_data_hash(data):
            log.warning("%s was trained on other sample data: remake it with `detector-al make-sample-weights`", best)
    return best


def ensure_bootstrap_model(train: bool = False) -> Path:
    """The demo's model: the shipped weights, or (``train``) a model trained here with the same recipe, reused when
    cached in ``models/bootstrap`` (about 6 min on 2 CPU cores the first time)."""
    from detector_al.model.training import train_detector

    if not train:
        return shipped_sample_weights()
    best = BOOTSTRAP_DIR / "best.pt"
    if best.exists():
        log.info("bootstrap model: %s (cached)", best)
        return best
    from detector_al.progress import epoch_progress

    with epoch_progress("training the bootstrap model", SAMPLE_EPOCHS) as on_epoch:
        return train_detector(SAMPLE_DATA / "data.yaml", BOOTSTRAP_DIR, sample_recipe(), on_epoch=on_epoch)
