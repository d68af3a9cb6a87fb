"""Seeded generator of the project's sample detection dataset.

The scenes are synthetic but hard in the ways real data is hard, so that active learning has
something to find: a rare class (``star``), small objects, clutter (distractor shapes drawn in the
same palette), occlusion, and varied backgrounds (gradients, noise, stripes, tiles, blobs) at several
image sizes. Every image in the unlabeled pool carries difficulty tags in ``pool_meta.jsonl`` so that
benchmarks can check which images a strategy ranks first.

Layout written by :func:`generate`::

    sample_data/
      data.yaml                      # ultralytics dataset file (train / val / test)
      label_config.xml               # Label Studio labeling config (RectangleLabels)
      images/{train,val,test,pool}/  # JPEG images
      labels/{train,val,test}/       # YOLO txt labels (class cx cy w h, normalised)
      oracle/pool/                   # ground truth of the pool, for simulations only
      pool_meta.jsonl                # per pool image: tags (rare, cluttered, small, occluded, easy)
      bad_inputs/                    # files real folders contain (see make_bad_inputs)

Example:
    >>> from pathlib import Path
    >>> generate(Path("/tmp/sd"), seed=0, counts={"train": 2, "val": 1, "test": 1, "pool": 2})
    PosixPath('/tmp/sd/data.yaml')
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from detector_al.io.yolo_format import yolo_lines

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "star")
RARE_CLASS = 2
IMAGE_SIZES: tuple[tuple[int, int], ...] = ((256, 192), (224, 224), (320, 240), (192, 256), (288, 216))
DEFAULT_COUNTS: dict[str, int] = {"train": 80, "val": 40, "test": 60, "pool": 240}

LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <RectangleLabels name="label" toName="image">
    <Label value="circle" background="#1f77b4"/>
    <Label value="square" background="#2ca02c"/>
    <Label value="star" background="#d62728"/>
  </RectangleLabels>
</View>
"""


@dataclass
class Scene:
    """One generated image with its ground truth in pixel ``xyxy`` and its difficulty tags."""

    image: Image.Image
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


def _color(rng: np.random.Generator, avoid: np.ndarray | None = None) -> tuple[int, int, int]:
    """A random colour at least some distance from ``avoid`` (the local background)."""
    for _ in range(20):
        c = rng.integers(0, 256, 3)
        if avoid is None or np.abs(c.astype(int) - avoid.astype(int)).sum() > 160:
            break
    return tuple(int(v) for v in c)


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    kind = rng.choice(["gradient", "noise", "stripes", "tiles", "blobs", "plain"])
    a = np.array(_color(rng), dtype=float)
    b = np.array(_color(rng), dtype=float)
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == "gradient":
        t = (xx * math.cos(rng.uniform(0, 6.3)) + yy * math.sin(rng.uniform(0, 6.3))) / max(w, h)
        t = (t - t.min()) / (np.ptp(t) + 1e-9)
        arr = a * (1 - t[..., None]) + b * t[..., None]
    elif kind == "noise":
        small = rng.random((h // 8 + 1, w // 8 + 1))
        t = np.array(Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)) / 255.0
        arr = a * (1 - t[..., None]) + b * t[..., None]
    elif kind == "stripes":
        period = rng.uniform(6, 30)
        t = (np.sin((xx + yy * rng.uniform(-1, 1)) / period * 2 * math.pi) + 1) / 2
        arr = a * (1 - 0.35 * t[..., None]) + b * 0.35 * t[..., None]
    elif kind == "tiles":
        s = int(rng.integers(12, 40))
        t = (((xx // s) + (yy // s)) % 2).astype(float)
        arr = a * (1 - 0.3 * t[..., None]) + b * 0.3 * t[..., None]
    elif kind == "blobs":
        arr = np.broadcast_to(a, (h, w, 3)).copy()
        img = Image.fromarray(arr.astype(np.uint8))
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(3, 8))):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(20, 80)
            d.ellipse([cx - r, cy - r * 0.6, cx + r, cy + r * 0.6], fill=_color(rng))
        arr = np.array(img.filter(ImageFilter.GaussianBlur(12)), dtype=float)
    else:
        arr = np.broadcast_to(a, (h, w, 3)).copy()
    arr = arr + rng.normal(0, rng.uniform(2, 12), arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _star_points(cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        rr = r if k % 2 == 0 else r * 0.45
        ang = rot + k * math.pi / 5
        pts.append((cx + rr * math.sin(ang), cy - rr * math.cos(ang)))
    return pts


def _draw_object(d: ImageDraw.ImageDraw, cls: int, cx: float, cy: float, r: float, color, rot: float):
    """Draw one object and return its tight pixel box."""
    if cls == 0:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        return (cx - r, cy - r, cx + r, cy + r)
    if cls == 1:
        pts = [(cx + r * math.cos(rot + k * math.pi / 2), cy + r * math.sin(rot + k * math.pi / 2)) for k in range(4)]
    else:
        pts = _star_points(cx, cy, r, rot)
    d.polygon(pts, fill=color)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))


def _draw_distractor(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    """Clutter that is not an object: lines, thin ellipses, rectangle outlines, arcs."""
    color = _color(rng)
    kind = rng.integers(0, 4)
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    s = rng.uniform(8, 40)
    if kind == 0:
        d.line([x, y, x + rng.uniform(-60, 60), y + rng.uniform(-60, 60)], fill=color, width=int(rng.integers(1, 4)))
    elif kind == 1:
        d.ellipse([x - s, y - s * 0.3, x + s, y + s * 0.3], fill=color)
    elif kind == 2:
        d.rectangle([x - s, y - s * 0.6, x + s, y + s * 0.6], outline=color, width=2)
    else:
        d.arc([x - s, y - s, x + s, y + s], rng.uniform(0, 180), rng.uniform(180, 360), fill=color, width=2)


def make_scene(rng: np.random.Generator, kind: str) -> Scene:
    """Generate one scene of a difficulty ``kind``: easy, cluttered, rare, small or occluded."""
    w, h = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    img = _background(rng, w, h)
    d = ImageDraw.Draw(img)
    arr = np.asarray(img)
    scene = Scene(image=img, tags=[kind])
    n_obj = {"easy": (1, 3), "cluttered": (3, 7), "rare": (1, 4), "small": (3, 7), "occluded": (3, 6)}[kind]
    n = int(rng.integers(n_obj[0], n_obj[1] + 1))
    if kind == "cluttered":
        for _ in range(int(rng.integers(8, 20))):
            _draw_distractor(d, rng, w, h)
    placed: list[tuple[float, float, float]] = []
    for k in range(n):
        cls = int(rng.integers(0, 2))
        if kind == "rare" and k == 0:
            cls = RARE_CLASS
        r = rng.uniform(4, 9) if kind == "small" else rng.uniform(10, 30)
        for _ in range(30):
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            gaps = [math.hypot(cx - px, cy - py) / (r + pr) for px, py, pr in placed]
            if kind == "occluded" and placed and k % 2 == 1:
                px, py, pr = placed[-1]
                ang = rng.uniform(0, 2 * math.pi)
                cx = float(np.clip(px + math.cos(ang) * (pr + r) * 0.7, r, w - r))
                cy = float(np.clip(py + math.sin(ang) * (pr + r) * 0.7, r, h - r))
                break
            if not gaps or min(gaps) > 1.1:
                break
        local = arr[int(min(cy, h - 1)), int(min(cx, w - 1))]
        box = _draw_object(d, cls, cx, cy, r, _color(rng, local), rng.uniform(0, math.pi))
        placed.append((cx, cy, r))
        x1, y1, x2, y2 = (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))
        scene.boxes.append((x1, y1, x2, y2))
        scene.classes.append(cls)
    if kind == "cluttered":  # clutter in front of objects too
        for _ in range(int(rng.integers(2, 6))):
            _draw_distractor(d, rng, w, h)
    if RARE_CLASS in scene.classes and "rare" not in scene.tags:
        scene.tags.append("rare")
    if rng.random() < 0.3:
        scene.image = scene.image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return scene


def _kinds_for(split: str, n: int, rng: np.random.Generator) -> list[str]:
    """Difficulty mix of a split; the labeled splits see the rare class seldom, as real data does."""
    if split == "pool":
        weights = {"easy": 0.45, "cluttered": 0.15, "rare": 0.12, "small": 0.14, "occluded": 0.14}
    else:
        weights = {"easy": 0.55, "cluttered": 0.12, "rare": 0.08, "small": 0.13, "occluded": 0.12}
    names = list(weights)
    p = np.array([weights[k] for k in names])
    return [names[i] for i in rng.choice(len(names), size=n, p=p / p.sum())]


def _yolo_lines(scene: Scene) -> str:
    lines = yolo_lines(scene.boxes, scene.classes, *scene.image.size)
    return "\n".join(lines) + ("\n" if lines else "")


def generate(out: Path, seed: int = 0, counts: dict[str, int] | None = None) -> Path:
    """Write the whole sample dataset under ``out`` and return the path of its ``data.yaml``.

    Args:
        out: destination folder (created).
        seed: seed of the ``np.random.Generator``; the same seed writes the same files.
        counts: images per split (``train``, ``val``, ``test``, ``pool``).
    """
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    meta_lines = []
    for split, n in counts.items():
        img_dir = out / "images" / split
        lbl_dir = out / ("oracle" if split == "pool" else "labels") / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        for i, kind in enumerate(_kinds_for(split, n, rng)):
            scene = make_scene(rng, kind)
            name = f"{split}_{i:04d}"
            scene.image.save(img_dir / f"{name}.jpg", quality=90)
            (lbl_dir / f"{name}.txt").write_text(_yolo_lines(scene))
            if split == "pool":
                meta_lines.append(
                    json.dumps({"image": f"images/pool/{name}.jpg", "tags": scene.tags, "classes": scene.classes})
                )
    (out / "pool_meta.jsonl").write_text("\n".join(meta_lines) + "\n")
    (out / "label_config.xml").write_text(LABEL_CONFIG)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    data_yaml = out / "data.yaml"
    data_yaml.write_text(
        "# Generated by detector_al.demo.sample_data (seeded); see README.\n"
        "train: images/train\nval: images/val\ntest: images/test\n"
        f"names:\n{names}\n"
    )
    make_bad_inputs(out / "bad_inputs", rng)
    return data_yaml


def make_bad_inputs(out: Path, rng: np.random.Generator) -> dict[str, str]:
    """Write the odd files real folders contain; return ``{file name: what is expected}``.

    Expected outcomes are ``"error"`` (a record with a clear error) or ``"ok"`` (a correct prediction).
    """
    out.mkdir(parents=True, exist_ok=True)
    scene = make_scene(rng, "easy")
    base = scene.image.convert("RGB")
    buf = io.BytesIO()
    base.save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    expected: dict[str, str] = {}

    (out / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    expected["truncated.jpg"] = "error"
    (out / "empty.jpg").write_bytes(b"")
    expected["empty.jpg"] = "error"
    (out / "not_an_image.jpg").write_text("this is a text file with a .jpg name\n")
    expected["not_an_image.jpg"] = "error"

    base.save(out / "png_named.jpg", format="PNG")
    expected["png_named.jpg"] = "ok"
    rgba = base.convert("RGBA")
    alpha = np.full(base.size[::-1], 255, np.uint8)
    alpha[:, : base.size[0] // 4] = 0  # a transparent strip
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(out / "rgba.png")
    expected["rgba.png"] = "ok"
    gray16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(out / "gray16.png")
    expected["gray16.png"] = "ok"
    base.convert("L").save(out / "grayscale.png")
    expected["grayscale.png"] = "ok"

    # EXIF orientation 6: the stored pixels are rotated 90 degrees counter-clockwise; viewers rotate
    # them back clockwise, so the displayed image is ``base``.
    stored = base.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(out / "exif_rotated.jpg", quality=90, exif=exif.tobytes())
    expected["exif_rotated.jpg"] = "ok"

    big = base.resize((base.width * 25, base.height * 25), Image.BILINEAR)  # 5600 x 5600 up to 8000 x 6000
    big.save(out / "huge.jpg", quality=60)
    expected["huge.jpg"] = "ok"

    (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    return expected


def oracle_regions(sample: Path, image_name: str, names=("circle", "square", "star")) -> list[dict]:
    """The ground truth of a pool image (``oracle/pool/<stem>.txt``) as Label Studio regions: what an annotator
    would draw, for the tests and benchmarks that label tasks."""
    rows = np.loadtxt(sample / "oracle" / "pool" / f"{Path(image_name).stem}.txt", ndmin=2)
    with Image.open(sample / "images" / "pool" / image_name) as im:
        w, h = im.size
    return [
        {
            "from_name": "label",
            "to_name": "image",
            "type": "rectanglelabels",
            "original_width": w,
            "original_height": h,
            "value": {
                "x": (cx - bw / 2) * 100,
                "y": (cy - bh / 2) * 100,
                "width": bw * 100,
                "height": bh * 100,
                "rotation": 0,
                "rectanglelabels": [names[int(c)]],
            },
        }
        for c, cx, cy, bw, bh in rows
    ]


def main() -> None:  # pragma: no cover - thin wrapper, used by ``python -m detector_al.demo.sample_data``
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, nargs="?", default=Path("sample_data"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(generate(args.out, args.seed))


if __name__ == "__main__":  # pragma: no cover
    main()
