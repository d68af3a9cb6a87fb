"""What an ingest run needs before it starts: the model's version name, the Label Studio project (found or
created) with its labeling config, and the store file it shares with the backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from detector_al.label_studio.client import LabelStudioClient
from detector_al.label_studio.task_sink import LabelStudioSink, find_or_create_project
from detector_al.model.detector import BATCH_SIZE
from detector_al.policy.settings import POLICY, TASKS_PER_REQUEST, PolicySettings
from detector_al.state.registry import DEFAULT_MODEL_DIR, ModelRegistry, names_same_weights
from detector_al.state.store import STORE_FILE_NAME


@dataclass
class IngestConfig:
    """One ingest run's settings: the policy (the one :class:`~detector_al.policy.settings.PolicySettings`, built by
    the command from its options and the environment the backend reads too), the round, and how it writes."""

    policy: PolicySettings = POLICY
    round_index: int = 0
    batch_size: int = BATCH_SIZE
    tasks_per_request: int = TASKS_PER_REQUEST  # images scored, then created in Label Studio by one import request
    files_root: Path | None = None  # Label Studio's LOCAL_FILES_DOCUMENT_ROOT, when the folder is under it
    label_mapping: dict[str, str] = field(default_factory=dict)  # model class -> Label Studio label (LABEL_MAPPING)


def ingest_store_path(store: Path | None, model_dir: Path | None) -> Path:
    """``store`` if given, else the backend's store in ``model_dir`` (default
    :data:`~detector_al.state.registry.DEFAULT_MODEL_DIR`, the backend's default): one store for both."""
    if store is not None:
        return store
    return (model_dir or DEFAULT_MODEL_DIR) / STORE_FILE_NAME


def registered_version(model: str, model_dir: Path | None) -> str | None:
    """The weights' version name, registered in the backend's registry of ``model_dir`` (default
    :data:`~detector_al.state.registry.DEFAULT_MODEL_DIR`, the backend's default ``MODEL_DIR``): the name the backend
    serves them under too. None for a model name that is not a file (the detector names it)."""
    if not Path(model).is_file():
        return None
    return ModelRegistry(model_dir or DEFAULT_MODEL_DIR).add(model, note="registered by ingest")


def stale_weights(model: str, model_dir: Path | None, project: int, project_version: str | None) -> str | None:
    """Why ``model`` may not write ``project``'s model version; None when it may.

    Only the current model sets a project's version (one writer: the model the backend serves, which retraining
    replaces). With a current version in ``model_dir``'s registry (a backend served it), ingest runs with those
    weights only; without one, not with weights older than the project's version when this registry holds that
    version. Reads the registry and registers nothing, so weights refused here stay new to the backend (serving them
    makes them current).
    """
    registry = ModelRegistry(model_dir or DEFAULT_MODEL_DIR)
    ours = registry.version_of(model) if Path(model).is_file() else None  # None: weights this registry never held
    versions = registry.versions()
    current = registry.current()
    if current is not None:  # what the backend serves
        if ours is not None and names_same_weights(current, ours):
            return None
        use = current
    else:  # no backend yet: new weights are fine, older ones than the project's are not
        use = registry.registered(project_version)
        if use is None or ours is None or versions.index(ours) >= versions.index(use):
            return None
    older = ours is not None and versions.index(ours) < versions.index(use)
    why = f"{model} is model version {ours}, older than {use}" if older else f"{model} is not the current model {use}"
    where = f"project {project} serves {project_version}" if project_version else f"project {project}"
    fix = f"ingest with --model {registry.path(use)}"
    if ours is None:
        fix += f", or make these weights current first: detector-al serve --model {model} --model-dir {registry.root}"
    return f"{why} in {registry.root} ({where}): only the current model sets a project's model version; {fix}"


def open_project(
    ls_url: str,
    api_key: str,
    project: int | None,
    title: str | None,
    label_config: str,
    files_root: Path | None,
    folder: Path,
) -> tuple[LabelStudioSink, int, str]:
    """Connect to Label Studio and open the project (by id, else by ``title``, created with ``label_config`` if
    none has it).

    Returns:
        The sink that writes ``folder``'s tasks there, the project id, and the project's labeling config (the one
        in Label Studio, which may differ from ``label_config`` for an existing project).

    Raises:
        LabelStudioError: Label Studio is unreachable or refuses the key.
    """
    client = LabelStudioClient(ls_url, api_key)
    client.check()
    if project is None:
        project = find_or_create_project(client, title, label_config)
    config = client.ls.projects.get(id=project).label_config
    return LabelStudioSink(client, project, files_root, folder), project, config
