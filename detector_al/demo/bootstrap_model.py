"""The bootstrap model: a YOLO trained from scratch on the sample data, so that the demo and the benchmarks need
no download (``yolo11n.pt`` and friends need the internet). Trained once, then cached in ``models/bootstrap``."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

BOOTSTRAP_DIR = Path("models") / "bootstrap"
BOOTSTRAP_EPOCHS = 60
SAMPLE_DATA = Path("sample_data")


def ensure_bootstrap_model(epochs: int = BOOTSTRAP_EPOCHS) -> Path:
    """The bootstrap model's weights: reused when cached, else trained now (minutes on 2 cores)."""
    from detector_al.jobs.training import TrainConfig, train_detector

    best = BOOTSTRAP_DIR / "best.pt"
    if best.exists():
        log.info("bootstrap model: %s (cached)", best)
        return best
    log.info(
        "training the bootstrap model on %s (%d epochs, about 6 min on 2 CPU cores; cached afterwards)",
        SAMPLE_DATA,
        epochs,
    )
    return train_detector(SAMPLE_DATA / "data.yaml", BOOTSTRAP_DIR, TrainConfig(epochs=epochs))
