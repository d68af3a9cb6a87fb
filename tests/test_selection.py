"""Selection: budget, diversity, near-duplicates, cold start, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from detector_al.queue.selection import candidates, class_balance_weights, cold_start, k_center_greedy, select_batch


def unit(rng, n, d=16):
    e = rng.normal(size=(n, d))
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_many_copies_of_one_image_are_selected_once():
    rng = np.random.default_rng(0)
    distinct = unit(rng, 30)
    copy = distinct[:1] + rng.normal(scale=1e-4, size=(50, 16))  # 50 near-identical frames
    emb = np.concatenate([copy, distinct[1:]])
    scores = np.concatenate([np.full(50, 0.9), rng.uniform(0.1, 0.5, 29)])  # the copies are the most uncertain
    batch = select_batch(scores, emb, budget=10)
    assert len(batch) == 10
    assert (batch < 50).sum() == 1
    d = np.linalg.norm(emb[batch][:, None] - emb[batch][None], axis=2) + np.eye(10) * 9
    assert d.min() > 0.1


def test_without_diversity_the_top_scores_are_taken():
    scores = np.array([0.1, 0.9, 0.5, 0.7])
    assert select_batch(scores, np.eye(4), budget=2, diversity=False).tolist() == [1, 3]


def test_first_pick_is_the_most_uncertain():
    rng = np.random.default_rng(1)
    scores = rng.uniform(size=40)
    assert select_batch(scores, unit(rng, 40), budget=5)[0] == int(np.argmax(scores))


def test_k_center_covers_clusters():
    rng = np.random.default_rng(2)
    centres = unit(rng, 4) * 10
    emb = np.concatenate([c + rng.normal(scale=0.1, size=(25, 16)) for c in centres])
    picked = k_center_greedy(emb, 4, first=0)
    assert sorted(set(picked // 25)) == [0, 1, 2, 3]


def test_labeled_images_count_as_covered():
    emb = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0]])
    assert k_center_greedy(emb, 1, covered=np.array([[0.0, 0.0]])).tolist() == [2]


def test_cold_start_is_deterministic_for_a_seed_and_varies_across_seeds():
    emb = unit(np.random.default_rng(3), 100)
    a, b = cold_start(emb, 10, seed=5), cold_start(emb, 10, seed=5)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 10
    assert any(cold_start(emb, 10, seed=s)[0] != a[0] for s in range(6, 12))


def test_candidates_skip_duplicates():
    emb = np.array([[0.0, 0.0], [0.0, 0.001], [1.0, 0.0]])
    assert candidates(np.array([0.9, 0.8, 0.1]), emb, 2).tolist() == [0, 2]


def test_class_balance_favours_rare_classes():
    w = class_balance_weights([np.array([0]), np.array([2]), np.array([], int)], np.array([100, 50, 5]))
    assert w[1] > w[0] and w[2] == 1.0
    assert w[1] == pytest.approx(1 + 0.5 * 0.95)


def test_budget_edge_cases():
    assert len(select_batch(np.array([]), np.zeros((0, 2)), 5)) == 0
    assert len(select_batch(np.array([0.5, 0.2]), np.eye(2), 0)) == 0
    assert sorted(select_batch(np.array([0.5, 0.2]), np.eye(2), 10).tolist()) == [0, 1]


def test_a_pool_of_identical_images_still_fills_the_budget():
    emb = np.ones((6, 4)) / 2
    batch = select_batch(np.array([0.1, 0.6, 0.3, 0.5, 0.2, 0.4]), emb, budget=3)
    assert batch.tolist() == [1, 3, 5]
