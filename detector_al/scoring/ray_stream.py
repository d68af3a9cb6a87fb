"""Scoring on Ray: :func:`~detector_al.scoring.file_stream.scored_files` run by a pool of Ray actors.

A Ray Data pipeline reads the file paths, and ``map_batches`` hands batches of them to an actor pool: each actor
loads the model once (:class:`ModelSpec`) and runs the very function the plain path runs (hash, skip the known
hashes, predict, decide), on a GPU fraction where the cluster has GPUs. The decisions stream back in input order to
the one process that writes them (the caller: ``ingest`` writes Label Studio and the store in batches; ``score``
ranks the pool), so the records are the plain path's. A killed run loses only what was in flight: ``ingest``
records each batch as it arrives, and the next run skips the stored hashes.

Ray is optional (``pip install "detector-al[ray]"``); nothing else imports this module.

Example:
    >>> opts = RayOptions(workers=2)                                       # doctest: +SKIP
    >>> for f in ray_scored_files(paths, ModelSpec.of(det), DecisionPolicy("entropy_sum"), opts):  # doctest: +SKIP
    ...     print(f.path, f.decision.score)
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector_al.model.detector import BATCH_SIZE, Detector
from detector_al.policy.decision import DecisionPolicy
from detector_al.scoring.file_stream import ScoredFile, scored_files

log = logging.getLogger(__name__)

INSTALL_HINT = 'Ray is an optional extra: pip install "detector-al[ray]"'


def ray_available() -> bool:
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to score.

    Attributes:
        address: a running cluster (``auto``, ``ray://head:10001``, ``head:6379``); None: a local Ray on this
            machine, started for the run and stopped with the process.
        workers: actors, each holding one model (default: one per GPU of the cluster where it has GPUs, else
            one per CPU); the cluster's CPUs are shared out among them (torch's threads).
        gpus_per_worker: the GPU fraction of each actor (default where the cluster has GPUs: its GPUs shared out
            among ``workers`` when given, at most 1 each, else 1; without GPUs 0); 0.5 puts two actors on a GPU.
        batch_size: images per forward pass inside an actor.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    batch_size: int = BATCH_SIZE


@dataclass(frozen=True)
class ModelSpec:
    """What an actor needs to load the same model as the caller: the weights and the adapter's settings."""

    weights: str
    version: str
    conf: float
    iou: float
    imgsz: int
    max_det: int

    @classmethod
    def of(cls, det: Detector) -> ModelSpec:
        if det.weights is None:
            raise ValueError("this detector was not loaded from weights (Detector.load): Ray workers cannot load it")
        weights = str(Path(det.weights).resolve()) if Path(det.weights).exists() else det.weights
        return cls(weights, det.version, det.conf, det.iou, det.imgsz, det.max_det)

    def load(self) -> Detector:
        return Detector.load(
            self.weights, version=self.version, conf=self.conf, iou=self.iou, imgsz=self.imgsz, max_det=self.max_det
        )


class _ScoringActor:
    """One model per actor; each call scores a batch of paths with :func:`scored_files`."""

    def __init__(
        self, spec: ModelSpec, policy: DecisionPolicy, batch_size: int, skip: Collection[str], hash_files, threads: int
    ):
        import torch

        torch.set_num_threads(threads)  # the CPUs Ray reserved for this actor
        self.det = spec.load()
        self.policy, self.batch_size, self.skip, self.hash_files = policy, batch_size, skip, hash_files

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = list(
            scored_files(
                self.det,
                [str(p) for p in batch["path"]],
                self.policy,
                batch_size=self.batch_size,
                skip=self.skip,
                hash_files=self.hash_files,
            )
        )
        scored = np.empty(len(out), dtype=object)
        scored[:] = out
        return {"scored": scored}


def connect(opts: RayOptions) -> dict[str, float]:
    """Join the cluster at ``opts.address`` (or start a local Ray); returns the cluster's resources.

    Ray's own INFO lines and its notes about its defaults stay out of the way unless debug logging is on (``-v``).
    """
    import ray
    import ray.data  # before the levels below: importing it configures its loggers

    if not log.isEnabledFor(logging.DEBUG):
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the C++ core's log lines on stderr
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if not ray.is_initialized():
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "include_dashboard": False}
        if opts.address:
            ray.init(address=opts.address, **quiet)
        else:
            cpus = max(os.cpu_count() or 1, opts.workers or 1)
            ray.init(address="local", num_cpus=cpus, **quiet)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the decisions come back in input order
    ctx.enable_progress_bars = False  # the caller shows its own
    ctx.print_on_execution_start = False
    return ray.cluster_resources()


def pool_shape(opts: RayOptions, resources: dict[str, float]) -> tuple[int, int, float]:
    """``(workers, CPUs per worker, GPUs per worker)`` from the options and the cluster's resources (see
    :class:`RayOptions`): the cluster's CPUs are shared out among the workers (at least one each), which use them as
    torch's threads."""
    gpus, cpus = float(resources.get("GPU", 0.0)), int(resources.get("CPU", 1.0))
    if opts.gpus_per_worker is not None:  # the fraction the user gave
        per_gpu = opts.gpus_per_worker
    elif gpus and opts.workers:  # the workers the user asked for share the cluster's GPUs (never 1 GPU each)
        per_gpu = min(1.0, gpus / opts.workers)
    else:
        per_gpu = 1.0 if gpus else 0.0
    if opts.workers:
        workers = opts.workers
    elif per_gpu:
        workers = max(1, int(gpus / per_gpu))
    else:
        workers = max(1, cpus)
    if per_gpu * workers > gpus + 1e-9:
        log.warning(
            "%d Ray workers x %g GPU each is more than the cluster's %g GPUs: the rest wait for a GPU "
            "(lower --ray-workers or --ray-gpus-per-worker)",
            workers,
            per_gpu,
            gpus,
        )
    return workers, max(1, cpus // workers), per_gpu


def ray_scored_files(
    paths: Iterable[str | Path],
    spec: ModelSpec,
    policy: DecisionPolicy,
    opts: RayOptions,
    *,
    skip: Collection[str] = frozenset(),
    hash_files: bool = True,
) -> Iterator[ScoredFile]:
    """:func:`~detector_al.scoring.file_stream.scored_files` on a Ray actor pool, in input order.

    The paths must be readable by the workers (on a cluster: a shared file system at the same path). The path list
    is held by the driver (about 100 bytes a file); ``skip`` travels to each actor once, when it starts.
    """
    import ray

    start = time.perf_counter()

    def since() -> float:
        return time.perf_counter() - start

    items = [{"path": str(p)} for p in paths]
    if not items:
        return
    workers, cpus, gpus = pool_shape(opts, connect(opts))
    # a whole number of forward passes per call, and every worker gets work where there is enough of it
    per_call = opts.batch_size * max(1, min(4, math.ceil(len(items) / (workers * opts.batch_size))))
    ds = ray.data.from_items(items, override_num_blocks=min(math.ceil(len(items) / per_call), 4096))
    ds = ds.map_batches(
        _ScoringActor,
        fn_constructor_args=(spec, policy, opts.batch_size, frozenset(skip), hash_files, cpus),
        batch_size=per_call,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus,
        num_gpus=gpus,
    )
    log.info("scoring %d files on Ray: %d workers, %d CPUs and %.2g GPU each", len(items), workers, cpus, gpus)
    first = True
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        if first:
            log.info("Ray: first results after %.1f s (the cluster, the actors and their models starting)", since())
            first = False
        yield from batch["scored"]
