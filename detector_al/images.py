"""Robust image decoding: whatever a real folder holds becomes an upright RGB array or a clear error.

Handled: EXIF orientation (applied, so boxes are in the frame people see), 16-bit and float images
(scaled to 8 bits), grayscale, palette and RGBA images (alpha composited over the letterbox grey),
CMYK, PNGs named ``.jpg`` (the content decides, not the name), and huge JPEGs (decoded at a reduced
scale with libjpeg's draft mode, so a 50-megapixel photo costs what a 2-megapixel one does).
Refused with :class:`ImageLoadError`: empty files, non-images, truncated or corrupt data, and images
above :data:`MAX_PIXELS`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF (phone photos); registering it also stops ultralytics' PIL patch from trying to install it
    from pi_heif import register_heif_opener

    register_heif_opener()
    HEIF = True
except ImportError:  # pragma: no cover - pi-heif is a dependency
    HEIF = False

MAX_PIXELS = 400_000_000
"""Images with more pixels than this are refused (PIL's own bomb check is replaced by this one)."""
PAD_GREY = 114
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff") + ((".heic", ".heif") if HEIF else ())

Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves, with a message that says what to do


class ImageLoadError(ValueError):
    """An input that is not a readable image; the message says why."""


@dataclass
class LoadedImage:
    """An upright RGB image, possibly decoded at a reduced scale.

    Attributes:
        rgb: (h, w, 3) uint8 pixels as decoded.
        width: width of the full-resolution upright image.
        height: height of the full-resolution upright image.
    """

    rgb: np.ndarray
    width: int
    height: int

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy): multiply decoded-pixel coordinates by these to get full-resolution ones."""
        return self.width / self.rgb.shape[1], self.height / self.rgb.shape[0]


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        if mode == "F":
            top = max(float(arr.max()), 1e-9) if arr.max() > 1 else 1.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (PAD_GREY, PAD_GREY, PAD_GREY, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def load_image(source: str | Path | bytes, max_side: int | None = None) -> LoadedImage:
    """Decode ``source`` (a path or the file's bytes) into an upright RGB array.

    Args:
        source: a file path or the encoded bytes.
        max_side: when set, a JPEG may be decoded at a reduced scale whose sides are still at least this
            long (it will be resized to the model's input size anyway).

    Raises:
        ImageLoadError: with a message that names the problem (empty, not an image, truncated, too large).
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            if not source:
                raise ImageLoadError("empty file (0 bytes)")
            fp = io.BytesIO(source)
        else:
            path = Path(source)
            if not path.is_file():
                raise ImageLoadError(f"no such file: {path}")
            if path.stat().st_size == 0:
                raise ImageLoadError("empty file (0 bytes)")
            fp = path.open("rb")
        with Image.open(fp) as img:
            w0, h0 = img.size
            if w0 * h0 > MAX_PIXELS:
                raise ImageLoadError(
                    f"image too large: {w0}x{h0} = {w0 * h0 / 1e6:.0f} MP > {MAX_PIXELS / 1e6:.0f} MP; "
                    "downscale it first"
                )
            orientation = img.getexif().get(0x0112, 1)
            if max_side and img.format == "JPEG":
                img.draft("RGB", (max_side, max_side))
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb_array(img)
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, ImportError):  # ImportError: ultralytics' PIL patch without pi-heif
        raise ImageLoadError("not an image (unrecognised file format)") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL raises these for truncated or corrupt data
        raise ImageLoadError(f"truncated or corrupt image data: {exc}") from None
    except Exception as exc:
        raise ImageLoadError(f"unreadable image ({type(exc).__name__}: {exc})") from None
    except Image.DecompressionBombError as exc:  # pragma: no cover - MAX_IMAGE_PIXELS is None
        raise ImageLoadError(str(exc)) from None
    finally:
        if not isinstance(source, bytes) and "fp" in locals():
            fp.close()
    if orientation in (5, 6, 7, 8):
        w0, h0 = h0, w0
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ImageLoadError(f"unsupported pixel layout {rgb.shape} in {name}")
    return LoadedImage(rgb=np.ascontiguousarray(rgb), width=w0, height=h0)


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by suffix, case-insensitive), sorted for a stable order."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
