"""The ``detector-al`` command line: the typer app and its commands.

The commands live by job: :mod:`detector_al.cli.model` (train, predict, score), :mod:`detector_al.cli.label_studio`
(demo, serve, ingest), and here ``simulate`` and ``make-sample-data``; what they share is in
:mod:`detector_al.cli.common`. The rules they run are in the library.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from detector_al.cli.label_studio import demo, ingest, serve
from detector_al.cli.model import fetch_base, predict, score, train
from detector_al.demo.bootstrap_model import SAMPLE_DATA

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Active learning for object detection in Label Studio."
)
log = logging.getLogger("detector_al")


CHATTY_LOGGERS = ("httpx", "httpcore", "urllib3", "label_studio_sdk", "ultralytics", "matplotlib", "PIL")
"""Libraries whose INFO lines (every HTTP request, every training batch) drown what a person needs; --verbose
shows them."""


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging, HTTP and training chatter too."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    if not verbose:
        os.environ.setdefault("YOLO_VERBOSE", "False")  # read when ultralytics is first imported (lazily, later)
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


for _command in (train, predict, score, demo, serve, ingest):
    app.command()(_command)
app.command("fetch-base")(fetch_base)


@app.command()
def simulate(
    dataset: Path = typer.Argument(
        ...,
        help="A VOC folder (Annotations/, JPEGImages/, ImageSets/Main/) or a YOLO "
        "data.yaml (pool = train split; val and test splits fixed).",
    ),
    out: Path = typer.Option(Path("runs") / "simulate", "--out", help="Results, models and plots (resumable)."),
    preset: str = typer.Option(
        "cpu", help="cpu (hours on 2 cores), cpu-scratch (random init, the ablation), gpu (larger), smoke (a minute)."
    ),
    base: str = typer.Option(
        None, help="Round 0's start: pretrained (the presets' default), yolov8n.yaml (random init) or weights."
    ),
    variants: str = typer.Option(
        None, help="Comma-separated <strategy>[+div][+ceal][+boxes][+cold], e.g. random,entropy+cold,mi_aod+div."
    ),
    seeds: str = typer.Option(None, help="Comma-separated seeds (default: the preset's)."),
    rounds: int = typer.Option(None, help="Rounds (default: the preset's)."),
    budget: int = typer.Option(None, help="Images labeled per round."),
    initial: int = typer.Option(None, help="Initial labeled images."),
    recipe: str = typer.Option(None, help="How each round trains: finetune, finetune_nowarm, finetune_warm or round0."),
    imgsz: int = typer.Option(None, help="Training and inference image size."),
    cost_model: Path = typer.Option(
        None,
        help="JSON of seconds per annotator action (draw_box, adjust_box, ...; default: docs/annotator_time.md), e.g. "
        "the file `detector-al cost-model` fits to your annotators.",
    ),
) -> None:
    """The active-learning experiment with an oracle: paired learning curves, labels saved, effort, annotator time."""
    from dataclasses import replace

    from detector_al.simulation.config import PRESETS, RECIPES, parse_variant
    from detector_al.simulation.dataset import DatasetError
    from detector_al.simulation.experiment import run_simulation
    from detector_al.simulation.report import report

    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if recipe is not None and recipe not in RECIPES:
        raise typer.BadParameter(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    changes = {
        "variants": tuple(variants.split(",")) if variants else None,
        "seeds": tuple(int(s) for s in seeds.split(",")) if seeds else None,
        **{"rounds": rounds, "budget": budget, "initial": initial, "recipe": recipe, "imgsz": imgsz, "base": base},
    }
    cfg = replace(PRESETS[preset], **{k: v for k, v in changes.items() if v is not None})
    from detector_al.policy.annotator_cost import CostModel

    try:
        cost = CostModel.from_file(cost_model) if cost_model else CostModel()
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--cost-model") from None
    for v in cfg.variants:
        try:
            parse_variant(v)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    from detector_al.model.pretrained import PretrainedUnavailable

    try:
        results = run_simulation(dataset, out, cfg)
    except PretrainedUnavailable as exc:
        raise typer.BadParameter(str(exc), param_hint="--base") from None
    except DatasetError as exc:
        raise typer.BadParameter(str(exc), param_hint="DATASET") from None
    typer.echo(report(results))
    typer.echo(f"results: {out / 'results.json'}  plot: {out / 'learning_curves.png'}")
    if all("actions" in r for r in results["runs"]):
        from detector_al.simulation.time_report import plot_annotator_time, sensitivity_table, time_report

        typer.echo("\n" + time_report(results, cost))
        for arm in (v for v in cfg.variants if v not in ("random", "oracle")):
            typer.echo(
                f"\n**Sensitivity to the cost model** (`{arm}`, modelled)\n\n" + sensitivity_table(results, arm, cost)
            )
        typer.echo(f"annotator time plot: {plot_annotator_time(results, cost, out / 'annotator_time.png')}")


@app.command("cost-model")
def cost_model_export(
    project: int = typer.Option(..., help="The Label Studio project whose annotators' seconds to fit."),
    out: Path = typer.Option(Path("cost_model.json"), "--out", help="The JSON file to write."),
    model_dir: Path = typer.Option(
        Path("models") / "backend", envvar="MODEL_DIR", help="The ML backend's model folder (its SQLite store)."
    ),
) -> None:
    """Export the per-action seconds fitted to a project's annotation times (Label Studio's lead_time), for
    `simulate --cost-model FILE` and the strategy `entropy_roi:FILE`."""
    import json

    from detector_al.io.files import atomic_write
    from detector_al.signals.annotator_time import MIN_FIT, export, fit_table
    from detector_al.state.annotation_times import AnnotationTimes
    from detector_al.state.store import STORE_FILE_NAME, Store

    path = model_dir / STORE_FILE_NAME
    if not path.is_file():
        raise typer.BadParameter(f"no backend store at {path}", param_hint="--model-dir")
    fit, usable = AnnotationTimes(Store(path)).cost_fit(project)
    if fit is None:
        raise typer.BadParameter(
            f"project {project} has {usable} timed annotations with a known edit; the fit needs {MIN_FIT}",
            param_hint="--project",
        )
    with atomic_write(out) as f:
        json.dump(export(fit, project), f, indent=1)
    typer.echo(fit_table(fit))
    typer.echo(f"wrote {out}: use it as `simulate --cost-model {out}` or `--strategy entropy_roi:{out}`")


@app.command("make-sample-data")
def make_sample_data(
    out: Path = typer.Argument(SAMPLE_DATA, help="Destination folder."),
    seed: int = typer.Option(0, help="Generator seed."),
) -> None:
    """Regenerate the synthetic sample dataset (seeded: the same seed writes the same files)."""
    from detector_al.demo.sample_data import generate

    typer.echo(f"wrote {generate(out, seed)}")


@app.command("make-sample-weights")
def make_sample_weights(
    out: Path = typer.Argument(None, help="Destination folder (default: sample_data/model)."),
    seed: int = typer.Option(0, help="Training seed."),
) -> None:
    """Train the shipped sample-data model (sample_data/model/best.pt) and record its recipe and data hash beside it."""
    from detector_al.demo.bootstrap_model import SAMPLE_EPOCHS, SAMPLE_WEIGHTS_DIR
    from detector_al.demo.bootstrap_model import make_sample_weights as make
    from detector_al.progress import epoch_progress

    with epoch_progress("training the sample model", SAMPLE_EPOCHS) as on_epoch:
        best = make(out or SAMPLE_WEIGHTS_DIR, seed=seed, on_epoch=on_epoch)
    typer.echo(f"wrote {best} and {best.parent / 'recipe.json'}")
