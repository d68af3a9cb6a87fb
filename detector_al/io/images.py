"""Robust image decoding: whatever a real folder holds becomes an upright RGB array or a clear error.

Handled: EXIF orientation (applied, so boxes are in the frame people see), 16-bit and float images
(scaled to 8 bits), grayscale, palette and RGBA images (alpha composited over the letterbox grey),
CMYK, PNGs named ``.jpg`` (the content decides, not the name), and huge JPEGs (decoded at a reduced
scale with libjpeg's draft mode, so a 50-megapixel photo costs what a 2-megapixel one does).
Refused with :class:`ImageLoadError`: empty files, non-images, truncated or corrupt data, images above
:data:`MAX_PIXELS`, and images whose decoding would take more than ``max_bytes`` of memory
(:func:`decode_bytes`; default :data:`MAX_DECODE_BYTES`), checked from the header before any pixel is
decoded. Paths that are no regular file get the true reason (a folder, a FIFO, a broken or looping link,
no permission), and a FIFO is never opened (opening one would block).

Files a browser or Label Studio's upload cannot take (TIFF, HEIC, 16-bit or CMYK images, suffixes outside
:data:`WEB_SUFFIXES`) are told apart by :func:`needs_web_copy` and turned by :func:`to_web_image` into an
8-bit RGB PNG (a JPEG for HEIC/HEIF photos) holding exactly the pixels the detector sees: same decode,
upright, same size, so boxes predicted on the original fit the copy.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Iterator
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

WEB_SUFFIXES = (".bmp", ".gif", ".jpg", ".jpeg", ".png", ".webp")
"""Image suffixes that Label Studio's upload accepts (its list also has .svg) and browsers show."""
WEB_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"})
"""PIL formats browsers show (MPO: the multi-picture JPEG of some cameras)."""
WEB_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA"})
"""PIL modes of 8-bit images browsers show (not 16-bit ``I;16``, 32-bit ``I``/``F``, ``CMYK``, ``YCbCr``...)."""
LOSSY_FORMATS = frozenset({"HEIF", "AVIF", "JPEG", "MPO"})
"""Photo formats whose web copy is a JPEG (a PNG of a 12-megapixel phone photo is ten times larger)."""

MAX_DECODE_BYTES = 512 * 2**20
"""Default memory budget for decoding one image (a 19999 x 19999 PNG would need 2.4 GB: refused)."""
DOWNSCALE_FACTOR = 4
"""With ``max_side``, decoded images are kept at most ``DOWNSCALE_FACTOR * max_side`` pixels on their long side."""
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "RGBA": 4, "CMYK": 4}
_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I", "F")


def _open_image(fp) -> Image.Image:
    """``Image.open`` with PIL's decompression-bomb check as PIL sets it for the process, except for an image between
    PIL's limit and :data:`MAX_PIXELS`: that one is identified without PIL's check (:func:`_open_unchecked`) and
    held to ours. PIL's limit is never changed, so other threads (and other code using PIL) keep its check."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # a warning only: our own check follows
        try:
            return Image.open(fp)
        except Image.DecompressionBombError:
            im = _open_unchecked(fp)
            w, h = im.size
            if w * h > MAX_PIXELS:
                im.close()
                raise ImageLoadError(
                    f"image too large: {w}x{h} = {w * h / 1e6:.0f} MP > {MAX_PIXELS / 1e6:.0f} MP; downscale it first"
                ) from None
            return im


def _open_unchecked(fp) -> Image.Image:
    """What ``Image.open`` does to identify a file (each registered format's ``accept`` on the first bytes, then its
    opener), without PIL's size check: the caller checks the size. Raises PIL's own errors for an unknown format."""
    fp.seek(0)
    prefix = fp.read(16)
    Image.preinit()
    for full in (False, True):  # the common formats first, then every plugin (as Image.open does)
        if full:
            Image.init()
        for fmt in list(Image.ID):
            factory, accept = Image.OPEN[fmt]
            result = not accept or accept(prefix)
            if result and not isinstance(result, str):
                fp.seek(0)
                try:
                    return factory(fp, "")
                except (SyntaxError, IndexError, TypeError, struct.error):
                    continue
    raise UnidentifiedImageError("cannot identify image file")


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


def decode_bytes(mode: str, width: int, height: int) -> int:
    """Peak memory of decoding an image: ``width * height * (bytes per pixel of mode + bytes per pixel of the
    conversion)``: 3 for the RGB copy, 8 for the float scaling of 16/32-bit modes."""
    stored = _BYTES_PER_PIXEL.get(mode, 2 if mode.startswith("I;16") else 4)
    return width * height * (stored + (8 if mode in _HIGH_DEPTH else 0) + 3)


def check_regular_file(path: Path) -> None:
    """Raise :class:`ImageLoadError` with the true reason when ``path`` is not a readable regular file."""
    import errno
    import stat

    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageLoadError(
            f"broken symbolic link: {path}" if path.is_symlink() else f"no such file: {path}"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageLoadError(f"symbolic link loop: {path}") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ImageLoadError(f"permission denied: {path}") from None
        raise ImageLoadError(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError(f"a folder, not an image file: {path}")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        raise ImageLoadError(f"not a regular file ({kind}): {path}")
    if st.st_size == 0:
        raise ImageLoadError("empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ImageLoadError(f"permission denied: {path}")


def load_image(source: str | Path | bytes, max_side: int | None = None, max_bytes: int | None = None) -> LoadedImage:
    """Decode ``source`` (a path or the file's bytes) into an upright RGB array.

    Args:
        source: a file path or the encoded bytes.
        max_side: when set, a JPEG may be decoded at a reduced scale whose sides are still at least this
            long (it will be resized to the model's input size anyway), and any image is kept at most
            ``DOWNSCALE_FACTOR * max_side`` on its long side (the full-size width and height are kept).
        max_bytes: memory budget for decoding (:func:`decode_bytes`); default :data:`MAX_DECODE_BYTES`.

    Raises:
        ImageLoadError: with a message that names the problem (empty, not an image, truncated, too large).
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    fp = None
    try:
        fp = _open_source(source)
        with _open_image(fp) as img:
            rgb, full = _decode_upright(img, max_side, MAX_DECODE_BYTES if max_bytes is None else max_bytes)
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, ImportError):  # ImportError: ultralytics' PIL patch without pi-heif
        raise ImageLoadError("not an image (unrecognised file format)") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL raises these for truncated or corrupt data
        raise ImageLoadError(f"truncated or corrupt image data: {exc}") from None
    except Exception as exc:
        raise ImageLoadError(f"unreadable image ({type(exc).__name__}: {exc})") from None
    finally:
        if not isinstance(source, bytes) and fp is not None:
            fp.close()
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ImageLoadError(f"unsupported pixel layout {rgb.shape} in {name}")
    return LoadedImage(rgb=np.ascontiguousarray(rgb), width=full[0], height=full[1])


def _open_source(source: str | Path | bytes):
    """A binary file object over the encoded image (checked to be a readable regular file, or non-empty bytes)."""
    if isinstance(source, bytes):
        if not source:
            raise ImageLoadError("empty file (0 bytes)")
        return io.BytesIO(source)
    path = Path(source)
    check_regular_file(path)
    return path.open("rb")


def _decode_upright(img: Image.Image, max_side: int | None, budget: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The decoded, upright (EXIF) RGB array of an opened image, and its full-size upright ``(width, height)``
    (see :func:`load_image` for ``max_side``; ``budget``: the decoding memory budget in bytes)."""
    w0, h0 = img.size
    if w0 * h0 > MAX_PIXELS:
        raise ImageLoadError(
            f"image too large: {w0}x{h0} = {w0 * h0 / 1e6:.0f} MP > {MAX_PIXELS / 1e6:.0f} MP; downscale it first"
        )
    drafted = False
    if max_side and img.format == "JPEG":
        img.draft("RGB", (max_side, max_side))
        drafted = img.size != (w0, h0)
    need = decode_bytes(img.mode, *img.size)
    if need > budget:  # before getexif(): for a PNG without an eXIf chunk it decodes the whole image
        raise ImageLoadError(
            f"image too large to decode: {w0}x{h0} {img.mode} needs {need / 2**20:.0f} MB > the "
            f"{budget / 2**20:.0f} MB budget (MAX_IMAGE_DECODE_MB); downscale it first"
        )
    orientation = img.getexif().get(0x0112, 1)
    img.load()
    img = ImageOps.exif_transpose(img)
    # a reduced JPEG: its stored size, turned upright; else the decoded size (TIFFs come upright already)
    full = ((h0, w0) if orientation in (5, 6, 7, 8) else (w0, h0)) if drafted else img.size
    if max_side and max(img.size) > DOWNSCALE_FACTOR * max_side:  # keep a batch's memory small
        img.thumbnail((DOWNSCALE_FACTOR * max_side,) * 2, Image.Resampling.BILINEAR)
    return _to_rgb_array(img), full


def _png_bit_depth(path: Path) -> int | None:
    """The IHDR bit depth of a PNG file (PIL reports 16-bit RGB PNGs as mode ``RGB``), else None."""
    with path.open("rb") as f:
        head = f.read(25)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24]
    return None


def needs_web_copy(path: str | Path) -> bool:
    """True when ``path`` must be converted (:func:`to_web_image`) before Label Studio or a browser gets it.

    That is: a suffix outside :data:`WEB_SUFFIXES` (case-insensitive: ``.JPG`` is fine, ``.tif`` is not),
    content in a format browsers cannot show, or pixels that are not 8-bit (16-bit, float, CMYK). Only the
    header is read. An unreadable file gives False: :func:`load_image` reports it.
    """
    path = Path(path)
    if path.suffix.lower() not in WEB_SUFFIXES:
        return True
    try:
        with path.open("rb") as fp, _open_image(fp) as img:
            if img.format not in WEB_FORMATS or img.mode not in WEB_MODES:
                return True
            fmt = img.format
        return fmt == "PNG" and (_png_bit_depth(path) or 8) > 8
    except Exception:  # unreadable: not ours to judge here
        return False


def to_web_image(path: str | Path, out_dir: str | Path) -> Path:
    """Write an 8-bit RGB web copy of ``path`` into ``out_dir`` and return its path.

    The pixels are those :func:`load_image` gives the detector (EXIF orientation applied, 16-bit scaled,
    alpha over the letterbox grey), at full resolution, so the copy has the original's upright size and a
    box predicted on the original fits it. HEIC/HEIF (and other photo) sources become a JPEG (quality 95),
    everything else a lossless PNG. The name is the original's stem with the new suffix (``-1``, ``-2``...
    added if ``out_dir`` already holds one).

    Raises:
        ImageLoadError: the file is not a readable image.
    """
    path, out_dir = Path(path), Path(out_dir)
    img = load_image(path)
    try:
        with path.open("rb") as fp, _open_image(fp) as src:
            fmt = src.format
    except Exception:  # pragma: no cover - load_image opened it a moment ago
        fmt = None
    suffix = ".jpg" if fmt in LOSSY_FORMATS else ".png"
    out_dir.mkdir(parents=True, exist_ok=True)
    out, n = out_dir / f"{path.stem}{suffix}", 0
    while out.exists():
        n += 1
        out = out_dir / f"{path.stem}-{n}{suffix}"
    pil = Image.fromarray(img.rgb, "RGB")
    if suffix == ".jpg":
        pil.save(out, "JPEG", quality=95)
    else:
        pil.save(out, "PNG", compress_level=3)
    return out


def iter_images(folder: Path, recursive: bool = True) -> Iterator[Path]:
    """Entries under ``folder`` named like images (suffix, case-insensitive), in a stable order, streamed.

    Named like an image is enough: a folder called ``x.jpg``, a FIFO or a broken link is yielded too, so that it
    gets a record with its true reason (:func:`check_regular_file`) instead of vanishing from the run. Folders
    are walked in sorted order without following links (a link loop cannot trap the walk).
    """
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        yield from (Path(root) / n for n in sorted(files + dirs) if n.lower().endswith(IMAGE_SUFFIXES))
        if not recursive:
            return


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """:func:`iter_images` as a list."""
    return list(iter_images(folder, recursive))
