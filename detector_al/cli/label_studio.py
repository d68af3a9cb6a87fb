"""The commands around Label Studio: the ``demo``, the ML backend (``serve``), and ``ingest`` of a folder."""

from __future__ import annotations

from pathlib import Path

import typer

from detector_al.cli.common import (
    RAY_ADDRESS_HELP,
    RAY_GPUS_HELP,
    RAY_HELP,
    RAY_WORKERS_HELP,
    expand_sources,
    fail,
    load_detector,
    parse_label_mapping,
    policy_from_options,
    ray_options,
)
from detector_al.cli.model import print_summary
from detector_al.demo.bootstrap_model import SAMPLE_DATA, ensure_bootstrap_model
from detector_al.model.detector import BATCH_SIZE
from detector_al.policy.settings import COLD_START, ENV, POLICY, SCORER_CONF, TASKS_PER_REQUEST
from detector_al.policy.strategies import DEFAULT_STRATEGY, SERVING_STRATEGIES


def demo(
    model: str = typer.Option(None, "--model", "-m", help="Use these weights instead of the bootstrap model."),
    train_bootstrap: bool = typer.Option(
        False, help="Train the bootstrap model here (about 6 min on 2 cores) instead of using the shipped weights."
    ),
    ls_url: str = typer.Option(None, "--ls-url", help="Use this Label Studio instead of starting one."),
    api_key: str = typer.Option(None, "--api-key", envvar="LABEL_STUDIO_API_KEY", help="Its API token."),
    ls_port: int = typer.Option(8080, help="Port of the local Label Studio."),
    backend_port: int = typer.Option(9090, help="Port of the ML backend."),
    data_dir: Path = typer.Option(Path(".cache") / "demo", help="Label Studio data, model versions, state."),
    budget: int = typer.Option(POLICY.budget, help="Images at the head of the queue."),
    train_epochs: int = typer.Option(20, help="Fine-tuning epochs when you press Start Training."),
    train_tolerance: float = typer.Option(
        0.005, help="Promote a retrained model if its mAP50-95 is at most this much (plus small-split noise) worse."
    ),
    exit_after_setup: bool = typer.Option(False, help="Stop the servers once everything is set up."),
    offline: bool = typer.Option(False, help="No Label Studio: score the sample pool and print the queue."),
) -> None:
    """The main job: a local Label Studio with an active-learning queue over the sample data, end to end."""
    if offline:
        _offline_demo(model, budget, train_bootstrap)
        return
    from detector_al.demo.run import DemoConfig, install_sigterm_handler, run_demo
    from detector_al.label_studio.client import LabelStudioError
    from detector_al.label_studio.local_server import label_studio_bin

    if ls_url is None and not label_studio_bin().exists():
        fail(
            f"Label Studio is not installed at {label_studio_bin()}: run `make demo` (it makes .venv-ls), or "
            "pass --ls-url/--api-key, or --offline"
        )
    install_sigterm_handler()
    try:
        code = run_demo(
            DemoConfig(
                data_dir=data_dir,
                model=model,
                train_bootstrap=train_bootstrap,
                ls_url=ls_url,
                api_key=api_key,
                ls_port=ls_port,
                backend_port=backend_port,
                budget=budget,
                train_epochs=train_epochs,
                train_tolerance=train_tolerance,
                exit_after_setup=exit_after_setup,
            )
        )
    except (LabelStudioError, FileNotFoundError, RuntimeError, TimeoutError) as exc:
        fail(str(exc))
    raise typer.Exit(code)


def _offline_demo(model: str | None, budget: int, train_bootstrap: bool, top: int = 15) -> None:
    from detector_al.pipelines.score import plot_queue_scores, score_files, write_queue_file
    from detector_al.policy.ceal import CealConfig

    pool, out = SAMPLE_DATA / "images" / "pool", Path("runs") / "demo"
    if not pool.exists():
        fail(f"pool folder not found: {pool} (run from the repository root)")
    det = load_detector(model or str(ensure_bootstrap_model(train_bootstrap)), conf=SCORER_CONF)
    ceal = CealConfig()
    records = score_files(det, expand_sources([pool]), DEFAULT_STRATEGY, budget, ceal=ceal, cold_start=COLD_START)
    write_queue_file(out / "queue.jsonl", records, det.names)
    print_summary(records, ceal, 0, top=top, names=det.names)
    plot = plot_queue_scores(
        records, ceal, 0, out / "scores.png", title=f"{DEFAULT_STRATEGY} scores of the sample pool"
    )
    typer.echo(f"queue: {out / 'queue.jsonl'}  plot: {plot}")


def serve(
    model: str = typer.Option(
        None, "--model", "-m", help="Weights to serve (default: MODEL_PATH, else the current version in MODEL_DIR)."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for other machines)."),
    port: int = typer.Option(9090, help="Port (Label Studio's default for ML backends)."),
    model_dir: Path = typer.Option(None, help="Model versions and state (default: MODEL_DIR or models/backend)."),
) -> None:
    """Run the Label Studio ML backend (uvicorn). Configured by LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY,
    BASIC_AUTH_USER, BASIC_AUTH_PASS, MODEL_DIR, SCORE_THRESHOLD, LABEL_MAPPING, TRAIN_EVERY ..."""
    import uvicorn
    from pydantic import ValidationError

    from detector_al.state.registry import ModelRegistry
    from ml_backend.main import create_app
    from ml_backend.settings import Settings, exposure_warning

    overrides = {k: v for k, v in {"model_path": model, "model_dir": model_dir}.items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        fail("the backend's settings are refused: " + "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors()))
    warning = exposure_warning(settings, host)
    if warning:
        typer.secho(warning, fg="red", bold=True, err=True)

    try:  # fail here, with a clear message, rather than inside the server's start-up
        ModelRegistry(settings.model_dir).resolve(settings.model_path)
    except FileNotFoundError as exc:
        fail(str(exc))
    uvicorn.run(create_app(settings), host=host, port=port, workers=1, log_level="info")


# Over 60 lines: typer declares the 19 options in the signature (44 lines); the body
# only checks them and calls the library (detector_al.pipelines.ingest_setup, detector_al.pipelines.ingest).
def ingest(
    folder: Path = typer.Argument(..., help="Folder of images (searched recursively)."),
    model: str = typer.Option(..., "--model", "-m", help="Weights (.pt)."),
    ls_url: str = typer.Option(None, "--ls-url", envvar="LABEL_STUDIO_URL", help="Label Studio URL."),
    api_key: str = typer.Option(None, "--api-key", envvar="LABEL_STUDIO_API_KEY", help="Label Studio API token."),
    project: int = typer.Option(None, "--project", help="Label Studio project id."),
    project_title: str = typer.Option(None, "--project-title", help="Project title (created if it does not exist)."),
    label_config: Path = typer.Option(
        None,
        help="Labeling config for a new project / the import file "
        "(default: one RectangleLabels label per model class).",
    ),
    files_root: Path = typer.Option(
        None,
        "--ls-files-root",
        envvar="LOCAL_FILES_DOCUMENT_ROOT",
        help="Label Studio's local-files root: images under it are served, not uploaded.",
    ),
    out: Path = typer.Option(None, "--out", help="Offline: write a Label Studio import file (tasks.json)."),
    export_pseudo: Path = typer.Option(None, "--export-pseudo-labels", help="Write auto-accepted images as YOLO."),
    store_path: Path = typer.Option(
        None, "--store", help="SQLite state file (default: the backend's, MODEL_DIR/detector_al.sqlite3)."
    ),
    model_dir: Path = typer.Option(
        None,
        "--model-dir",
        envvar="MODEL_DIR",
        help="The ML backend's model folder (default models/backend, as the backend's): one store, one version name "
        "and one round with the backend.",
    ),
    strategy: str = typer.Option(
        DEFAULT_STRATEGY,
        envvar=ENV["strategy"],
        help="Uncertainty strategy: " + ", ".join(SERVING_STRATEGIES) + ", entropy_roi:<cost-model file>",
    ),
    round_index: int = typer.Option(
        None, "--round", help="Active-learning round (CEAL threshold; default: the backend's round for the project)."
    ),
    budget: int = typer.Option(POLICY.budget, envvar=ENV["budget"], help="Images to put at the head of the queue."),
    batch_size: int = typer.Option(BATCH_SIZE, help="Images per forward pass."),
    tasks_per_request: int = typer.Option(TASKS_PER_REQUEST, help="Tasks created in Label Studio per import request."),
    score_threshold: float = typer.Option(
        POLICY.score_threshold, envvar=ENV["score_threshold"], help="Lowest box confidence in the pre-annotations."
    ),
    ceal_delta0: float = typer.Option(None, envvar=ENV["ceal_delta0"], help="CEAL threshold at round 0."),
    ceal_decay: float = typer.Option(None, envvar=ENV["ceal_decay"], help="CEAL threshold decay per round."),
    ceal_min_confidence: float = typer.Option(
        None,
        envvar=ENV["ceal_min_confidence"],
        help="CEAL: the lowest box confidence of an auto-accepted image (default from CealConfig).",
    ),
    label_mapping: str = typer.Option(
        None, envvar=ENV["label_mapping"], help='Model class -> Label Studio label, JSON: {"car": "Vehicle"}.'
    ),
    cold_start: bool = typer.Option(
        COLD_START,
        "--cold-start/--no-cold-start",
        envvar=ENV["cold_start"],
        help="While the model is cold (fewer than half the images hold a box at confidence >= 0.5), queue a "
        "TypiClust batch (typical images of clusters not labeled yet) first; once warm, by uncertainty.",
    ),
    use_ray: bool = typer.Option(False, "--ray", help=RAY_HELP),
    ray_address: str = typer.Option(None, "--ray-address", envvar="DETECTOR_AL_RAY_ADDRESS", help=RAY_ADDRESS_HELP),
    ray_workers: int = typer.Option(None, "--ray-workers", help=RAY_WORKERS_HELP),
    ray_gpus: float = typer.Option(None, "--ray-gpus-per-worker", help=RAY_GPUS_HELP),
) -> None:
    """Pre-annotate a folder and push it into a prioritised Label Studio queue (or write tasks.json offline).

    Idempotent and resumable: the content hash of each image decides; a second run adds only new files and
    refreshes the priorities. The policy options read the backend's environment variables (STRATEGY,
    SCORE_THRESHOLD, QUEUE_BUDGET, QUEUE_COLD_START, CEAL_DELTA0, CEAL_DECAY, CEAL_MIN_CONFIDENCE, LABEL_MAPPING), so
    one environment configures both alike."""
    from detector_al.pipelines.ceal_gate import gated_policy
    from detector_al.pipelines.ingest import IngestConfig
    from detector_al.pipelines.ingest import ingest as run_ingest
    from detector_al.pipelines.ingest_setup import ingest_store_path, registered_version, stale_weights
    from detector_al.state.registry import DEFAULT_MODEL_DIR, ModelRegistry
    from detector_al.state.store import Store

    online = ls_url is not None or project is not None or project_title is not None
    _check_ingest_options(folder, online, out, export_pseudo)
    policy = policy_from_options(
        strategy, score_threshold, budget, cold_start, ceal_delta0, ceal_decay, ceal_min_confidence=ceal_min_confidence
    )
    mapping = parse_label_mapping(label_mapping)
    ray_opts = ray_options(use_ray, ray_address, ray_workers, ray_gpus, batch_size)
    det = load_detector(model, conf=SCORER_CONF)
    project_ref = (ls_url, api_key, project, project_title) if online else None
    sink, pid, target = _ingest_target(det.names, label_config, project_ref, files_root, folder, mapping)
    if sink is not None:  # only the current model sets the project's version: checked before registering the weights
        why = stale_weights(model, model_dir, pid, sink.ls.projects.get(id=pid).model_version)
        if why:
            fail(why)
    det.version = registered_version(model, model_dir) or det.version
    store = Store(ingest_store_path(store_path, model_dir))
    cfg = IngestConfig(
        policy=gated_policy(policy, ModelRegistry(model_dir or DEFAULT_MODEL_DIR), det.version),
        round_index=store.project(pid)["round"] if round_index is None else round_index,
        batch_size=batch_size,
        tasks_per_request=tasks_per_request,
        files_root=files_root,
        label_mapping=mapping,
    )
    report = run_ingest(folder, det, store, target, cfg, sink=sink, project=pid, ray=ray_opts)
    typer.echo(report.summary())
    _write_ingest_files(store, det, pid, out, export_pseudo, files_root)
    if sink is not None:
        typer.echo(f"project {pid}: {ls_url}/projects/{pid}/data (tab 'Active learning queue')")


def _check_ingest_options(folder: Path, online: bool, out: Path | None, export_pseudo: Path | None):
    if not folder.is_dir():
        fail(f"not a folder: {folder}")
    if not online and out is None and export_pseudo is None:
        fail("say where the tasks go: --ls-url with --project/--project-title, or --out tasks.json (offline)")


def _ingest_target(
    names: tuple[str, ...], label_config: Path | None, project_ref: tuple | None, files_root, folder, mapping=None
):
    """The sink (None offline), the project id (0 offline) and the RectangleLabels target of an ingest run.

    ``project_ref``: ``(ls_url, api_key, project id, project title)``, or None offline. A new project gets
    ``label_config`` (default: one label per model class); an existing one keeps its own.
    """
    from detector_al.label_studio.client import LabelStudioError
    from detector_al.label_studio.config import LabelConfigError, default_label_config, parse_label_config
    from detector_al.pipelines.ingest import OFFLINE_PROJECT
    from detector_al.pipelines.ingest_setup import open_project

    config_text = label_config.read_text() if label_config else default_label_config(names)
    sink, pid = None, OFFLINE_PROJECT
    try:
        if project_ref is not None:
            ls_url, api_key, project, title = project_ref
            if project is None and title is None:
                fail("give --project <id> or --project-title <title>")
            sink, pid, config_text = open_project(
                ls_url or "", api_key or "", project, title, config_text, files_root, folder
            )
        target = parse_label_config(config_text, names, mapping)
    except (LabelStudioError, LabelConfigError) as exc:
        fail(str(exc))
    return sink, pid, target


def _write_ingest_files(store, det, project: int, out: Path | None, export_pseudo: Path | None, files_root) -> None:
    """The offline outputs asked for: a Label Studio import file, and the auto-accepted images as YOLO."""
    from detector_al.pipelines.ingest_export import export_pseudo_labels, write_tasks_json

    if out is not None:
        n = write_tasks_json(store, out, det.version, project)
        typer.echo(f"{n} tasks -> {out}" + (f" (image URLs relative to {files_root})" if files_root else ""))
    if export_pseudo is not None:
        n = export_pseudo_labels(store, export_pseudo, det.names, project)
        typer.echo(f"{n} auto-accepted images -> {export_pseudo} (YOLO, pseudo-labels: not human annotations)")
