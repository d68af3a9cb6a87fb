"""The queue: order, and the Label Studio score that makes "Uncertainty sampling" serve that order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector_al.queue.build import AUTO_ACCEPT, QUERY, REST, build_queue, label_studio_score, priority


def test_batch_first_then_rest_by_uncertainty_then_accepted_by_uncertainty():
    u = np.array([0.1, 0.9, 0.5, 0.7, 0.3, 0.05, 0.2])
    accepted = np.array([False, False, False, False, False, True, True])
    q = build_queue(u, accepted, np.eye(7, dtype=np.float32), budget=2)
    order = sorted(range(7), key=lambda i: q[i].position)
    assert [q[i].status for i in order] == [QUERY, QUERY, REST, REST, REST, AUTO_ACCEPT, AUTO_ACCEPT]
    assert set(order[:2]) == {1, 3}  # the two most uncertain, distinct images
    assert order[2:] == [2, 4, 0, 6, 5]


@pytest.mark.parametrize(
    ("status", "confidence", "low", "high"),
    [(REST, 1.0, 0.1, 0.5), (REST, 1e-9, 0.1, 0.5), (AUTO_ACCEPT, 1.0, 0.5, 1.0), (AUTO_ACCEPT, 1e-9, 0.5, 1.0)],
)
def test_bands_do_not_overlap(status, confidence, low, high):
    assert low < label_studio_score(status, confidence) <= high


def test_a_queried_image_needs_its_batch_place():
    with pytest.raises(ValueError, match="batch position"):
        label_studio_score(QUERY, 0.5)
    with pytest.raises(ValueError, match="no queue score"):
        label_studio_score("error", 0.5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 50_000), min_size=1, max_size=40, unique=True),  # distinct at 1e-3
    st.integers(0, 12),
    st.integers(0, 2**16),
)
def test_score_strictly_increases_with_queue_position(u, budget, seed):
    """Label Studio serves the lowest score first: that must be exactly our order."""
    rng = np.random.default_rng(seed)
    u = np.array(u) / 1000.0
    accepted = rng.random(len(u)) < 0.3
    q = build_queue(u, accepted, rng.normal(size=(len(u), 5)).astype(np.float32), budget, lambda x: 1 / (1 + x))
    by_position = sorted(q, key=lambda e: e.position)
    assert [e.position for e in by_position] == list(range(len(u)))
    scores = [e.score for e in by_position]
    assert all(a < b for a, b in itertools.pairwise(scores))
    assert all(0 < s <= 1 for s in scores)
    assert [e.priority for e in by_position] == [priority(s) for s in scores]
    assert sum(e.status == QUERY for e in q) == min(budget, int((~accepted).sum()))


def test_an_image_scored_alone_gets_the_score_it_has_in_the_queue():
    """The backend's per-task /predict does not know the batch: its score must still sit in queue order."""
    u = np.array([0.3, 0.8, 0.1])
    q = build_queue(u, np.array([False, False, True]), np.eye(3, dtype=np.float32), budget=0)
    conf = lambda x: 1 / (1 + x)  # noqa: E731
    assert q[0].score == label_studio_score(REST, conf(0.3))
    assert q[2].score == label_studio_score(AUTO_ACCEPT, conf(0.1))
