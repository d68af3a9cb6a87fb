"""The ``detector-al`` command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import typer

from detector_al.bootstrap_model import BOOTSTRAP_DIR, SAMPLE_DATA, ensure_bootstrap_model
from detector_al.images import list_images
from detector_al.uncertainty import DEFAULT_STRATEGY, STRATEGIES, get_strategy

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Active learning for object detection in Label Studio."
)
log = logging.getLogger("detector_al")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )


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


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def load_detector(model: str, **kwargs):
    from detector_al.detector import Detector, UnsupportedModelError

    try:
        return Detector.load(model, **kwargs)
    except (FileNotFoundError, UnsupportedModelError) as exc:
        _fail(str(exc))


@app.command()
def train(
    data: Path = typer.Argument(..., help="YOLO dataset yaml (train/val image folders and class names)."),
    out: Path = typer.Option(BOOTSTRAP_DIR, "--out", help="Run folder; the model is written to OUT/best.pt."),
    epochs: int = typer.Option(40, help="Training epochs."),
    imgsz: int = typer.Option(256, help="Square input size in pixels."),
    batch: int = typer.Option(8, help="Batch size (one optimizer step per batch)."),
    base: str = typer.Option(
        "yolov8n.yaml", help="Model config (random init) or weights to start from, e.g. yolo11n.pt."
    ),
    seed: int = typer.Option(0, help="Random seed (training is deterministic for a seed)."),
    device: str = typer.Option(None, help="cpu, 0, 0,1 ... (default: GPU 0 if present, else cpu)."),
) -> None:
    """Train a detector with ultralytics (the bootstrap model, or a fine-tune from weights)."""
    from detector_al.training import TrainConfig, train_detector

    try:
        best = train_detector(
            data, out, TrainConfig(epochs=epochs, imgsz=imgsz, batch=batch, base=base, seed=seed, device=device)
        )
    except FileNotFoundError as exc:
        _fail(str(exc))
    typer.echo(f"model: {best}")


@app.command()
def predict(
    images: list[Path] = typer.Argument(..., help="Image files and/or folders."),
    model: str = typer.Option(..., "--model", "-m", help="Weights (.pt) or a model name."),
    out: Path = typer.Option(..., "--out", "-o", help="JSON Lines file: one line per input file."),
    conf: float = typer.Option(0.25, help="Confidence threshold of the boxes written."),
    imgsz: int = typer.Option(None, help="Input size (default: the model's training size)."),
    batch_size: int = typer.Option(16, help="Images per forward pass."),
) -> None:
    """Pre-annotate images: one JSON line per file with its boxes, or the error that stopped it."""
    from detector_al.files import atomic_write
    from detector_al.progress import track

    sources = expand_sources(images)
    det = load_detector(model, conf=conf, imgsz=imgsz)
    n_err = 0
    with atomic_write(out) as f:
        for p in track(det.predict(sources, batch_size=batch_size), len(sources), "predict"):
            n_err += not p.ok
            f.write(json.dumps(p.to_json(det.names)) + "\n")
    typer.echo(f"{len(sources)} images, {len(sources) - n_err} predicted, {n_err} unreadable -> {out}")


def _write_scored(out: Path, records: list, names: tuple[str, ...]) -> None:
    from detector_al.files import atomic_write

    if out.suffix.lower() == ".csv":
        import csv

        with atomic_write(out) as f:
            w = csv.writer(f)
            w.writerow(["image", "score", "decision", "rank", "n_detections", "labels", "error"])
            for r in records:
                labels = ";".join(sorted({names[int(c)] for c in r.detections.class_id}))
                w.writerow(
                    [
                        r.source,
                        "" if r.score is None else f"{r.score:.6g}",
                        r.decision,
                        "" if r.rank is None else r.rank,
                        len(r.detections),
                        labels,
                        r.error or "",
                    ]
                )
        return
    with atomic_write(out) as f:
        for r in records:
            f.write(json.dumps(r.to_json(names)) + "\n")


def print_summary(records: list, ceal, round_index: int, top: int = 0, names: tuple[str, ...] = ()) -> None:
    from rich.console import Console
    from rich.table import Table

    from detector_al.ranking import summary

    info = summary(records)
    console = Console()
    counts = ", ".join(f"{k}: {v}" for k, v in info["counts"].items())
    console.print(
        f"[bold]{len(records)} images[/] ({counts}); auto-accept threshold delta_{round_index} = "
        f"{ceal.threshold(round_index):.4g}"
    )
    if info["quantiles"]:
        console.print("score quantiles: " + ", ".join(f"{k} {v:.4g}" for k, v in info["quantiles"].items()))
    if top:
        table = Table(title=f"Annotation queue (top {top})")
        for col in ("rank", "image", "score", "decision", "boxes"):
            table.add_column(col)
        ranked = sorted((r for r in records if r.rank is not None), key=lambda r: r.rank)[:top]
        for r in ranked:
            labels = ", ".join(f"{names[int(c)]}" for c in r.detections.class_id[:6])
            table.add_row(str(r.rank), Path(r.source).name, f"{r.score:.4g}", r.decision, labels)
        console.print(table)


@app.command()
def score(
    images: list[Path] = typer.Argument(..., help="Image files and/or folders (the unlabeled pool)."),
    model: str = typer.Option(..., "--model", "-m", help="Weights (.pt) or a model name."),
    out: Path = typer.Option(..., "--out", "-o", help="Output: JSON Lines, or CSV when the name ends in .csv."),
    strategy: str = typer.Option(DEFAULT_STRATEGY, help="Uncertainty strategy: " + ", ".join(STRATEGIES)),
    round_index: int = typer.Option(0, "--round", help="Active-learning round t (CEAL threshold decays with t)."),
    budget: int = typer.Option(50, help="How many images to query (send to annotators)."),
    diversity: bool = typer.Option(True, help="Pick a diverse batch (k-center greedy) from the top candidates."),
    cold_start: bool = typer.Option(False, help="Order by diversity alone (no trained model yet)."),
    auto_accept: bool = typer.Option(True, help="CEAL: auto-accept confident images as pseudo-labels."),
    delta0: float = typer.Option(None, help="CEAL threshold at round 0 (default from CealConfig)."),
    decay: float = typer.Option(None, help="CEAL threshold decay per round."),
    plot: Path = typer.Option(None, help="Write a score histogram (PNG) with the thresholds marked."),
    seed: int = typer.Option(0, help="Seed of the selection."),
    batch_size: int = typer.Option(16, help="Images per forward pass."),
    conf: float = typer.Option(0.05, help="Lowest box confidence the scorers see."),
    score_threshold: float = typer.Option(0.25, help="Lowest box confidence written out (the pre-annotation)."),
    balance_classes: Path = typer.Option(
        None, help="YOLO label folder of the labeled set: favour images of the classes rare there."
    ),
) -> None:
    """Score images by uncertainty, auto-accept the confident ones, and rank the rest into a queue."""
    from dataclasses import replace

    from detector_al.progress import track
    from detector_al.pseudo_labels import CealConfig
    from detector_al.ranking import rank_pool
    from detector_al.yolo_format import class_counts

    if strategy not in STRATEGIES:
        raise typer.BadParameter(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    ceal = CealConfig(enabled=auto_accept)
    if delta0 is not None:
        ceal = replace(ceal, delta_0=delta0)
    if decay is not None:
        ceal = replace(ceal, decay=decay)
    sources = expand_sources(images)
    det = load_detector(model, conf=conf)
    counts = None
    if balance_classes is not None:
        if not balance_classes.is_dir():
            _fail(f"--balance-classes: not a folder of YOLO label files: {balance_classes}")
        counts = class_counts(balance_classes, len(det.names))
    preds = track(det.predict(sources, batch_size=batch_size), len(sources), f"score ({strategy})")
    records = rank_pool(
        preds,
        get_strategy(strategy),
        budget,
        round_index=round_index,
        ceal=ceal,
        score_threshold=score_threshold,
        diversity=diversity,
        cold=cold_start,
        seed=seed,
        labeled_class_counts=counts,
    )
    _write_scored(out, records, det.names)
    print_summary(records, ceal, round_index)
    if plot:
        from detector_al.plots import score_histogram

        query = [r.score for r in records if r.decision == "query"]
        score_histogram(
            np.array([r.score for r in records if r.score is not None]),
            plot,
            {
                f"auto-accept delta_{round_index}": ceal.threshold(round_index),
                "lowest queried": min(query) if query else None,
            },
            title=f"{strategy} scores",
        )
        typer.echo(f"plot: {plot}")
    typer.echo(f"queue: {out}")


@app.command()
def demo(
    model: str = typer.Option(None, "--model", "-m", help="Use these weights instead of the bootstrap model."),
    ls_url: str = typer.Option(None, "--ls-url", help="Use this Label Studio instead of starting one."),
    api_key: str = typer.Option(None, "--api-key", envvar="LABEL_STUDIO_API_KEY", help="Its API token."),
    ls_port: int = typer.Option(8080, help="Port of the local Label Studio."),
    backend_port: int = typer.Option(9090, help="Port of the ML backend."),
    data_dir: Path = typer.Option(Path(".cache") / "demo", help="Label Studio data, model versions, state."),
    budget: int = typer.Option(20, help="Images at the head of the queue."),
    train_epochs: int = typer.Option(20, help="Fine-tuning epochs when you press Start Training."),
    train_tolerance: float = typer.Option(
        0.005, help="Promote a retrained model if its mAP50-95 is at most this much (plus small-split noise) worse."
    ),
    exit_after_setup: bool = typer.Option(False, help="Stop the servers once everything is set up."),
    offline: bool = typer.Option(False, help="No Label Studio: score the sample pool and print the queue."),
) -> None:
    """The main job: a local Label Studio with an active-learning queue over the sample data, end to end."""
    if offline:
        _offline_demo(model, budget)
        return
    from detector_al.demo import DemoConfig, install_sigterm_handler, run_demo
    from detector_al.local_label_studio import label_studio_bin
    from detector_al.ls_client import LabelStudioError

    if ls_url is None and not label_studio_bin().exists():
        _fail(
            f"Label Studio is not installed at {label_studio_bin()}: run `make demo` (it makes .venv-ls), or "
            "pass --ls-url/--api-key, or --offline"
        )
    install_sigterm_handler()
    try:
        code = run_demo(
            DemoConfig(
                data_dir=data_dir,
                model=model,
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
        _fail(str(exc))
    raise typer.Exit(code)


def _offline_demo(model: str | None, budget: int, top: int = 15) -> None:
    from detector_al.plots import score_histogram
    from detector_al.pseudo_labels import CealConfig
    from detector_al.ranking import rank_pool

    pool, out = SAMPLE_DATA / "images" / "pool", Path("runs") / "demo"
    if not pool.exists():
        _fail(f"pool folder not found: {pool} (run from the repository root)")
    det = load_detector(model or str(ensure_bootstrap_model()), conf=0.05)
    ceal = CealConfig()
    records = rank_pool(det.predict(expand_sources([pool])), get_strategy(DEFAULT_STRATEGY), budget, ceal=ceal)
    _write_scored(out / "queue.jsonl", records, det.names)
    print_summary(records, ceal, 0, top=top, names=det.names)
    query = [r.score for r in records if r.decision == "query"]
    plot = score_histogram(
        np.array([r.score for r in records if r.score is not None]),
        out / "scores.png",
        {"auto-accept delta_0": ceal.threshold(0), "lowest queried": min(query) if query else None},
        title="mi_aod scores of the sample pool",
    )
    typer.echo(f"queue: {out / 'queue.jsonl'}  plot: {plot}")


@app.command()
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

    from ml_backend.main import create_app
    from ml_backend.settings import Settings

    overrides = {k: v for k, v in {"model_path": model, "model_dir": model_dir}.items() if v is not None}
    settings = Settings(**overrides)
    from detector_al.registry import ModelRegistry

    try:  # fail here, with a clear message, rather than inside the server's start-up
        ModelRegistry(settings.model_dir).resolve(settings.model_path)
    except FileNotFoundError as exc:
        _fail(str(exc))
    uvicorn.run(create_app(settings), host=host, port=port, workers=1, log_level="info")


@app.command()
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
        None, "--store", help="SQLite state file (default: the backend's MODEL_DIR/detector_al.sqlite3, else runs/)."
    ),
    model_dir: Path = typer.Option(
        None,
        "--model-dir",
        envvar="MODEL_DIR",
        help="The ML backend's model folder: one store with the backend, its version name and its round.",
    ),
    strategy: str = typer.Option("mi_aod", help="Uncertainty strategy."),
    round_index: int = typer.Option(
        None, "--round", help="Active-learning round (CEAL threshold; default: the backend's round for the project)."
    ),
    budget: int = typer.Option(50, help="Images to put at the head of the queue."),
    batch_size: int = typer.Option(16, help="Images per forward pass."),
    tasks_per_request: int = typer.Option(128, help="Tasks created in Label Studio per import request."),
    score_threshold: float = typer.Option(0.25, help="Lowest box confidence in the pre-annotations."),
) -> None:
    """Pre-annotate a folder and push it into a prioritised Label Studio queue (or write tasks.json offline).

    Idempotent and resumable: the content hash of each image decides; a second run adds only new files and
    refreshes the priorities."""
    from detector_al.ingest import IngestConfig, export_pseudo_labels, write_tasks_json
    from detector_al.ingest import ingest as run_ingest
    from detector_al.label_config import LabelConfigError, default_label_config, parse_label_config
    from detector_al.ls_client import LabelStudioClient, LabelStudioError
    from detector_al.ls_sink import LabelStudioSink, find_or_create_project
    from detector_al.store import Store
    from detector_al.uncertainty import STRATEGIES

    if not folder.is_dir():
        _fail(f"not a folder: {folder}")
    if strategy not in STRATEGIES:
        raise typer.BadParameter(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    online = ls_url is not None or project is not None or project_title is not None
    if not online and out is None and export_pseudo is None:
        _fail("say where the tasks go: --ls-url with --project/--project-title, or --out tasks.json (offline)")
    version = None
    if model_dir is not None and Path(model).is_file():
        from detector_al.registry import ModelRegistry

        version = ModelRegistry(model_dir).version_of(model)
    det = load_detector(model, conf=0.05, version=version)
    config_text = label_config.read_text() if label_config else default_label_config(det.names)
    sink, pid = None, 0
    try:
        if online:
            if project is None and project_title is None:
                _fail("give --project <id> or --project-title <title>")
            client = LabelStudioClient(ls_url or "", api_key or "")
            client.check()
            project = project if project is not None else find_or_create_project(client, project_title, config_text)
            config_text = client.ls.projects.get(id=project).label_config
            sink, pid = LabelStudioSink(client, project, files_root, folder), project
        target = parse_label_config(config_text, det.names)
    except (LabelStudioError, LabelConfigError) as exc:
        _fail(str(exc))
    if store_path is None:
        store_path = model_dir / "detector_al.sqlite3" if model_dir is not None else Path("runs") / "ingest.sqlite3"
    store = Store(store_path)
    cfg = IngestConfig(
        strategy=strategy,
        round_index=store.project(pid)["round"] if round_index is None else round_index,
        budget=budget,
        batch_size=batch_size,
        tasks_per_request=tasks_per_request,
        score_threshold=score_threshold,
        files_root=files_root,
    )
    report = run_ingest(folder, det, store, target, cfg, sink=sink, project=pid)
    typer.echo(report.summary())
    if out is not None:
        n = write_tasks_json(store, out, det.version, pid)
        typer.echo(f"{n} tasks -> {out}" + (f" (image URLs relative to {files_root})" if files_root else ""))
    if export_pseudo is not None:
        n = export_pseudo_labels(store, export_pseudo, det.names, pid)
        typer.echo(f"{n} auto-accepted images -> {export_pseudo} (YOLO, pseudo-labels: not human annotations)")
    if sink is not None:
        typer.echo(f"project {pid}: {ls_url}/projects/{pid}/data (tab 'Active learning queue')")


@app.command()
def simulate(
    dataset: Path = typer.Argument(
        ...,
        help="A VOC folder (Annotations/, JPEGImages/, ImageSets/Main/) or a YOLO "
        "data.yaml (pool = train split; val and test splits fixed).",
    ),
    out: Path = typer.Option(Path("runs") / "simulate", "--out", help="Results, models and plots (resumable)."),
    preset: str = typer.Option("cpu", help="cpu (hours on 2 cores), gpu (larger), smoke (a minute)."),
    variants: str = typer.Option(None, help="Comma-separated <strategy>[+div][+ceal], e.g. random,entropy,mi_aod+div."),
    seeds: str = typer.Option(None, help="Comma-separated seeds (default: the preset's)."),
    rounds: int = typer.Option(None, help="Rounds (default: the preset's)."),
    budget: int = typer.Option(None, help="Images labeled per round."),
    initial: int = typer.Option(None, help="Initial labeled images."),
    recipe: str = typer.Option(None, help="How each round trains: finetune, finetune_warm or round0."),
    imgsz: int = typer.Option(None, help="Training and inference image size."),
) -> None:
    """The active-learning experiment with an oracle: paired learning curves, labels saved, effort."""
    from dataclasses import replace

    from detector_al.sim_report import report
    from detector_al.simulation import PRESETS, RECIPES, parse_variant, run_simulation

    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if recipe is not None and recipe not in RECIPES:
        raise typer.BadParameter(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    changes = {
        "variants": tuple(variants.split(",")) if variants else None,
        "seeds": tuple(int(s) for s in seeds.split(",")) if seeds else None,
        **{"rounds": rounds, "budget": budget, "initial": initial, "recipe": recipe, "imgsz": imgsz},
    }
    cfg = replace(PRESETS[preset], **{k: v for k, v in changes.items() if v is not None})
    for v in cfg.variants:
        try:
            parse_variant(v)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    results = run_simulation(dataset, out, cfg)
    typer.echo(report(results))
    typer.echo(f"results: {out / 'results.json'}  plot: {out / 'learning_curves.png'}")


@app.command("make-sample-data")
def make_sample_data(
    out: Path = typer.Argument(SAMPLE_DATA, help="Destination folder."),
    seed: int = typer.Option(0, help="Generator seed."),
) -> None:
    """Regenerate the synthetic sample dataset (seeded: the same seed writes the same files)."""
    from detector_al.sample_data import generate

    typer.echo(f"wrote {generate(out, seed)}")
