"""Retraining at its limits, against a real Label Studio: a pool larger than the image cache, a cancel and a time
limit outside the training, and too few held-out labels to judge a candidate."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from detector_al.label_studio.client import LabelStudioClient
from detector_al.pipelines.retrain_dataset import in_validation
from detector_al.state.registry import ModelRegistry
from detector_al.state.store import FINISHED
from ml_backend.main import create_app
from ml_backend.settings import Settings
from tests.integration.conftest import wait_for
from tests.integration.test_retraining_label_studio import oracle_regions, pick_labels, with_validation_tasks

pytestmark = pytest.mark.slow


def uploaded_project(label_studio, sample_data, images, title: str) -> tuple[LabelStudioClient, int]:
    """A project whose images were uploaded through Label Studio's Import: the backend downloads them into its cache."""
    client = LabelStudioClient(label_studio.url, label_studio.token)
    project = client.ls.projects.create(title=title, label_config=(sample_data / "label_config.xml").read_text())
    files = {f"file{i}": (p.name, p.read_bytes(), "image/jpeg") for i, p in enumerate(images)}
    client.http.post(
        f"{label_studio.url}/api/projects/{project.id}/import", files=files, timeout=120
    ).raise_for_status()
    return client, project.id


def annotate(client, sample_data, tasks) -> None:
    for t in tasks:
        name = t.data["image"].rsplit("-", 1)[-1]  # /data/upload/<project>/<uuid>-<name>
        client.ls.annotations.create(id=t.id, result=oracle_regions(sample_data, name))


def backend_app(label_studio, trained_weights, model_dir, **settings) -> TestClient:
    return TestClient(
        create_app(
            Settings(
                model_dir=model_dir,
                model_path=str(trained_weights),
                label_studio_url=label_studio.url,
                label_studio_api_key=label_studio.token,
                train_epochs=1,
                **settings,
            )
        )
    )


def start_training(backend: TestClient, project: int) -> int:
    r = backend.post("/webhook", json={"action": "START_TRAINING", "project": {"id": project}})
    assert r.status_code == 200, r.text
    return r.json()["training_job"]


def finished(state, job: int, timeout: float = 600) -> dict:
    done = wait_for(lambda: (j := state.store.training_job(job))["status"] in FINISHED and j, timeout)
    assert done, state.store.training_job(job)
    return done


def test_a_pool_larger_than_the_image_cache_trains_on_every_label(
    label_studio, sample_data, trained_weights, tmp_path_factory
):
    """The cache holds two images, the project has ten labeled ones (downloaded from Label Studio): every one of them
    is in the training or validation split, readable (the symbolic links into the cache broke, and ultralytics skips
    a broken image silently). Too few validation labels first: the job says how many more, and trains nothing."""
    images = sorted((sample_data / "images" / "pool").glob("*.jpg"))[180:196]
    client, project = uploaded_project(label_studio, sample_data, images, "cache smaller than the pool")
    model_dir = tmp_path_factory.mktemp("cache-models") / "models"
    with backend_app(label_studio, trained_weights, model_dir, train_pseudo_ratio=0.0) as backend:
        state = backend.app.state.backend
        two = 2 * max(p.stat().st_size for p in images) + 1
        state.service.config.fetch_limits = replace(state.service.config.fetch_limits, cache_max_bytes=two)
        tasks = with_validation_tasks(client.ls, project)
        v0 = state.service.model_version

        few = pick_labels(tasks, 4, n_val=2)
        annotate(client, sample_data, few)
        job = finished(state, start_training(backend, project))
        assert job["status"] == "waiting" and "Label about 5 more tasks" in job["error"], job
        assert state.service.model_version == v0 and not (model_dir / "training" / f"job-{job['id']}" / "run").exists()

        chosen = pick_labels(tasks, 10, n_val=3)
        annotate(client, sample_data, [t for t in chosen if t.id not in {f.id for f in few}])
        job = finished(state, start_training(backend, project))
        assert job["status"] == "done", job
        root = model_dir / "training" / f"job-{job['id']}"
        for split in ("train", "val"):
            want = sorted(f"task{t.id}" for t in chosen if in_validation(t.id) == (split == "val"))
            files = sorted((root / "images" / split).iterdir())
            assert sorted(f.stem for f in files) == want
            assert all(f.is_file() and f.stat().st_size > 0 for f in files), [f for f in files if not f.exists()]
        assert two < sum(p.stat().st_size for p in images[: len(chosen)])  # far more labels than the cache holds


def test_a_cancel_while_re_scoring_promotes_nothing_and_the_time_limit_bounds_the_whole_job(
    label_studio, sample_data, trained_weights, tmp_path_factory
):
    """A cancel while the promoted candidate re-scores the pool (a slow step, outside the training): the job reads
    cancelled, and the project, the registry and /predict keep the serving model. Then TRAIN_TIMEOUT_S with a slow
    pseudo-labelling: the job fails on its limit before it trains."""
    images = sorted((sample_data / "images" / "pool").glob("*.jpg"))[200:212]
    client, project = uploaded_project(label_studio, sample_data, images, "cancel outside training")
    model_dir = tmp_path_factory.mktemp("cancel-models") / "models"
    with backend_app(label_studio, trained_weights, model_dir, train_tolerance=1.0) as backend:
        state = backend.app.state.backend
        v0 = state.service.model_version
        tasks = with_validation_tasks(client.ls, project)
        annotate(client, sample_data, pick_labels(tasks, 5))
        real = state.service.predict_paths

        def slow_while(phase: str):
            def predict(paths, reduce, detector=None):
                if state.worker.state().get("phase") == phase:
                    time.sleep(5.0)
                return real(paths, reduce, detector)

            return predict

        state.service.predict_paths = slow_while("re-scoring")
        job = start_training(backend, project)
        assert wait_for(lambda: state.worker.state().get("phase") == "re-scoring", 600)
        r = backend.post(f"/jobs/{job}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelling", r.text
        done = finished(state, job)
        assert done["status"] == "cancelled", done
        assert state.service.model_version == v0 and ModelRegistry(model_dir).current() == v0
        candidate = next(v for v in ModelRegistry(model_dir).versions() if v != v0)  # trained, not promoted
        assert client.ls.projects.get(id=project).model_version != candidate
        versions = {p.model_version for p in client.ls.predictions.list(project=project)}
        assert candidate not in versions, versions  # none of its predictions reached a task

        state.service.predict_paths = slow_while("pseudo-labels")
        state.worker.run_job.config = replace(state.worker.run_job.config, timeout_s=3.0)
        done = finished(state, start_training(backend, project))
        assert done["status"] == "failed" and "time limit of 3 s (TRAIN_TIMEOUT_S)" in done["error"], done
        assert state.service.model_version == v0
        assert not (model_dir / "training" / f"job-{done['id']}" / "run").exists()  # stopped before it trained
