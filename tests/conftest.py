"""Shared fixtures: the sample data, the model for it (shipped, or trained afresh under a seed), a detector."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.integration import docker_prep

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


def _is_docker_test(item) -> bool:
    return item.path.parent.name == "integration" and item.path.name == "test_docker.py"


def pytest_collection_modifyitems(config, items):
    """The order of the files (pytest-xdist hands them out in it): the slow unit tests first (they need no Label
    Studio: they run while its template initialises, see tests/integration/conftest.py), then the integration tests
    (the longest), then test_docker.py (its images build meanwhile), then the other unit tests."""
    slow_units = {i.path for i in items if i.path.parent.name != "integration" and i.get_closest_marker("slow")}

    def part(item) -> int:
        if item.path.parent.name == "integration":
            return 2 if _is_docker_test(item) else 1
        return 0 if item.path in slow_units else 3

    items.sort(key=part)  # stable: within each part the tests keep their order


# -- test_docker.py's images: built in the background from the end of collection (tests/integration/docker_prep.py),
# by the first pytest process (the only one, or pytest-xdist's controller), whoever runs test_docker.py waits for them


def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        docker_prep.configure()


def pytest_collection_finish(session):  # a run without pytest-xdist (its workers leave it to the controller)
    if hasattr(session.config, "workerinput") or session.config.option.collectonly:
        return
    if any(_is_docker_test(item) and not item.get_closest_marker("skip") for item in session.items):
        docker_prep.start()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):  # pytest-xdist's controller: a worker has collected
    from detector_al.label_studio.local_server import label_studio_bin

    if label_studio_bin().exists() and any(i.startswith("tests/integration/test_docker.py::") for i in ids):
        docker_prep.start()


def pytest_sessionfinish(session):
    terminal = session.config.pluginmanager.get_plugin("terminalreporter")
    # what the builds made goes, even when test_docker.py did not get to run (-x, Ctrl-C)
    docker_prep.close(terminal.write_line if terminal else print)


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
