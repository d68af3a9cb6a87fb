"""TypiClust cold start and the switch to uncertainty: k-means, typicality, cluster coverage, the rule."""

from __future__ import annotations

import numpy as np
import pytest

from detector_al.queue.selection import kmeans, typicality, typiclust, use_cold_start


def blobs(sizes, seed=0, spread=0.1, d=8):
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[: len(sizes)] * 10
    x = np.concatenate([c + rng.normal(scale=spread, size=(n, d)) for c, n in zip(centres, sizes, strict=True)])
    return x, np.repeat(np.arange(len(sizes)), sizes)


def test_kmeans_recovers_separated_blobs_and_is_seeded():
    x, truth = blobs([30, 20, 10])
    lab = kmeans(x, 3, seed=1)
    for j in range(3):
        assert len(set(lab[truth == j].tolist())) == 1
    assert len(set(lab.tolist())) == 3
    assert kmeans(x, 3, seed=1).tolist() == lab.tolist()


def test_kmeans_with_as_many_clusters_as_points_fills_every_cluster():
    x = np.random.default_rng(0).normal(size=(12, 3))
    assert sorted(kmeans(x, 12).tolist()) == list(range(12))
    assert kmeans(np.ones((5, 2)), 3).max() <= 2  # identical points: no crash


def test_typicality_prefers_the_dense_core_over_an_outlier():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [-0.1, 0.0], [3.0, 3.0]])
    t = typicality(x, knn=3)
    assert t.argmax() == 0 and t.argmin() == 4


def test_one_pick_per_blob_the_largest_first_and_each_the_most_typical():
    x, truth = blobs([30, 20, 10], spread=0.3)
    picked = typiclust(x, 3, seed=0)
    assert truth[picked].tolist() == [0, 1, 2]
    for i, j in zip(picked, range(3), strict=True):  # the pick is the blob's densest point
        members = np.flatnonzero(truth == j)
        t = typicality(x[members], min(20, len(members) // 2))
        assert i == members[t.argmax()]


def test_clusters_covered_by_labeled_images_come_last():
    x, truth = blobs([30, 20, 10])
    labeled = x[truth == 0].mean(0, keepdims=True)  # the biggest blob is already labeled: K = 1 + 2 clusters
    picked = typiclust(x, 2, labeled_emb=labeled, seed=0)
    assert truth[picked].tolist() == [1, 2]


def test_budget_edge_cases_and_determinism():
    x, _ = blobs([8, 8])
    assert len(typiclust(x, 0)) == 0
    allp = typiclust(x, 100)
    assert sorted(allp.tolist()) == list(range(16))  # more budget than images: each image once
    assert typiclust(x, 5, seed=3).tolist() == typiclust(x, 5, seed=3).tolist()
    one = typiclust(x[:1], 1)
    assert one.tolist() == [0]


def test_small_clusters_are_skipped_while_big_ones_remain():
    x, truth = blobs([30, 25, 2], spread=0.2)  # a 2-image outlier blob
    picked = typiclust(x, 4, seed=0)
    assert 2 not in truth[picked].tolist()
    assert len(set(picked.tolist())) == 4


@pytest.mark.parametrize(
    ("max_conf", "kwargs", "cold"),
    [
        ([0.0, 0.0, 0.1, 0.6], {}, True),  # 1 of 4 images holds a sure box
        ([0.9, 0.5, 0.0, 0.1], {}, False),  # 2 of 4: exactly the share, warm
        ([0.9, 0.8, 0.7, 0.26], {}, False),
        ([0.45, 0.4, 0.3, 0.3], {}, True),  # boxes everywhere, none sure (BCCD's round 0)
        ([], {}, True),
        ([0.9, 0.0, 0.0, 0.0], {"min_share": 0.2}, False),  # a pool that is mostly empty by nature
        ([0.3, 0.3, 0.3, 0.0], {"conf": 0.25}, False),
    ],
)
def test_use_cold_start(max_conf, kwargs, cold):
    assert use_cold_start(np.array(max_conf), **kwargs) is cold
