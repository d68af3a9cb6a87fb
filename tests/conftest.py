"""Shared fixtures: the sample data, a model trained on it (cached per sample-data version), a detector."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"
TEST_EPOCHS = int(os.environ.get("DETECTOR_AL_TEST_EPOCHS", "60"))


def _sample_key() -> str:
    from detector_al.jobs.training import TrainConfig

    h = hashlib.sha256(repr(TrainConfig(epochs=TEST_EPOCHS)).encode())
    for p in sorted((SAMPLE / "labels").rglob("*.txt")):
        h.update(p.read_bytes())
    return h.hexdigest()[:10]


@pytest.fixture(scope="session")
def sample_data() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def trained_weights() -> Path:
    """A YOLOv8n trained from scratch on the sample data (about 6 min on 2 cores; cached in .cache/)."""
    from detector_al.jobs.training import TrainConfig, train_detector

    out = REPO / ".cache" / f"test-model-{_sample_key()}"
    if (out / "best.pt").exists():
        return out / "best.pt"
    return train_detector(SAMPLE / "data.yaml", out, TrainConfig(epochs=TEST_EPOCHS))


@pytest.fixture(scope="session")
def detector(trained_weights):
    from detector_al.detector import Detector

    return Detector.load(trained_weights, conf=0.05)
