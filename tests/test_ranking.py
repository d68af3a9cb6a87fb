"""The queue: decisions, ranks, class balancing."""

from __future__ import annotations

import numpy as np

from detector_al.model.predictions import Detections
from detector_al.policy.decision import Decision
from detector_al.queue.ranking import AUTO_ACCEPT, ERROR, QUERY, REST, assign_queue


def img(name, score, classes=(), decision=REST, emb=None):
    n = len(classes)
    dets = Detections(np.zeros((n, 4)), np.full(n, 0.9), np.array(classes, int))
    e = np.zeros(8, np.float32) if emb is None else emb
    return Decision(name, decision, score=score, shown=dets, embedding=e)


def test_queue_order_batch_then_rest_by_score_then_accepted():
    rng = np.random.default_rng(0)
    images = [img(f"i{k}", s, emb=rng.normal(size=8)) for k, s in enumerate([0.1, 0.9, 0.5, 0.7, 0.3])]
    images.append(img("acc", 0.001, decision=AUTO_ACCEPT))
    images.append(Decision("bad", ERROR, error="empty"))
    entries = assign_queue(images, budget=2, diversity=False)
    by_rank = sorted((e.position, d.source, e.status) for d, e in zip(images, entries, strict=True) if e)
    assert [source for _, source, _ in by_rank] == ["i1", "i3", "i2", "i4", "i0", "acc"]
    assert [status for _, _, status in by_rank[:2]] == [QUERY, QUERY] and entries[-1] is None


def test_class_balancing_lifts_images_of_rare_classes():
    images = [img("common", 0.50, classes=[0]), img("rare", 0.45, classes=[2]), img("none", 0.40)]
    assert assign_queue(images, budget=1, diversity=False)[0].status == QUERY
    entries = assign_queue(images, budget=1, diversity=False, labeled_class_counts=np.array([100, 80, 2]))
    assert entries[1].status == QUERY and images[1].score == 0.45  # the decision's score stays raw
