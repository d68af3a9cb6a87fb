"""One writer of a project's model version: ingest with weights that are not the current model is refused, and one
backend serving projects that name its weights differently answers each under its own name, never renaming itself."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from detector_al.pipelines.ingest_setup import stale_weights
from detector_al.queue.build import UNCERTAINTY_SAMPLING
from detector_al.serving.project_sync import Credentials, ProjectSync, QueueSettings
from detector_al.serving.service import PredictionService
from detector_al.state.registry import ModelRegistry, digest_of
from detector_al.state.store import Store


@pytest.fixture
def weights(tmp_path):
    """Three weights files (the registry names them by their bytes; nothing loads them)."""
    out = {}
    for name in ("first", "retrained", "new"):
        out[name] = tmp_path / f"{name}.pt"
        out[name].write_bytes(name.encode() * 100)
    return out


def test_only_the_current_model_may_write_a_projects_version(tmp_path, weights):
    models = tmp_path / "models"
    assert stale_weights(str(weights["first"]), models, 1, None) is None  # an empty registry: anything goes
    registry = ModelRegistry(models)
    first = registry.add(weights["first"])
    retrained = registry.add(weights["retrained"])
    # no backend yet (no current version): new weights are fine, older ones than the project's are not
    assert stale_weights(str(weights["new"]), models, 1, retrained) is None
    assert stale_weights(str(weights["retrained"]), models, 1, first) is None
    why = stale_weights(str(weights["first"]), models, 1, retrained)
    assert why and f"model version {first}, older than {retrained}" in why and str(registry.path(retrained)) in why
    registry.promote(retrained)  # the backend serves the retrained model
    assert stale_weights(str(weights["retrained"]), models, 1, None) is None
    why = stale_weights(str(weights["first"]), models, 1, None)  # the project's version does not matter then
    assert why and f"older than {retrained}" in why and f"--model {registry.path(retrained)}" in why
    why = stale_weights(str(weights["new"]), models, 1, retrained)
    assert why and f"not the current model {retrained}" in why and "detector-al serve --model" in why
    assert registry.versions() == [first, retrained]  # a refused model is not registered


class _LabelStudio:
    """Label Studio's projects, with the model version each has (``names``); records the projects' updates."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names, self.updates = names, []
        self.projects = SimpleNamespace(get=self._get, update=self._update)

    def _get(self, id):
        return SimpleNamespace(model_version=self.names[id], sampling=UNCERTAINTY_SAMPLING)

    def _update(self, id, **fields):
        self.updates.append((id, fields))


def test_two_projects_naming_the_same_weights_differently_never_rename_the_service(tmp_path, weights):
    registry = ModelRegistry(tmp_path / "models")
    ours = registry.add(weights["first"])
    registry.promote(ours)
    theirs = "v7-" + digest_of(ours)  # what another model folder named the same weights
    store = Store(tmp_path / "s.sqlite3")
    service = PredictionService(SimpleNamespace(version=ours), store)
    ls = _LabelStudio({1: theirs, 2: ours, 3: "v9-deadbeef"})
    sync = ProjectSync(
        store,
        service,
        registry,
        Credentials("http://ls.example", "token"),
        lambda: SimpleNamespace(ls=ls),
        QueueSettings(0, False),
    )
    for project in (1, 2, 1, 2, 3):
        sync.align_project(project)
        assert service.model_version == ours  # never renamed
    assert [service.version_for(p) for p in (1, 2, 3)] == [theirs, ours, ours]
    assert registry.current() == ours
    assert ls.updates == [(3, {"model_version": ours})]  # only the project on other weights is switched
    service.swap(SimpleNamespace(version="v1-0badc0de"))  # a retrained model: its own name everywhere
    assert service.version_for(1) == "v1-0badc0de"


def _add_after(barrier, root: str, weights: str, out) -> None:
    barrier.wait()  # every process lists the versions at about the same moment
    out.put(ModelRegistry(root).add(weights))


def test_processes_sharing_a_model_dir_never_take_the_same_version_number(tmp_path):
    """The backend, retraining and ingest runs share MODEL_DIR from separate processes: each new version gets a
    number of its own (an in-process lock let two processes both take the next one)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    n = 6
    files = []
    for i in range(n):
        files.append(tmp_path / f"w{i}.pt")
        files[-1].write_bytes(bytes([i]) * 8_000_000)  # a copy long enough for the others to list meanwhile
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_add_after, args=(barrier, str(tmp_path / "m"), str(f), out)) for f in files]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    names = sorted(out.get(timeout=5) for _ in procs)
    numbers = sorted(int(v.split("-")[0][1:]) for v in names)
    assert numbers == list(range(n)), names
    assert sorted(ModelRegistry(tmp_path / "m").versions()) == names
