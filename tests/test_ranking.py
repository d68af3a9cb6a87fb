"""The queue: decisions, ranks, class balancing."""

from __future__ import annotations

import numpy as np

from detector_al.model.predictions import Detections
from detector_al.queue.ranking import AUTO_ACCEPT, ERROR, QUERY, REST, ScoredImage, assign_queue


def img(name, score, classes=(), decision=REST, emb=None):
    n = len(classes)
    dets = Detections(np.zeros((n, 4)), np.full(n, 0.9), np.array(classes, int))
    e = np.zeros(8, np.float32) if emb is None else emb
    return ScoredImage(source=name, score=score, decision=decision, detections=dets, embedding=e)


def test_queue_order_batch_then_rest_by_score_then_accepted():
    rng = np.random.default_rng(0)
    images = [img(f"i{k}", s, emb=rng.normal(size=8)) for k, s in enumerate([0.1, 0.9, 0.5, 0.7, 0.3])]
    images.append(img("acc", 0.001, decision=AUTO_ACCEPT))
    images.append(ScoredImage(source="bad", decision=ERROR, error="empty"))
    assign_queue(images, budget=2, diversity=False)
    by_rank = sorted((i for i in images if i.rank), key=lambda i: i.rank)
    assert [i.source for i in by_rank] == ["i1", "i3", "i2", "i4", "i0", "acc"]
    assert [i.decision for i in by_rank[:2]] == [QUERY, QUERY] and images[-1].rank is None


def test_class_balancing_lifts_images_of_rare_classes():
    images = [img("common", 0.50, classes=[0]), img("rare", 0.45, classes=[2]), img("none", 0.40)]
    assign_queue(images, budget=1, diversity=False)
    assert images[0].decision == QUERY
    images = [img("common", 0.50, classes=[0]), img("rare", 0.45, classes=[2]), img("none", 0.40)]
    assign_queue(images, budget=1, diversity=False, labeled_class_counts=np.array([100, 80, 2]))
    assert images[1].decision == QUERY and images[1].score == 0.45  # the stored score stays raw
