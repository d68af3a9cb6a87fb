"""What the commands of :mod:`detector_al.cli.app` share: image arguments to files, failing with a message, loading
a model."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from detector_al.io.images import list_images


def expand_sources(paths: list[Path]) -> list[Path]:
    """Files as given, and the image files inside folders (recursively), in a stable order.

    A named file is kept whatever its suffix (it gets an error record if it is no image); a folder
    contributes only files with image suffixes.
    """
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(list_images(p))
        elif p.exists():
            out.append(p)
        else:
            raise typer.BadParameter(f"no such file or folder: {p}")
    return out


def fail(message: str) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with status 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def load_detector(model: str, **kwargs):
    """:meth:`Detector.load <detector_al.model.detector.Detector.load>`, failing with a message for a missing or
    unsupported model."""
    from detector_al.model.detector import Detector, UnsupportedModelError

    try:
        return Detector.load(model, **kwargs)
    except (FileNotFoundError, UnsupportedModelError) as exc:
        fail(str(exc))


RAY_HELP = "Score on Ray: a local Ray on this machine (see --ray-address for a cluster)."
RAY_ADDRESS_HELP = "Score on the Ray cluster at this address (auto, ray://head:10001); implies --ray."
RAY_WORKERS_HELP = "Ray actors, one model each (default: one per GPU, else one per CPU of the cluster)."
RAY_GPUS_HELP = (
    "GPU fraction per Ray actor (default where the cluster has GPUs: its GPUs shared out among --ray-workers, at "
    "most 1 each, else 1; 0.5 puts two on a GPU)."
)


def ray_options(use_ray: bool, address: str | None, workers: int | None, gpus: float | None, batch_size: int):
    """The :class:`~detector_al.scoring.ray_stream.RayOptions` the Ray flags ask for, None without them; fails with the
    install hint when Ray is missing."""
    if not (use_ray or address):
        return None
    from detector_al.scoring.ray_stream import INSTALL_HINT, RayOptions, ray_available

    if not ray_available():
        fail(f"--ray needs Ray. {INSTALL_HINT}")
    if workers is not None and workers < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--ray-workers")
    if gpus is not None and gpus < 0:
        raise typer.BadParameter("must be >= 0", param_hint="--ray-gpus-per-worker")
    return RayOptions(address=address, workers=workers, gpus_per_worker=gpus, batch_size=batch_size)


def policy_from_options(
    strategy,
    score_threshold,
    budget,
    cold_start,
    ceal_delta0=None,
    ceal_decay=None,
    auto_accept=True,
    ceal_min_confidence=None,
):
    """The one :class:`~detector_al.policy.settings.PolicySettings` of a command's options; a value the policy refuses
    fails as a bad parameter, saying why."""
    from detector_al.policy.settings import PolicySettings

    try:
        return PolicySettings.from_options(
            strategy, score_threshold, budget, cold_start, ceal_delta0, ceal_decay, auto_accept, ceal_min_confidence
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def parse_label_mapping(text: str | None) -> dict[str, str]:
    """``--label-mapping`` / ``LABEL_MAPPING``: a JSON object of model class -> Label Studio label ({} when absent)."""
    if not text:
        return {}
    import json

    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--label-mapping") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise typer.BadParameter('a JSON object of strings, e.g. {"car": "Vehicle"}', param_hint="--label-mapping")
    return mapping
