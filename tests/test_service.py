"""PredictionService: torch stays on the one inference thread (loading and swapping included)."""

from __future__ import annotations

import threading

from detector_al.model.detector import Detector
from detector_al.serving.service import PredictionService
from detector_al.state.store import Store


def _recording_load(monkeypatch) -> list[str]:
    threads: list[str] = []
    real = Detector.load.__func__

    def load(cls, weights, **kwargs):
        threads.append(threading.current_thread().name)
        return real(cls, weights, **kwargs)

    monkeypatch.setattr(Detector, "load", classmethod(load))
    return threads


def test_models_are_loaded_and_swapped_on_the_inference_thread(monkeypatch, tmp_path, trained_weights, sample_data):
    loaded_on = _recording_load(monkeypatch)
    service = PredictionService.load(trained_weights, Store(tmp_path / "s.sqlite3"), conf=0.05, version="v1")
    ran_on: list[str] = []
    image = str(next((sample_data / "images" / "pool").glob("*.jpg")))

    def reduce(detector, pred):
        ran_on.append(threading.current_thread().name)
        return detector.version

    assert service.predict_paths([image], reduce) == ["v1"]
    service.load_and_swap(trained_weights, conf=0.05, version="v2")
    assert service.model_version == "v2"
    assert service.predict_paths([image], reduce) == ["v2"]
    assert len(loaded_on) == 2
    assert set(loaded_on) == set(ran_on), (loaded_on, ran_on)
    assert loaded_on[0] != threading.current_thread().name


def test_a_request_of_more_than_one_batch_straddling_a_swap_is_served_by_one_version(
    tmp_path, trained_weights, sample_data
):
    service = PredictionService.load(trained_weights, Store(tmp_path / "s.sqlite3"), conf=0.05, version="v1")
    other = Detector.load(trained_weights, conf=0.05, version="v2")
    images = [str(p) for p in sorted((sample_data / "images" / "pool").glob("*.jpg"))[:20]]  # batches of 16 + 4
    seen: list[str] = []

    def reduce(detector, pred):
        seen.append(detector.version)
        if len(seen) == 1:
            service.swap(other)  # a retraining promotes a model while the first batch is being served
        return detector.version

    assert service.predict_paths(images, reduce) == ["v1"] * 20
    assert service.model_version == "v2"
    assert service.predict_paths(images[:1], reduce) == ["v2"]


def test_a_request_larger_than_the_image_cache_predicts_every_task(detector, sample_data, tmp_path):
    """One /predict of many downloaded images with a cache that holds one of them: each image stays until it is
    predicted (pinned), so every task gets its prediction; afterwards the cache keeps to its cap again."""
    from detector_al.io.fetch.cache import pinned
    from detector_al.io.fetch.task_image import FetchLimits
    from detector_al.serving.service import ServiceConfig
    from tests.loopback import Loopback

    images = sorted((sample_data / "images" / "pool").glob("*.jpg"))[:13]
    blobs = {f"/img{i}.jpg": p.read_bytes() for i, p in enumerate(images)}
    cap = max(len(b) for b in blobs.values()) + 1
    limits = FetchLimits(allow_private=True, cache_max_bytes=cap)
    service = PredictionService(
        detector, Store(tmp_path / "store.sqlite3"), ServiceConfig(cache_dir=tmp_path / "cache", fetch_limits=limits)
    )
    label_config = (sample_data / "label_config.xml").read_text()
    with Loopback(lambda req: req.send(200, blobs[req.path])) as server:
        tasks = [{"id": i + 1, "data": {"image": f"{server.url}{path}"}} for i, path in enumerate(blobs)]
        out = service.predict_tasks(tasks[:12], label_config, project="3.1")
        assert [p.error for p in out] == [None] * 12
        assert [p.task_id for p in out] == list(range(1, 13))
        assert pinned() == 0
        service.predict_tasks(tasks[12:], label_config, project="3.1")  # the next download: the cap holds again
    assert [f.name.endswith("img12.jpg") for f in (tmp_path / "cache").iterdir()] == [True]
