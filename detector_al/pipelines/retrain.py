"""One retraining round from Label Studio annotations; run by the backend's training worker.

1. **Collect** the label of every labeled task (the latest annotation neither skipped nor deleted:
   :func:`~detector_al.label_studio.annotations.latest_label`), a page of labeled tasks at a time, into a YOLO
   dataset whose images are its own files (:mod:`~detector_al.pipelines.retrain_pool`). The split is stable: a task
   is in validation when ``sha256(task id) mod 5 == 0``, so it never moves between splits as labels accumulate.
   Until the validation split holds ``min_val_images`` images the job stops here, saying how many more labels it
   needs: a candidate is never judged on its own training images
   (:func:`~detector_al.pipelines.retrain_dataset.check_splits`).
2. **Pseudo-labels** (CEAL): the serving model's CEAL is judged on the human validation split
   (:mod:`~detector_al.pipelines.ceal_gate`: off for a model whose held-out pseudo-labels are shown below 95 %
   precise), then the serving model scores the unlabeled tasks a page at a time; of the auto-accepted
   ones at most ``pseudo_ratio`` per human training image join the *training* split, the most confident first, as
   ``pseudo_*`` files listed in ``pseudo.txt``; they are never written to Label Studio as annotations.
3. **Fine-tune** from the serving weights (ultralytics, in a child process, so serving stays fast and a crash
   of the training cannot take the server down); progress (phase, epoch) goes to ``/health``.
4. **Evaluate** the serving and the new weights on the human validation split (and judge the candidate's CEAL there)
   and **promote** the new weights only
   if ``new mAP50-95 >= serving mAP50-95 - (tolerance + 0.05 / sqrt(n))`` for its ``n`` images
   (:func:`~detector_al.pipelines.retrain_dataset.promotion_rule`). Every version is kept on disk with its metrics;
   the swap is atomic.
5. For a promotion: **re-score** the unlabeled tasks with the candidate and serve its queue in one step
   (:mod:`~detector_al.pipelines.retrain_rescore`: its predictions are written, then the project switches to its
   version: :func:`publish_version`); only then does the candidate serve /predict, the older predictions go, the
   priority fields follow and the CEAL round advances. If re-scoring fails, the old model and the project's old
   version keep serving, and the job fails.

**Cancel and time limit** (:class:`~detector_al.pipelines.job_control.JobControl`): checked between every page,
batch and phase of every step, so ``POST /jobs/<id>/cancel`` stops a job in any phase and ``TRAIN_TIMEOUT_S`` bounds
the whole job (the training process gets what is left of it). The last point where a job stops is the project's
switch to the candidate: a job cancelled before it promotes nothing; after it the job finishes.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from detector_al.io.fetch.cache import Pins
from detector_al.label_studio.client import LabelStudioClient
from detector_al.label_studio.config import parse_label_config
from detector_al.label_studio.lead_times import record_listed
from detector_al.label_studio.publish import drop_other_versions, publish_version
from detector_al.label_studio.task_sink import ensure_label_error_tab
from detector_al.model.training import FINE_TUNE, TrainConfig, TrainingCancelled, run_in_subprocess, train_and_evaluate
from detector_al.pipelines.ceal_gate import judge_on_validation, record
from detector_al.pipelines.job_control import JobCancelled, JobControl
from detector_al.pipelines.retrain_dataset import (
    check_splits,
    class_counts,
    in_validation,
    promotion_rule,
    pseudo_label_cap,
    should_promote,
)
from detector_al.pipelines.retrain_pool import (
    TaskImages,
    batched,
    collect_labeled,
    write_human_split,
    write_pseudo_labels,
)
from detector_al.pipelines.retrain_rescore import (
    RescoreTable,
    publish_queue_fields,
    record_rescored,
    rescore_pool,
)
from detector_al.pipelines.review import measure_agreement, publish_label_errors, review_labels
from detector_al.policy.settings import COLD_START, POLICY
from detector_al.queue.build import embedding_matrix
from detector_al.queue.plan import plan_stored_queue
from detector_al.serving.service import PredictionService
from detector_al.state.registry import ModelRegistry
from detector_al.state.signals import Signals
from detector_al.state.store import Store

log = logging.getLogger(__name__)

REWRITE_CHUNK = 200
"""Tasks whose older predictions go per pair of requests (:func:`drop_other_versions`)."""


class RescoreError(RuntimeError):
    """Re-scoring the pool with a promoted candidate failed: the serving model and the project's version stay."""


@dataclass(frozen=True)
class RetrainConfig:
    epochs: int = 20
    lr0: float = FINE_TUNE.lr0  # the measured recipe: no warm-up, a low rate (training.FINE_TUNE)
    tolerance: float = 0.005
    min_val_images: int = 3  # a candidate is judged on this many held-out human images at least, else not trained
    min_labeled: int = 2
    pseudo_labels: bool = True
    pseudo_ratio: float | None = 2.0  # CEAL images per human training image, most confident first (None: no cap)
    budget: int = POLICY.budget
    cold_start: bool = COLD_START  # the re-scored queue's batch is TypiClust's while the new model is cold
    timeout_s: float | None = 3600.0  # the whole job, from its start: past it the job stops (failed)
    keep_job_folders: int = 3  # the newest job folders kept (datasets and runs); older ones are removed
    # The training process's niceness above the server's: /predict comes first while a retraining shares the cores
    # (benchmarks/bench_predict_while_training.py).
    niceness: int = 10
    # What each retraining starts from: None, the serving weights (fine-tuned, the default); else a base as
    # `detector-al train --base` takes it: "pretrained" (the offline checkpoint), weights, or "yolo11n.pt" online.
    base: str | None = None


class Retrainer:
    """The worker's job runner: ``Retrainer(...)(job, report) -> result dict``."""

    def __init__(
        self,
        service: PredictionService,
        registry: ModelRegistry,
        store: Store,
        client: Callable[[], LabelStudioClient],
        label_config: Callable[[int], str | None],
        work_dir: Path,
        config: RetrainConfig = RetrainConfig(),
        switch_lock: threading.Lock | None = None,
    ) -> None:
        self.service, self.registry, self.store = service, registry, store
        self.switch_lock = switch_lock or threading.Lock()  # the backend's alignment lock
        self.client, self.label_config = client, label_config
        self.work_dir = Path(work_dir)
        self.config = config

    # -- the job ------------------------------------------------------------------------------------------
    def __call__(self, job: dict, report) -> dict:
        project = job["project"]
        if project is None:
            raise ValueError("the training request names no project")
        control = JobControl(job.get("cancel"), self.config.timeout_s)

        def phase(**fields) -> None:  # every phase starts with the cancel and time-limit check
            control.check()
            report(**fields)

        cfg = self.config
        client = self.client()
        detector = self.service.detector
        phase(phase="collecting annotations")
        config_text = self.label_config(project) or client.ls.projects.get(id=project).label_config
        target = parse_label_config(config_text, detector.names, self.service.config.label_mapping)
        labeled = collect_labeled(  # annotator time: the listing records what the webhooks missed
            client.ls, project, control, on_page=lambda page: record_listed(self.store, project, page, target)
        )
        listed_val = sum(in_validation(t.id) for t in labeled)
        check_splits(len(labeled), len(labeled) - listed_val, listed_val, cfg.min_labeled, cfg.min_val_images, project)
        root = self.work_dir / f"job-{job['id']}"
        shutil.rmtree(root, ignore_errors=True)
        images = TaskImages(client, target, self.service.config)
        n_train, n_val = write_human_split(labeled, images, target, root, control)
        check_splits(len(labeled), n_train, n_val, cfg.min_labeled, cfg.min_val_images, project)  # images fetched

        phase(phase="pseudo-labels")
        round_index = self.store.project(project)["round"]
        serving_ceal = self._judge_ceal(detector, root, control)  # before it writes this round's pseudo-labels
        cap = pseudo_label_cap(cfg.pseudo_ratio, n_train) if cfg.pseudo_labels else 0
        n_pseudo = write_pseudo_labels(self.service, client.ls, project, images, root, round_index, cap, control)
        names = "\n".join(f"  {i}: {n}" for i, n in enumerate(detector.names))
        (root / "data.yaml").write_text(f"train: images/train\nval: images/val\nnames:\n{names}\n")

        self._prune_job_folders()
        phase(phase="training", epoch=0, epochs=cfg.epochs)
        best, new, old = self._train(detector, root, report, control)
        control.check()
        result = {
            "labeled": len(labeled),
            "train_images": n_train,
            "val_images": n_val,
            "pseudo_labeled": n_pseudo,
            "pseudo_cap": cap,
            "validated_on": "images/val",
            "rule": promotion_rule(cfg.min_val_images, cfg.tolerance),
            "serving": {"version": detector.version, **old},
            "candidate": new,
        }
        version = self.registry.add(
            best,
            parent=detector.version,
            metrics=new,
            serving_metrics=old,
            job=job["id"],
            project=project,
            labeled=len(labeled),
        )
        result["model_version"] = version
        result["promoted"] = should_promote(new, old, n_val, cfg.tolerance)
        candidate = self.service.load_detector(
            self.registry.path(version),
            conf=detector.conf,
            version=version,
            imgsz=detector.imgsz,
            max_decode_bytes=detector.max_decode_bytes,
        )
        result["ceal"] = {"serving": serving_ceal, "candidate": self._judge_ceal(candidate, root, control)}
        phase(phase="reviewing labels")
        result["label_errors"] = self._review(client, project, labeled, target, images, candidate, control)
        result["class_counts"] = class_counts(labeled, target, len(detector.names))
        if not result["promoted"]:
            log.info(
                "kept %s: candidate %s mAP50-95 %.4f is worse than %.4f on %d validation images",
                detector.version,
                version,
                new["map50_95"],
                old["map50_95"],
                n_val,
            )
            return result
        phase(phase="re-scoring")
        result.update(
            self._serve(client, project, images, detector, candidate, labeled, round_index + 1, control, root, report)
        )
        return result

    def _serve(
        self, client, project: int, images, old, candidate, labeled, round_index: int, control, root, report=None
    ) -> dict:
        """Serve a promoted candidate: re-score the pool with it and switch the project and /predict to it in one step
        (or fail, and the old model keeps serving), then record the queue and the stopping signal's agreement."""
        table = RescoreTable(root / "rescore.sqlite3")
        try:
            try:
                rescore_pool(self.service, client.ls, project, images, candidate, round_index, table, control)
                plan = plan_stored_queue(
                    table.places,
                    min(self.config.budget, table.count()),
                    self.service.strategy.confidence,
                    cold_start=self.config.cold_start,
                    labeled_embeddings=lambda dim: self._embeddings(labeled, images, dim, candidate, control),
                    cold=self.config.cold_start and table.cold(),
                )
                control.check()
                if report is not None:
                    report(phase="publishing")
                with self.switch_lock:  # nothing aligns the project to the old model between the switch and the swap
                    warning = publish_version(
                        client.ls, self.store, project, candidate.version, table.predictions(plan), control.check
                    )
                    self._promote(candidate, project, round_index)
            except JobCancelled:
                raise
            except Exception as exc:
                raise RescoreError(
                    f"re-scoring the pool with {candidate.version} failed, so {old.version} keeps serving: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                ) from exc
            # the project serves the candidate now: what follows finishes, whatever a cancel says
            if report is not None:
                report(phase="promoting")
            drop_other_versions(client.ls, project, candidate.version, table.rewrites(plan, REWRITE_CHUNK))
            publish_queue_fields(client.ls, table, plan)
            record_rescored(self.store, project, table, plan, candidate.version, round_index)
            by_labeled = {t.id: t.data for t in labeled}
            if report is not None:
                report(phase="stopping signal")
            agreement = measure_agreement(
                self.service,
                Signals(self.store),
                project,
                lambda: (i for ids in (by_labeled, table.ids()) for i in ids),
                lambda i, pins: images.path(i, by_labeled.get(i) or {images.target.value_key: table.url(i)}, pins),
                old,
                candidate,
                self.service.config.policy.score_threshold,
                len(labeled),
            )
            return {"rescored": table.count(), "sampling_warning": warning, "agreement": agreement}
        finally:
            table.close()

    def _review(self, client, project: int, labeled, target, images, candidate, control: JobControl) -> dict:
        """The label review of this training (:func:`~detector_al.pipelines.review.review_labels`), written to Label
        Studio too; a failure is a warning on the job, never its end (a cancel is)."""
        signals = Signals(self.store)
        try:
            summary = review_labels(
                self.service,
                signals,
                project,
                labeled,
                target,
                images,
                candidate,
                lambda task_id: not in_validation(task_id),
                control.check,
            )
            found = {r["task_id"]: r for r in signals.label_errors(project, limit=10**9)["top"]}
            publish_label_errors(client.ls, project, labeled, found)
            ensure_label_error_tab(client.ls, project)
            return summary
        except JobCancelled:
            raise
        except Exception as exc:
            log.warning("project %s: label review failed: %s", project, exc)
            return {"warning": f"{type(exc).__name__}: {exc}"}

    def _judge_ceal(self, detector, root: Path, control: JobControl) -> dict:
        """``detector``'s CEAL gate on this job's human validation split, recorded for its version
        (:mod:`~detector_al.pipelines.ceal_gate`); the job result's record of it."""
        gate = judge_on_validation(self.service, detector, root, control)
        record(self.service, self.registry, detector.version, gate)
        return asdict(gate) | {"version": detector.version, "summary": gate.describe()}

    def _prune_job_folders(self) -> None:
        """Keep the newest ``config.keep_job_folders`` job folders (by job id); remove the rest."""
        folders = sorted(self.work_dir.glob("job-*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else -1)
        for old in folders[: max(len(folders) - self.config.keep_job_folders, 0)]:
            shutil.rmtree(old, ignore_errors=True)

    def _train(self, detector, root: Path, report, control: JobControl) -> tuple[Path, dict, dict]:
        """Fine-tune from the serving weights and evaluate both, in a child process at ``config.niceness``: in the
        server torch stays on the one inference thread (see run_in_subprocess), requests come first on the cores, and
        a crash stays in the child. It gets what is left of the job's time limit, and is killed at once on a cancel."""
        serving_path = self.registry.path(detector.version)
        cfg = TrainConfig(
            epochs=self.config.epochs,
            imgsz=detector.imgsz,
            base=self.config.base or str(serving_path),
            lr0=self.config.lr0,
            warmup_epochs=FINE_TUNE.warmup_epochs,
        )
        try:
            return run_in_subprocess(
                train_and_evaluate,
                root / "data.yaml",
                root / "run",
                cfg,
                serving_path,
                "val",
                on_epoch=lambda e, n: report(phase="training" if e < n else "evaluating", epoch=e, epochs=n),
                timeout_s=control.remaining(),
                cancel=control.cancel,
                niceness=self.config.niceness,
            )
        except TrainingCancelled:
            control.check()  # the job's own words: cancelled, or past TRAIN_TIMEOUT_S since the job started
            raise

    def _promote(self, candidate, project: int, round_index: int) -> None:
        """Serve ``candidate`` from now on (an atomic swap) and start the project's next round."""
        self.registry.promote(candidate.version)
        self.service.swap(candidate)
        self.store.set_project(project, round=round_index, model_version=candidate.version)

    def _embeddings(self, labeled, images: TaskImages, dim: int, detector, control: JobControl):
        """(M, dim) embeddings of the labeled tasks' images by ``detector`` (a cold batch stays away from their
        clusters), a pinned batch at a time; None when none could be read."""
        found = []
        for batch in batched(labeled, 64):
            control.check()
            with Pins() as pins:
                fetched = images.fetch(batch, pins)
                found += self.service.predict_paths(
                    [str(p) for _, p in fetched], lambda _, pred: pred.embedding if pred.ok else None, detector
                )
        return embedding_matrix((None if e is None else e.astype("float32").tobytes() for e in found), dim)
