"""One retraining round from Label Studio annotations; run by the backend's training worker.

1. **Collect** the label of every labeled task (label-studio-sdk; the latest annotation neither skipped nor
   deleted: :func:`~detector_al.label_studio.annotations.latest_label`) into a YOLO dataset. The split is stable: a task is in validation when ``sha256(task id) mod 5 == 0``, so it never
   moves between splits as labels accumulate.
2. **Pseudo-labels** (CEAL): the current model scores the unlabeled tasks; the auto-accepted ones join the
   *training* split only, as ``pseudo_*`` files listed in ``pseudo.txt``; they are never written to Label
   Studio as annotations.
3. **Fine-tune** from the serving weights (ultralytics, in a child process, so serving stays fast and a crash
   of the training cannot take the server down); progress (phase, epoch) goes to ``/health``.
4. **Evaluate** the serving and the new weights on the human-labeled validation split (with fewer than
   ``min_val_images`` there, on all human-labeled images) and **promote** the new weights only if
   ``new mAP50-95 >= serving mAP50-95 - (tolerance + 0.05 / sqrt(n))`` for ``n`` evaluation images (the
   second term allows for the noise of a small split: 0.025 at 4 images, 0.005 at 100).
   Every version is kept on disk with its metrics; the swap is atomic.
5. For a promotion: **re-score** the unlabeled tasks with the candidate and serve its queue in one step (its
   predictions are written, then the project switches to its version: :func:`publish_version`); only then does
   the candidate serve /predict, the older predictions go, the priority fields follow and the CEAL round advances.
   If re-scoring fails, the old model and the project's old version keep serving, and the job fails.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector_al.io.fetch.task_image import fetch_image
from detector_al.label_studio.annotations import is_labeled, latest_label
from detector_al.label_studio.client import ImageFetchError, LabelStudioClient
from detector_al.label_studio.config import RectangleTarget, parse_label_config
from detector_al.label_studio.lead_times import record_listed
from detector_al.label_studio.publish import drop_other_versions, publish_version
from detector_al.label_studio.regions import from_label_studio_regions
from detector_al.label_studio.task_sink import ensure_label_error_tab
from detector_al.model.training import FINE_TUNE, TrainConfig, run_in_subprocess, train_and_evaluate
from detector_al.pipelines.retrain_dataset import (
    class_counts,
    fill_empty_train_split,
    in_validation,
    link_file,
    should_promote,
    write_labels,
)
from detector_al.pipelines.review import measure_agreement, publish_label_errors, review_labels
from detector_al.policy.settings import COLD_START, POLICY
from detector_al.queue.build import build_queue
from detector_al.queue.selection import use_cold_start
from detector_al.serving.service import PredictionService
from detector_al.state.registry import ModelRegistry
from detector_al.state.signals import Signals
from detector_al.state.store import Store

log = logging.getLogger(__name__)


class RescoreError(RuntimeError):
    """Re-scoring the pool with a promoted candidate failed: the serving model and the project's version stay."""


@dataclass(frozen=True)
class RetrainConfig:
    epochs: int = 20
    lr0: float = FINE_TUNE.lr0  # the measured recipe: no warm-up, a low rate (training.FINE_TUNE)
    tolerance: float = 0.005
    min_val_images: int = 3
    min_labeled: int = 2
    pseudo_labels: bool = True
    budget: int = POLICY.budget
    cold_start: bool = COLD_START  # the re-scored queue's batch is TypiClust's while the new model is cold
    timeout_s: float | None = 3600.0  # a training (and its evaluation) still running then is killed: the job fails
    keep_job_folders: int = 3  # the newest job folders kept (datasets and runs); older ones are removed


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
        client = self.client()
        detector = self.service.detector
        report(phase="collecting annotations")
        target, labeled, unlabeled = self._collect(project, client, detector.names)
        root = self.work_dir / f"job-{job['id']}"
        shutil.rmtree(root, ignore_errors=True)
        n_train, n_val = self._write_human_split(labeled, target, root, client)
        report(phase="pseudo-labels")
        round_index = self.store.project(project)["round"]
        n_pseudo = (
            self._write_pseudo_labels(unlabeled, target, root, client, round_index) if self.config.pseudo_labels else 0
        )
        val_dir = "images/val" if n_val >= self.config.min_val_images else "images/human"
        names = "\n".join(f"  {i}: {n}" for i, n in enumerate(detector.names))
        (root / "data.yaml").write_text(f"train: images/train\nval: {val_dir}\nnames:\n{names}\n")

        self._prune_job_folders()
        best, new, old = self._train(detector, root, report, job.get("cancel"))
        result = {
            "labeled": len(labeled),
            "train_images": n_train,
            "val_images": n_val,
            "pseudo_labeled": n_pseudo,
            "validated_on": val_dir,
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
        n_eval = n_val if val_dir == "images/val" else n_train + n_val
        result["promoted"] = should_promote(new, old, n_eval, self.config.tolerance)
        candidate = self.service.load_detector(
            self.registry.path(version),
            conf=detector.conf,
            version=version,
            imgsz=detector.imgsz,
            max_decode_bytes=detector.max_decode_bytes,
        )
        report(phase="reviewing labels")
        result["label_errors"] = self._review(client, project, labeled, target, candidate)
        result["class_counts"] = class_counts(labeled, target, len(detector.names))
        if not result["promoted"]:
            log.info(
                "kept %s: candidate %s mAP50-95 %.4f is worse than %.4f on %d images",
                detector.version,
                version,
                new["map50_95"],
                old["map50_95"],
                n_eval,
            )
            return result
        result.update(self._serve(client, project, target, detector, candidate, labeled, round_index + 1, report))
        return result

    def _serve(self, client, project: int, target, old, candidate, labeled, round_index: int, report) -> dict:
        """Serve a promoted candidate: re-score the pool with it and switch the project and /predict to it in one step
        (or fail, and the old model keeps serving), then record the queue and the stopping signal's agreement."""
        report(phase="re-scoring")
        try:
            scored, queue, rows = self._rescore(client, project, target, candidate, round_index)
            with self.switch_lock:  # nothing aligns the project to the old model between the switch and the swap
                warning = publish_version(client.ls, self.store, project, candidate.version, rows)
                report(phase="promoting")
                self._promote(candidate, project, round_index)
        except Exception as exc:
            raise RescoreError(
                f"re-scoring the pool with {candidate.version} failed, so {old.version} keeps serving: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            ) from exc
        self._record(client, project, scored, queue, round_index)
        report(phase="stopping signal")
        agreement = measure_agreement(
            self.service,
            Signals(self.store),
            project,
            [t for t, _ in scored] + [t for t, _ in labeled],
            lambda t: self._image(t, client, target),
            old,
            candidate,
            self.service.config.policy.score_threshold,
            len(labeled),
        )
        return {"rescored": len(scored), "sampling_warning": warning, "agreement": agreement}

    def _review(self, client, project: int, labeled, target, candidate) -> dict:
        """The label review of this training (:func:`~detector_al.pipelines.review.review_labels`), written to Label
        Studio too; a failure is a warning on the job, never its end."""
        signals = Signals(self.store)
        try:
            summary = review_labels(
                self.service,
                signals,
                project,
                labeled,
                target,
                lambda t: self._image(t, client, target),
                candidate,
                lambda task_id: not in_validation(task_id),
            )
            found = {r["task_id"]: r for r in signals.label_errors(project, limit=10**9)["top"]}
            publish_label_errors(client.ls, project, labeled, found)
            ensure_label_error_tab(client.ls, project)
            return summary
        except Exception as exc:
            log.warning("project %s: label review failed: %s", project, exc)
            return {"warning": f"{type(exc).__name__}: {exc}"}

    def _collect(self, project: int, client: LabelStudioClient, names) -> tuple[RectangleTarget, list, list]:
        """The label target, the labeled tasks (with their latest annotation) and the unlabeled ones."""
        config_text = self.label_config(project) or client.ls.projects.get(id=project).label_config
        target = parse_label_config(config_text, names, self.service.config.label_mapping)
        tasks = list(client.ls.tasks.list(project=project, fields="all"))
        record_listed(self.store, project, tasks, target)  # annotator time: what the webhooks missed
        labeled = [(t, res) for t in tasks if (res := latest_label(t)) is not None]
        if len(labeled) < self.config.min_labeled:
            raise ValueError(
                f"only {len(labeled)} labeled tasks in project {project}; label at least "
                f"{self.config.min_labeled} before training"
            )
        return target, labeled, [t for t in tasks if not is_labeled(t)]

    def _prune_job_folders(self) -> None:
        """Keep the newest ``config.keep_job_folders`` job folders (by job id); remove the rest."""
        folders = sorted(self.work_dir.glob("job-*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else -1)
        for old in folders[: max(len(folders) - self.config.keep_job_folders, 0)]:
            shutil.rmtree(old, ignore_errors=True)

    def _train(self, detector, root: Path, report, cancel=None) -> tuple[Path, dict, dict]:
        """Fine-tune from the serving weights and evaluate both, in a child process: in the server torch stays on
        the one inference thread (see run_in_subprocess), and a crash stays in the child."""
        report(phase="training", epoch=0, epochs=self.config.epochs)
        serving_path = self.registry.path(detector.version)
        cfg = TrainConfig(
            epochs=self.config.epochs,
            imgsz=detector.imgsz,
            base=str(serving_path),
            lr0=self.config.lr0,
            warmup_epochs=FINE_TUNE.warmup_epochs,
        )
        return run_in_subprocess(
            train_and_evaluate,
            root / "data.yaml",
            root / "run",
            cfg,
            serving_path,
            "val",
            on_epoch=lambda e, n: report(phase="training" if e < n else "evaluating", epoch=e, epochs=n),
            timeout_s=self.config.timeout_s,
            cancel=cancel,
        )

    def _rescore(self, client, project: int, target, candidate, round_index: int):
        """Score the unlabeled tasks with the candidate and build its queue; the caller serves it in one step
        (:func:`publish_version`: its predictions are written, then the project switches to its version).

        The queue is :func:`~detector_al.queue.build.build_queue`'s over the re-scored pool (with ``config.cold_start``,
        a TypiClust batch away from the labeled tasks' clusters while the candidate is still cold, the labeled
        images embedded by the candidate: one space for both). Labels made during training count.

        Returns:
            ``(scored (task, ImageSummary) pairs, their queue entries, the predictions to import)``.
        """
        current = list(client.ls.tasks.list(project=project, fields="all"))
        unlabeled = [t for t in current if not is_labeled(t)]
        scored = self._summaries(unlabeled, target, client, round_index, candidate)
        queue = []
        if scored:
            decisions = [x.decision for _, x in scored]
            emb = np.stack([d.embedding for d in decisions])
            top = np.array([d.max_confidence for d in decisions])
            cold = self.config.cold_start and use_cold_start(top)  # every summary is fresh: its max_confidence known
            labeled = [t for t in current if is_labeled(t)]
            queue = build_queue(
                np.array([d.score for d in decisions], np.float64),
                np.array([d.accepted for d in decisions]),
                emb,
                min(self.config.budget, len(scored)),
                self.service.strategy.confidence,
                max_confidence=top if cold else None,
                labeled_embeddings=self._embeddings(labeled, target, client, emb.shape[1], candidate) if cold else None,
            )
        rows = [{"task": t.id, "result": x.regions, "score": e.score} for (t, x), e in zip(scored, queue, strict=True)]
        return scored, queue, rows

    def _promote(self, candidate, project: int, round_index: int) -> None:
        """Serve ``candidate`` from now on (an atomic swap) and start the project's next round."""
        self.registry.promote(candidate.version)
        self.service.swap(candidate)
        self.store.set_project(project, round=round_index, model_version=candidate.version)

    def _record(self, client, project: int, scored, queue, round_index: int) -> None:
        """After the switch: the tasks' older predictions go, their ``al_*`` fields and the store follow the new
        queue. Best effort in Label Studio (the new queue already serves); the store is written whole."""
        drop_other_versions(client.ls, project, self.service.model_version, {t.id for t, _ in scored})
        for (task, x), e in zip(scored, queue, strict=True):
            if "al_priority" not in (task.data or {}):  # only tasks made by ingest carry the tab fields
                continue
            data = {**task.data, "al_priority": e.priority, "al_uncertainty": round(x.decision.score, 8)}
            try:
                client.ls.tasks.update(id=task.id, data={**data, "al_status": e.status})
            except Exception as exc:
                log.warning("task %s: queue fields not updated: %s", task.id, exc)
        self.store.record_predictions(
            project, [x.to_row(t.id, round_index, e) for (t, x), e in zip(scored, queue, strict=True)]
        )
        self.store.set_image_queue_by_task(  # images ingested into this store follow: a re-run of ingest agrees
            project,
            [
                (t.id, d.score, d.confidence, e.status, e.priority, round_index, x.model_version, d.max_confidence)
                for (t, x), e in zip(scored, queue, strict=True)
                for d in (x.decision,)
            ],
        )

    # -- steps --------------------------------------------------------------------------------------------
    def _image(self, task, client: LabelStudioClient, target: RectangleTarget) -> Path | None:
        url = (task.data or {}).get(target.value_key)
        try:
            return fetch_image(
                str(url),
                ls_url=client.url,
                token=client.api_key,
                task_id=task.id,
                local_root=self.service.config.local_files_root,
                cache_dir=self.service.config.cache_dir,
                limits=self.service.config.fetch_limits,
            )
        except ImageFetchError as exc:
            log.warning("task %s skipped: %s", task.id, exc)
            return None

    def _write_human_split(self, labeled, target, root: Path, client) -> tuple[int, int]:
        counts = {"train": 0, "val": 0}
        for task, result in labeled:
            img = self._image(task, client, target)
            if img is None:
                continue
            boxes, classes = from_label_studio_regions(result, target)
            split = "val" if in_validation(task.id) else "train"
            name = f"task{task.id}{img.suffix.lower()}"
            for sub in (split, "human"):
                link_file(img, root / "images" / sub / name)
                write_labels(root / "labels" / sub / f"task{task.id}.txt", boxes, classes)
            counts[split] += 1
        if counts["train"] == 0:
            fill_empty_train_split(root)
        return counts["train"], counts["val"]

    def _summaries(self, tasks, target, client, round_index: int, detector=None):
        """(task, ImageSummary) for every task whose image could be read, predicted by ``detector`` (default: the
        serving model)."""
        paths, kept = [], []
        for t in tasks:
            p = self._image(t, client, target)
            if p is not None:
                paths.append(str(p))
                kept.append(t)
        summaries = self.service.predict_paths(
            paths, lambda d, p: self.service.summarise(d, p, target, round_index), detector
        )
        return [(t, x) for t, x in zip(kept, summaries, strict=True) if x.error is None]

    def _embeddings(self, tasks, target, client, dim: int, detector) -> np.ndarray:
        """(M, dim) embeddings of ``tasks``' images by ``detector``; tasks whose image fails are left out."""
        paths = [str(p) for t in tasks if (p := self._image(t, client, target)) is not None]
        found = self.service.predict_paths(paths, lambda _, pred: pred.embedding if pred.ok else None, detector)
        return np.array([e for e in found if e is not None and len(e) == dim], np.float32).reshape(-1, dim)

    def _write_pseudo_labels(self, unlabeled, target, root: Path, client, round_index: int) -> int:
        names = []
        for task, x in self._summaries(unlabeled, target, client, round_index):
            d = x.decision
            if not d.accepted:
                continue
            pl = d.pseudo_labels
            boxes = pl.xyxy / np.array([d.width, d.height, d.width, d.height], np.float32)
            name = f"pseudo_task{task.id}"
            link_file(Path(x.source), root / "images" / "train" / f"{name}{Path(x.source).suffix.lower()}")
            write_labels(root / "labels" / "train" / f"{name}.txt", boxes, pl.class_id)
            names.append(name)
        (root / "pseudo.txt").write_text("".join(f"{n}\n" for n in names))
        return len(names)
