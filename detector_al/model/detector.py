"""The detector adapter: a YOLO model in, :class:`~detector_al.model.predictions.ImagePredictions` out.

For every image the adapter runs the image, **and with ``views=2`` its horizontal flip in the same batch**, and
returns

* the post-NMS detections of each view (the flip's mapped back onto the image);
* the per-anchor class probabilities of each view *before* NMS, the flipped output re-indexed level by
  level so that anchor ``i`` means the same place in both views;
* the pyramid level of every anchor and an embedding (global-average-pooled neck features of the image).

The default strategy and CEAL read only the image's own view (``views=1``, about the cost of a bare predict);
the flip-reading strategies (``mi_aod``, CALD, ENMS) ask for both (:func:`~detector_al.policy.decision.views_needed`).

Anchor alignment. A letterboxed input of width ``W`` (a multiple of the largest stride) gives, at a
level of stride ``s``, a grid of ``H_l x W_l`` anchors whose centres are ``((x + 0.5) s, (y + 0.5) s)``
and whose flat index is ``offset_l + y * W_l + x``. Flipping the letterboxed tensor sends the centre
at column ``x`` to ``W - (x + 0.5) s = (W_l - 1 - x + 0.5) s``: column ``W_l - 1 - x`` of the same level.
So ``probs_flip = raw_flip[perm]`` with ``perm[offset_l + y W_l + x] = offset_l + y W_l + (W_l - 1 - x)``
(an involution), and a flip-view box centre ``cx`` maps back to ``W - cx``.

Example:
    >>> det = Detector.load("runs/bootstrap/weights/best.pt")          # doctest: +SKIP
    >>> for p in det.predict(["a.jpg", "b.png"]):                      # doctest: +SKIP
    ...     print(p.source, len(p.detections), p.probs.shape)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from detector_al.io.files import file_sha256
from detector_al.io.images import ImageLoadError, LoadedImage, load_image
from detector_al.model.predictions import Detections, ImagePredictions
from detector_al.policy.thresholds import SCORE_THRESHOLD

log = logging.getLogger(__name__)

Source = str | Path | np.ndarray


class UnsupportedModelError(ValueError):
    """The model cannot give what the adapter needs (per-anchor class scores of a detection head)."""


def grid_shapes(input_hw: tuple[int, int], strides: Iterable[int]) -> list[tuple[int, int]]:
    """Anchor grid ``(H_l, W_l)`` of every pyramid level for a letterboxed input of ``input_hw``."""
    h, w = input_hw
    return [(h // int(s), w // int(s)) for s in strides]


def anchor_levels(grids: list[tuple[int, int]]) -> np.ndarray:
    """(A,) level index of every anchor, in the head's concatenation order."""
    return np.concatenate([np.full(gh * gw, lvl, np.int64) for lvl, (gh, gw) in enumerate(grids)])


def anchor_centers(grids: list[tuple[int, int]], strides: Iterable[int]) -> np.ndarray:
    """(A, 2) anchor centres ``((x + 0.5) s, (y + 0.5) s)`` in input pixels."""
    out = []
    for (gh, gw), s in zip(grids, strides, strict=True):
        yy, xx = np.mgrid[0:gh, 0:gw]
        out.append(np.stack([(xx.ravel() + 0.5) * float(s), (yy.ravel() + 0.5) * float(s)], 1))
    return np.concatenate(out)


def flip_permutation(grids: list[tuple[int, int]]) -> np.ndarray:
    """(A,) index of every anchor's mirror image: ``offset_l + y W_l + (W_l - 1 - x)``."""
    out, offset = [], 0
    for gh, gw in grids:
        idx = np.arange(gh * gw).reshape(gh, gw)[:, ::-1].ravel()
        out.append(idx + offset)
        offset += gh * gw
    return np.concatenate(out)


def _batched(items: Iterable, n: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


BATCH_SIZE = 16
"""Images per forward pass: the default of every caller (the CLI, ingest, the backend, the streams)."""


class Detector:
    """A YOLO detection model wrapped for active learning.

    Args:
        yolo: an ``ultralytics.YOLO`` detection model (v8 / 11 style head with per-anchor class scores).
        imgsz: square input size; default: the size the model was trained at, else 640.
        conf: confidence threshold of the returned detections.
        iou: NMS IoU threshold.
        max_det: most detections per image.
        device: torch device; default ``cuda:0`` when available, else ``cpu``.
        version: a name for these weights (default: hash of the weights file).
    """

    def __init__(
        self,
        yolo,
        imgsz: int | None = None,
        conf: float = SCORE_THRESHOLD,
        iou: float = 0.7,
        max_det: int = 300,
        device: str | None = None,
        version: str | None = None,
        max_decode_bytes: int | None = None,
    ) -> None:
        from ultralytics.data.augment import LetterBox
        from ultralytics.nn.modules.head import Detect

        net = getattr(yolo, "model", None)
        task = getattr(yolo, "task", None)
        head = net.model[-1] if net is not None and hasattr(net, "model") else None
        if task != "detect" or not isinstance(head, Detect):
            raise UnsupportedModelError(
                f"detector-al needs a YOLO detection model with a per-anchor head (YOLOv8/11 style); "
                f"got task={task!r}, head={type(head).__name__}. Use a detection checkpoint such as yolo11n.pt."
            )
        if getattr(head, "one2one_cv2", None) is not None:
            if getattr(head, "cv2", None) is None:
                raise UnsupportedModelError(
                    "this model is NMS-free (one-to-one head only, e.g. an exported or fused YOLO26/YOLOv10): it "
                    "gives no per-anchor class scores. Use its unfused .pt checkpoint or a YOLOv8/11 model."
                )
            log.info("end-to-end head: using its one-to-many branch (per-anchor scores) with NMS")
            head.end2end = False
        self.names: tuple[str, ...] = tuple(str(v) for _, v in sorted(yolo.names.items()))
        self.strides: list[int] = [int(s) for s in head.stride.tolist()]
        stride_max = max(self.strides)
        imgsz = imgsz or (yolo.overrides or {}).get("imgsz") or 640
        if isinstance(imgsz, (list, tuple)):  # pragma: no cover - rect training sizes
            imgsz = max(imgsz)
        self.imgsz = max(stride_max, int(np.ceil(imgsz / stride_max)) * stride_max)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.device = torch.device(device or ("cuda:0" if torch.cuda.is_available() else "cpu"))
        self._xyxy_head = bool(getattr(head, "xyxy", False))
        if getattr(head, "one2one_cv2", None) is None:
            net = net.fuse(verbose=False)
        self.net = net.to(self.device).eval().float()
        self.yolo = yolo
        self.max_decode_bytes = max_decode_bytes  # memory budget per decoded image (None: images.MAX_DECODE_BYTES)
        self.version = version or "untracked"
        self.weights: str | None = None  # where Detector.load read the model from (Ray workers load it again)
        self._letterbox = LetterBox((self.imgsz, self.imgsz), auto=False, stride=stride_max)
        grids = grid_shapes((self.imgsz, self.imgsz), self.strides)
        self._perm = torch.as_tensor(flip_permutation(grids), device=self.device)
        self._level = anchor_levels(grids)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="detector-al-decode")

    @classmethod
    def load(cls, weights: str | Path, **kwargs) -> Detector:
        """Load weights from a path, or by name for users who are online (``yolo11n.pt``).

        Raises:
            FileNotFoundError: a path that does not exist and is not a known model name.
            UnsupportedModelError: a model without per-anchor class scores.
        """
        from ultralytics import YOLO

        path = Path(weights)
        if path.suffix in (".pt", ".yaml") and not path.exists() and (path.parent != Path(".") or "/" in str(weights)):
            raise FileNotFoundError(f"model weights not found: {path}")
        yolo = YOLO(str(weights), task="detect")
        version = kwargs.pop("version", None) or (file_sha256(path)[:12] if path.is_file() else path.stem)
        det = cls(yolo, version=version, **kwargs)
        det.weights = str(weights)
        return det

    @property
    def num_anchors(self) -> int:
        return len(self._level)

    def _decode(self, source: Source) -> LoadedImage:
        if isinstance(source, np.ndarray):
            if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
                raise ImageLoadError(f"arrays must be (h, w, 3) uint8 RGB, got {source.shape} {source.dtype}")
            return LoadedImage(np.ascontiguousarray(source), source.shape[1], source.shape[0])
        return load_image(source, max_side=self.imgsz, max_bytes=self.max_decode_bytes)

    def predict(
        self, sources: Iterable[Source], batch_size: int = BATCH_SIZE, views: int = 2
    ) -> Iterator[ImagePredictions]:
        """Predict every source, in order; an unreadable one yields a record with ``error`` set.

        Decoding of the next batch overlaps with inference on the current one.

        Args:
            sources: file paths, or (h, w, 3) uint8 RGB arrays (named ``array[i]``).
            batch_size: images per forward pass (with two views the network sees twice as many).
            views: 2: the image and its horizontal flip; 1: the image alone (no ``*_flip`` fields), what the default
                strategy and CEAL read (:func:`~detector_al.policy.decision.views_needed`).
        """
        if views not in (1, 2):
            raise ValueError(f"views must be 1 or 2, got {views}")
        names_and_sources = ((s if not isinstance(s, np.ndarray) else f"array[{i}]", s) for i, s in enumerate(sources))
        pending = None
        for chunk in _batched(names_and_sources, batch_size):
            if len(chunk) == 1:  # one image (a single /predict task): decoding here beats a hop to the pool
                futures = [(name, self._decoded_now(src)) for name, src in chunk]
            else:
                futures = [(name, self._pool.submit(self._decode, src)) for name, src in chunk]
            if pending is not None:
                yield from self._run(pending, views)
            pending = futures
        if pending is not None:
            yield from self._run(pending, views)

    def _decoded_now(self, source: Source) -> Future:
        done: Future = Future()
        try:
            done.set_result(self._decode(source))
        except ImageLoadError as exc:
            done.set_exception(exc)
        return done

    def _run(self, futures, views: int = 2) -> list[ImagePredictions]:
        results: list[ImagePredictions | None] = []
        good: list[tuple[int, str, LoadedImage]] = []
        for name, fut in futures:
            try:
                good.append((len(results), str(name), fut.result()))
                results.append(None)
            except ImageLoadError as exc:
                results.append(ImagePredictions.failed(str(name), str(exc)))
        if good:
            try:
                preds = self.predict_loaded([img for _, _, img in good], [n for _, n, _ in good], views)
            except (RuntimeError, ValueError) as exc:  # a batch that cannot run fails its images, not the stream
                log.error("inference failed for a batch of %d images: %s", len(good), exc)
                preds = [ImagePredictions.failed(n, f"inference failed: {exc}") for _, n, _ in good]
            for (pos, _, _), p in zip(good, preds, strict=True):
                results[pos] = p
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def predict_loaded(self, images: list[LoadedImage], names: list[str], views: int = 2) -> list[ImagePredictions]:
        """Run already-decoded images (and, with ``views=2``, their flips, in the same batch) through the network."""
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import xywh2xyxy

        b = len(images)
        boxed = np.stack([self._letterbox(image=img.rgb) for img in images])
        x = torch.from_numpy(boxed).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        y, raw = self.net(torch.cat([x, x.flip(-1)]) if views == 2 else x)
        if "one2many" in raw:
            raw = raw["one2many"]
        if self._xyxy_head:  # pragma: no cover - only some end-to-end heads decode to corners
            from ultralytics.utils.ops import xyxy2xywh

            y = torch.cat([xyxy2xywh(y[:, :4].transpose(1, 2)).transpose(1, 2), y[:, 4:]], 1)
        if views == 2:
            y_flip = y[b:][:, :, self._perm]
            y_flip[:, 0] = self.imgsz - y_flip[:, 0]
            y = torch.cat([y[:b], y_flip])
        dets, keep = non_max_suppression(
            y.clone(), self.conf, self.iou, max_det=self.max_det, nc=len(self.names), return_idxs=True
        )
        pooled = torch.cat([f.mean(dim=(2, 3)) for f in raw["feats"]], 1)
        emb = torch.nn.functional.normalize(pooled[:b], dim=1).cpu().numpy()  # the image's own view
        probs = y[:, 4:].transpose(1, 2).cpu().numpy()

        anchor_xyxy = xywh2xyxy(y[:b, :4].transpose(1, 2)).cpu()

        out = []
        for i, img in enumerate(images):
            boxes = []
            for k in (i, b + i)[:views]:
                d = dets[k].cpu()
                boxes.append(
                    Detections(
                        self._to_original(d[:, :4], img),
                        d[:, 4].numpy(),
                        d[:, 5].numpy().astype(np.int64),
                        keep[k].view(-1).cpu().numpy(),
                    )
                )
            out.append(
                ImagePredictions(
                    source=names[i],
                    width=img.width,
                    height=img.height,
                    detections=boxes[0],
                    detections_flip=boxes[1] if views == 2 else None,
                    probs=probs[i],
                    probs_flip=probs[b + i] if views == 2 else None,
                    level=self._level,
                    anchor_boxes=self._to_original(anchor_xyxy[i], img),
                    embedding=emb[i],
                )
            )
        return out

    def _to_original(self, xyxy: torch.Tensor, img: LoadedImage) -> np.ndarray:
        """Letterboxed-input corners -> corners in pixels of the full-resolution upright image."""
        from ultralytics.utils.ops import scale_boxes

        boxes = scale_boxes((self.imgsz, self.imgsz), xyxy.clone(), img.rgb.shape[:2]).numpy()
        sx, sy = img.scale
        boxes *= np.array([sx, sy, sx, sy], np.float32)
        return np.clip(boxes, 0, [img.width, img.height, img.width, img.height])
