"""Shared fixtures: the sample data, the model for it (shipped, or trained afresh under a seed), a detector."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"
# Unset: the tests use the weights shipped in sample_data/model (the same model on every machine). Set to a seed:
# a model trained afresh here under that seed (about 6 min on 2 cores, cached in .cache/), to show that no test
# depends on what one training happened to produce.
TEST_MODEL_SEED = os.environ.get("DETECTOR_AL_TEST_MODEL_SEED")


def _sample_key(seed: int) -> str:
    from detector_al.demo.bootstrap_model import sample_recipe, training_data_hash

    h = hashlib.sha256(repr(sample_recipe(seed)).encode())
    h.update(training_data_hash(SAMPLE / "data.yaml").encode())
    return h.hexdigest()[:10]


@pytest.fixture(scope="session")
def sample_data() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def trained_weights() -> Path:
    """The shipped sample-data model, or one trained afresh under ``DETECTOR_AL_TEST_MODEL_SEED``."""
    from detector_al.demo.bootstrap_model import sample_recipe, shipped_sample_weights

    if not TEST_MODEL_SEED:
        return shipped_sample_weights()
    from detector_al.model.training import train_detector

    seed = int(TEST_MODEL_SEED)
    out = REPO / ".cache" / f"test-model-seed{seed}-{_sample_key(seed)}"
    if (out / "best.pt").exists():
        return out / "best.pt"
    return train_detector(SAMPLE / "data.yaml", out, sample_recipe(seed))


@pytest.fixture(scope="session")
def detector(trained_weights):
    from detector_al.model.detector import Detector

    return Detector.load(trained_weights, conf=0.05)
