"""The simulation's data: a labeled dataset split into an unlabeled pool (with its oracle) and held-out splits.

``prepare_dataset`` turns a VOC folder (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``) or a YOLO
``data.yaml`` into YOLO files under ``work/dataset``: the pool is the train split; ``val`` (for choosing
recipes and defaults) and ``test`` (for the reported figures only) stay fixed. Images are linked, not copied.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from detector_al.io.yolo_format import yolo_lines

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DatasetError(ValueError):
    """The dataset given to the simulation is not a VOC folder or a usable YOLO ``data.yaml``."""


EVAL_SPLITS = ("val", "test")


@dataclass
class SimDataset:
    """The pool (with oracle labels) and the fixed evaluation splits, as YOLO files under ``root``."""

    root: Path
    names: list[str]
    pool: list[Path] = field(default_factory=list)

    def label_of(self, image: Path) -> Path:
        """The oracle's YOLO label file of an image of any split (pool, val or test)."""
        return self.root / "labels" / image.parent.name / f"{image.stem}.txt"

    def images(self, split: str) -> list[Path]:
        """The images of an evaluation split (``val`` or ``test``)."""
        return sorted((self.root / "images" / split).iterdir())

    def eval_yaml(self, split: str) -> Path:
        """A dataset yaml whose ``val`` is the ``split`` (``val`` or ``test``)."""
        return self.root / f"{split}.yaml"

    def write_train_yaml(self, out: Path) -> Path:
        """``out/data.yaml``: train on ``out/images/train``, validate on the val split."""
        data = out / "data.yaml"
        data.write_text(
            f"path: {out}\ntrain: images/train\nval: {self.root / 'images' / 'val'}\nnames:\n{self._yaml_names()}\n"
        )
        return data

    def _yaml_names(self) -> str:
        return "\n".join(f"  {i}: {n}" for i, n in enumerate(self.names))


def _voc_boxes(xml: Path, names: list[str]) -> list[str]:
    tree = ET.parse(xml).getroot()
    w = float(tree.findtext("size/width"))
    h = float(tree.findtext("size/height"))
    lines = []
    for obj in tree.iter("object"):
        name = obj.findtext("name").strip()
        if name not in names:
            names.append(name)
        b = obj.find("bndbox")
        x1, y1, x2, y2 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        x1, x2 = max(0.0, min(x1, x2)), min(w, max(x1, x2))
        y1, y2 = max(0.0, min(y1, y2)), min(h, max(y1, y2))
        if x2 - x1 < 1 or y2 - y1 < 1:  # e.g. BCCD's two zero-size boxes
            continue
        lines += yolo_lines([[x1, y1, x2, y2]], [names.index(name)], w, h)
    return lines


def link_split(images: list[Path], labels: list[list[str] | Path], root: Path, split: str) -> list[Path]:
    """Link ``images`` into ``root/images/split`` and write their labels (lines, or a label file to copy)."""
    out = []
    for img, lab in zip(images, labels, strict=True):
        dst = root / "images" / split / img.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(img.resolve())
        lab_dst = root / "labels" / split / f"{img.stem}.txt"
        lab_dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(lab, Path):
            shutil.copyfile(lab, lab_dst) if lab.exists() else lab_dst.write_text("")
        else:
            lab_dst.write_text("\n".join(lab) + ("\n" if lab else ""))
        out.append(dst)
    return out


def _label_path(image: Path) -> Path:
    """ultralytics' convention: the last ``/images/`` of the path becomes ``/labels/``, the suffix ``.txt``."""
    parts = list(image.parts)
    i = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    if i is not None:
        parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def _voc_splits(source: Path) -> tuple[list[str], dict[str, tuple[list[Path], list]]]:
    sets = source / "ImageSets" / "Main"
    names: list[str] = []
    data = {}
    for split, file in (("pool", "train"), ("val", "val"), ("test", "test")):
        ids = (sets / f"{file}.txt").read_text().split()
        data[split] = (
            [source / "JPEGImages" / f"{i}.jpg" for i in ids],
            [_voc_boxes(source / "Annotations" / f"{i}.xml", names) for i in ids],
        )
    return names, data


def _yolo_splits(source: Path) -> tuple[list[str], dict[str, tuple[list[Path], list]]]:
    import yaml

    cfg = yaml.safe_load(source.read_text())
    base = source.parent / cfg["path"] if cfg.get("path") else source.parent
    raw = cfg["names"]
    names = [raw[k] for k in sorted(raw)] if isinstance(raw, dict) else list(raw)

    def split(key: str) -> tuple[list[Path], list[Path]]:
        imgs = sorted(p for p in (base / cfg[key]).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return imgs, [_label_path(p) for p in imgs]

    test_key = "test" if cfg.get("test") else "val"
    return names, {"pool": split("train"), "val": split("val"), "test": split(test_key)}


def _read_splits(source: Path) -> tuple[list[str], dict[str, tuple[list[Path], list]]]:
    """The names and the pool/val/test splits of a VOC folder or a YOLO yaml; :class:`DatasetError` if neither."""
    import yaml

    if source.is_dir() and (source / "Annotations").is_dir():
        try:
            return _voc_splits(source)
        except (OSError, ET.ParseError) as exc:
            raise DatasetError(f"{source}: not a usable VOC folder ({exc})") from None
    if not source.is_file():
        raise DatasetError(
            f"{source}: no such YOLO data.yaml or VOC folder (Annotations/, JPEGImages/, ImageSets/Main/)"
        )
    try:
        names, splits = _yolo_splits(source)
    except (yaml.YAMLError, KeyError, TypeError, AttributeError, OSError) as exc:
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise DatasetError(f"{source}: not a YOLO data.yaml with names and train/val splits ({why})") from None
    if not splits["pool"][0]:
        raise DatasetError(f"{source}: its train split holds no image")
    return names, splits


def prepare_dataset(source: Path, work: Path) -> SimDataset:
    """VOC folder or YOLO ``data.yaml`` -> pool + val + test under ``work/dataset`` (see the module docstring)."""
    root = work / "dataset"
    names, splits = _read_splits(source)
    pool = link_split(*splits["pool"], root, "pool")
    ds = SimDataset(root=root, names=names, pool=sorted(pool))
    for split in EVAL_SPLITS:
        link_split(*splits[split], root, split)
        ds.eval_yaml(split).write_text(
            f"path: {root}\ntrain: images/{split}\nval: images/{split}\ntest: images/{split}\n"
            f"names:\n{ds._yaml_names()}\n"
        )
    return ds
