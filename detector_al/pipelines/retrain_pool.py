"""What a retraining reads of its project before training, in bounded memory and bounded batches.

- **The labeled tasks** (:func:`collect_labeled`): Label Studio's labeled tasks only, a page at a time
  (:mod:`~detector_al.label_studio.task_pages`), each kept as its id, data and latest label
  (:class:`LabeledTask`): memory grows with the labels, never with the pool.
- **Task images** (:class:`TaskImages`): fetched a batch at a time and pinned in the bounded image cache while the
  batch is used (:class:`~detector_al.io.fetch.cache.Pins`); images the training set keeps are the dataset's own
  files (hard links or copies, :func:`~detector_al.pipelines.retrain_dataset.place_file`), so the cache may evict its
  copy while ultralytics still reads the dataset: a pool larger than ``IMAGE_CACHE_MAX_MB`` trains on every label.
- **The human split** (:func:`write_human_split`) and **the pseudo-labels** (:func:`write_pseudo_labels`): the
  unlabeled pool streamed through the serving model a page at a time; of the CEAL-accepted images at most ``cap``
  join the training split, the most confident first (a bounded heap: a displaced image's files are removed).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector_al.io.fetch.cache import Pins, default_cache_dir
from detector_al.io.fetch.task_image import fetch_image
from detector_al.label_studio.annotations import latest_label
from detector_al.label_studio.client import ImageFetchError, LabelStudioClient
from detector_al.label_studio.config import RectangleTarget
from detector_al.label_studio.regions import from_label_studio_regions
from detector_al.label_studio.task_pages import iter_task_pages
from detector_al.pipelines.job_control import JobControl
from detector_al.pipelines.retrain_dataset import in_validation, place_file, write_labels

log = logging.getLogger(__name__)

BATCH = 64
"""Images fetched, pinned and predicted at a time."""


@dataclass(frozen=True)
class LabeledTask:
    """A labeled task as retraining keeps it: its id, data (the image value, the ``al_*`` fields) and latest label."""

    id: int
    data: dict
    result: list[dict]
    versions: tuple[str, ...] = ()  # the model versions of its predictions (kept in Label Studio: what it was shown)


def collect_labeled(ls, project: int, control: JobControl, on_page=None) -> list[LabeledTask]:
    """The project's labeled tasks (:func:`~detector_al.label_studio.annotations.latest_label`), a page at a time.

    ``on_page(tasks)`` sees each page as listed, and also the pages of the unlabeled tasks that hold a skip (the
    annotator-time records read every annotation, skips included)."""
    if on_page is not None:
        for page in iter_task_pages(ls, project, labeled=False, skipped=True, fields="all"):
            control.check()
            on_page(page)
    out = []
    for page in iter_task_pages(ls, project, labeled=True, fields="all"):
        control.check()
        if on_page is not None:
            on_page(page)
        for t in page:
            result = latest_label(t)
            if result is not None:
                versions = tuple(sorted({p.model_version for p in (t.predictions or []) if _version(p)}))
                out.append(LabeledTask(int(t.id), dict(t.data or {}), result, versions))
    return out


def _version(prediction) -> str | None:
    v = prediction.get("model_version") if isinstance(prediction, dict) else getattr(prediction, "model_version", None)
    return v or None


def batched(items: Iterable, n: int) -> Iterator[list]:
    batch = []
    for x in items:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


class TaskImages:
    """Task images of one job: fetched with the backend's limits and credentials, pinned by the caller's :class:`Pins`."""

    def __init__(self, client: LabelStudioClient, target: RectangleTarget, service_config) -> None:
        self.client, self.target, self.config = client, target, service_config
        self.cache_dir = Path(service_config.cache_dir or default_cache_dir()).resolve()

    def path(self, task_id: int, data: dict | None, pins: Pins | None) -> Path | None:
        """The task's image as a local file (None, logged, when it cannot be fetched)."""
        url = (data or {}).get(self.target.value_key)
        try:
            return fetch_image(
                str(url),
                ls_url=self.client.url,
                token=self.client.api_key,
                task_id=task_id,
                local_root=self.config.local_files_root,
                cache_dir=self.config.cache_dir,
                limits=self.config.fetch_limits,
                pins=pins,
            )
        except ImageFetchError as exc:
            log.warning("task %s skipped: %s", task_id, exc)
            return None

    def cached(self, path: Path) -> bool:
        """Whether ``path`` is a file of the bounded image cache (which may evict it later)."""
        return path.resolve().parent == self.cache_dir

    def fetch(self, tasks: list, pins: Pins) -> list[tuple[object, Path]]:
        """``(task, image)`` for the tasks whose image could be fetched (pinned in ``pins``)."""
        out = []
        for t in tasks:
            p = self.path(int(t.id), t.data, pins)
            if p is not None:
                out.append((t, p))
        return out


def write_human_split(
    labeled: list[LabeledTask], images: TaskImages, target: RectangleTarget, root: Path, control: JobControl
) -> tuple[int, int]:
    """The labeled tasks' images and YOLO labels under ``root/images/{train,val}``; returns ``(n_train, n_val)``
    (tasks whose image cannot be fetched are left out)."""
    counts = {"train": 0, "val": 0}
    for batch in batched(labeled, BATCH):
        control.check()
        with Pins() as pins:
            for task, img in images.fetch(batch, pins):
                boxes, classes = from_label_studio_regions(task.result, target)
                split = "val" if in_validation(task.id) else "train"
                place_file(img, root / "images" / split / f"task{task.id}{img.suffix.lower()}", images.cached(img))
                write_labels(root / "labels" / split / f"task{task.id}.txt", boxes, classes)
                counts[split] += 1
    return counts["train"], counts["val"]


def predict_unlabeled(
    service, ls, project: int, images: TaskImages, round_index: int, control: JobControl, detector=None
) -> Iterator[list[tuple[object, Path, object]]]:
    """The project's unlabeled tasks predicted by the serving model (or ``detector``): a page of tasks listed at a
    time (a task labeled meanwhile is not listed), a batch of :data:`BATCH` images fetched, pinned and predicted at
    a time. Yields each batch as ``(task, image, summary)`` (an
    :class:`~detector_al.serving.service.ImageSummary`; images that could not be fetched or read are left out)
    while its images are still pinned: the caller may place them in a dataset."""
    target = images.target
    for page in iter_task_pages(ls, project, labeled=False, fields="task_only"):
        control.check()
        for batch in batched(page, BATCH):
            with Pins() as pins:
                fetched = images.fetch(batch, pins)
                found = service.predict_paths(
                    [str(p) for _, p in fetched],
                    lambda d, pred: service.summarise(d, pred, target, round_index),
                    detector,
                )
                yield [(t, img, x) for (t, img), x in zip(fetched, found, strict=True) if x.error is None]


def write_pseudo_labels(
    service, ls, project: int, images: TaskImages, root: Path, round_index: int, cap: int | None, control: JobControl
) -> int:
    """CEAL pseudo-labels of the unlabeled pool by the serving model, at most ``cap`` (None: all), the most confident
    first (ties: the lower task id), as ``pseudo_task<id>`` files of the training split, listed in ``pseudo.txt``.

    The pool streams through :func:`predict_unlabeled`; only the kept pseudo-labels' ``(confidence, task id)`` stay
    in memory."""
    kept: list[tuple[float, int, Path, Path]] = []  # min-heap: (confidence, -task id, image file, label file)
    if cap == 0:
        (root / "pseudo.txt").write_text("")
        return 0
    for batch in predict_unlabeled(service, ls, project, images, round_index, control):
        for task, img, x in batch:
            d = x.decision
            if not d.accepted:
                continue
            key = (float(d.confidence if d.confidence is not None else -(d.score or 0.0)), -int(task.id))
            if cap is not None and len(kept) >= cap and key <= kept[0][:2]:
                continue
            name = f"pseudo_task{task.id}"
            image_file = root / "images" / "train" / f"{name}{img.suffix.lower()}"
            label_file = root / "labels" / "train" / f"{name}.txt"
            place_file(img, image_file, images.cached(img))
            scale = np.array([d.width, d.height, d.width, d.height], np.float32)
            write_labels(label_file, d.pseudo_labels.xyxy / scale, d.pseudo_labels.class_id)
            heapq.heappush(kept, (*key, image_file, label_file))
            if cap is not None and len(kept) > cap:
                _, _, old_image, old_label = heapq.heappop(kept)
                old_image.unlink(missing_ok=True)
                old_label.unlink(missing_ok=True)
    names = sorted(label.stem for *_, label in kept)
    (root / "pseudo.txt").write_text("".join(f"{n}\n" for n in names))
    return len(names)
