"""The stored pool's queue in bounded memory gives build_queue's batch and entries (warm, cold, near-duplicates)."""

from __future__ import annotations

import numpy as np
import pytest

from detector_al.queue.build import QUERY, build_queue, default_confidence
from detector_al.queue.plan import StoredPlace, plan_stored_queue


def pool(n: int, seed: int, dup_groups: int = 0, max_conf: float = 0.9):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    u = rng.gamma(2.0, 1.0, n)
    for g in range(dup_groups):  # the most uncertain images come in near-identical groups of 5
        top = np.argsort(-u)[5 * g : 5 * g + 5]
        emb[top] = emb[top[0]] + rng.normal(0, 1e-5, (5, 6)).astype(np.float32)
    accepted = rng.uniform(size=n) < 0.2
    conf = np.full(n, max_conf) if np.isscalar(max_conf) else max_conf
    places = [StoredPlace(1000 + i, float(u[i]), bool(accepted[i]), float(conf[i]), emb[i].tobytes()) for i in range(n)]
    return places, u, accepted, emb, conf


def full_batch(u, accepted, emb, budget, **kw) -> list[int]:
    q = build_queue(u, accepted, emb, budget, **kw)
    return [1000 + i for _, i in sorted((e.position, i) for i, e in enumerate(q) if e.status == QUERY)]


def planned_batch(plan) -> list:
    return [k for k, _ in sorted(plan.batch.items(), key=lambda kv: kv[1])]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("diversity", [False, True])
def test_a_warm_pool_gets_build_queues_batch_from_a_few_candidates(seed, diversity):
    places, u, accepted, emb, _ = pool(3000, seed, dup_groups=3)
    plan = plan_stored_queue(lambda: iter(places), 20, default_confidence, diversity=diversity, top_k=64)
    assert planned_batch(plan) == full_batch(u, accepted, emb, 20, diversity=diversity)
    full = build_queue(u, accepted, emb, 20, diversity=diversity)
    for p, e in zip(places, full, strict=True):  # every entry: the batch's place, else the band's score
        mine = plan.entry(p)
        assert (mine.status, mine.score) == (e.status, e.score)
        assert mine.position == (e.position if e.status == QUERY else -1)


def test_near_duplicates_filling_the_candidates_widen_the_search():
    places, u, accepted, emb, _ = pool(500, 7, dup_groups=20)  # the top 100 are 20 groups of 5 near-copies
    plan = plan_stored_queue(lambda: iter(places), 30, default_confidence, top_k=32)
    assert planned_batch(plan) == full_batch(u, accepted, emb, 30)


def test_a_cold_pool_gets_the_typiclust_batch_away_from_labeled_clusters():
    places, u, accepted, emb, conf = pool(400, 3, max_conf=0.2)
    labeled = emb[:3]
    asked = []

    def labeled_embeddings(dim):
        asked.append(dim)
        return labeled

    plan = plan_stored_queue(
        lambda: iter(places), 10, default_confidence, cold_start=True, labeled_embeddings=labeled_embeddings
    )
    assert plan.cold and asked == [6]
    expected = full_batch(u, accepted, emb, 10, max_confidence=conf, labeled_embeddings=labeled)
    assert planned_batch(plan) == expected


def test_a_row_without_max_confidence_keeps_the_uncertainty_batch():
    places, u, accepted, emb, _ = pool(200, 5, max_conf=0.2)
    places[17] = StoredPlace(places[17].key, places[17].uncertainty, places[17].accepted, None, places[17].embedding)
    plan = plan_stored_queue(lambda: iter(places), 10, default_confidence, cold_start=True)
    assert not plan.cold and planned_batch(plan) == full_batch(u, accepted, emb, 10)


def test_an_empty_or_accepted_pool_has_no_batch():
    assert plan_stored_queue(lambda: iter([]), 10, default_confidence).batch == {}
    places, *_ = pool(20, 1)
    accepted = [StoredPlace(p.key, p.uncertainty, True, p.max_confidence, p.embedding) for p in places]
    plan = plan_stored_queue(lambda: iter(accepted), 10, default_confidence)
    assert plan.batch == {} and all(plan.entry(p).status == "auto_accept" for p in accepted)
