"""Decoding of the odd files real folders contain."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector_al.io.images import ImageLoadError, load_image, needs_web_copy, to_web_image

EXPECTED_ERRORS = {
    "truncated.jpg": "truncated",
    "empty.jpg": "empty file",
    "not_an_image.jpg": "not an image",
}


@pytest.mark.parametrize(("name", "fragment"), sorted(EXPECTED_ERRORS.items()))
def test_unreadable_files_raise_a_clear_error(sample_data, name, fragment):
    with pytest.raises(ImageLoadError, match=fragment):
        load_image(sample_data / "bad_inputs" / name)


def test_expected_table_matches_folder(sample_data):
    expected = json.loads((sample_data / "bad_inputs" / "expected.json").read_text())
    files = {p.name for p in (sample_data / "bad_inputs").iterdir() if p.name != "expected.json"}
    assert files == set(expected)
    assert {k for k, v in expected.items() if v == "error"} == set(EXPECTED_ERRORS)


def test_png_named_jpg_is_read_by_content(sample_data):
    img = load_image(sample_data / "bad_inputs" / "png_named.jpg")
    ref = np.asarray(Image.open(sample_data / "bad_inputs" / "grayscale.png").convert("RGB"))
    assert img.rgb.shape == ref.shape


def test_exif_rotation_is_applied(sample_data):
    """The stored pixels are rotated; the decoded image must equal the upright original (PNG copy)."""
    upright = load_image(sample_data / "bad_inputs" / "png_named.jpg")
    rotated = load_image(sample_data / "bad_inputs" / "exif_rotated.jpg")
    assert (rotated.width, rotated.height) == (upright.width, upright.height)
    assert rotated.rgb.shape == upright.rgb.shape
    err = np.abs(rotated.rgb.astype(int) - upright.rgb.astype(int)).mean()
    assert err < 6, f"mean abs difference {err:.1f}: rotation not applied (or applied wrongly)"


def test_16bit_grayscale_is_scaled_not_clipped(sample_data):
    img16 = load_image(sample_data / "bad_inputs" / "gray16.png")
    img8 = load_image(sample_data / "bad_inputs" / "grayscale.png")
    assert img16.rgb.dtype == np.uint8 and img16.rgb.shape[2] == 3
    assert np.abs(img16.rgb.astype(int) - img8.rgb.astype(int)).max() <= 1


def test_rgba_transparent_area_becomes_letterbox_grey(sample_data):
    img = load_image(sample_data / "bad_inputs" / "rgba.png")
    strip = img.rgb[:, : img.width // 4 - 1]
    assert np.all(strip == 114)


def test_huge_jpeg_is_decoded_at_reduced_scale_with_full_size_reported(sample_data):
    img = load_image(sample_data / "bad_inputs" / "huge.jpg", max_side=256)
    with Image.open(sample_data / "bad_inputs" / "huge.jpg") as raw:
        w, h = raw.size
    assert w * h > 30e6 and (img.width, img.height) == (w, h)
    assert max(img.rgb.shape[:2]) <= max(w, h) / 8 and min(img.rgb.shape[:2]) >= 256
    sx, sy = img.scale
    assert sx == pytest.approx(w / img.rgb.shape[1]) and sy == pytest.approx(h / img.rgb.shape[0])


def test_too_many_pixels_is_refused(tmp_path, monkeypatch):
    import detector_al.io.images as images

    Image.new("RGB", (200, 100)).save(tmp_path / "a.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(tmp_path / "a.png")


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.jpg")


# Web copies: what Label Studio's upload and a browser get instead of TIFF, HEIC, 16-bit images.

DATA = Path(__file__).parent / "data"


def _png16_rgb(path: Path, rgb16: np.ndarray) -> None:
    """Write a 48-bit RGB PNG by hand (PIL writes 16-bit PNGs in grayscale only)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def _web_ok(path: Path) -> tuple[str, str, tuple[int, int]]:
    with Image.open(path) as img:
        return img.format, img.mode, img.size


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("png_named.jpg", False),
        ("grayscale.png", False),
        ("rgba.png", False),
        ("exif_rotated.jpg", False),
        ("gray16.png", True),
        ("truncated.jpg", False),  # unreadable: load_image says why, not this
        ("not_an_image.jpg", False),
    ],
)
def test_needs_web_copy_on_sample_files(sample_data, name, expected):
    assert needs_web_copy(sample_data / "bad_inputs" / name) is expected


def test_needs_web_copy_by_suffix_format_and_depth(tmp_path):
    rgb = Image.new("RGB", (8, 6), (10, 20, 30))
    rgb.save(tmp_path / "upper.JPG", "JPEG")
    rgb.save(tmp_path / "upper.PNG", "PNG")
    rgb.save(tmp_path / "plain.tif", "TIFF")
    rgb.save(tmp_path / "upper.TIFF", "TIFF")
    rgb.save(tmp_path / "tiff_named.png", "TIFF")
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg", "JPEG")
    _png16_rgb(tmp_path / "rgb48.png", np.full((6, 8, 3), 40000, np.uint16))
    assert not needs_web_copy(tmp_path / "upper.JPG")
    assert not needs_web_copy(tmp_path / "upper.PNG")
    for name in ("plain.tif", "upper.TIFF", "tiff_named.png", "cmyk.jpg", "rgb48.png"):
        assert needs_web_copy(tmp_path / name), name
    assert needs_web_copy(DATA / "photo.heic")


def test_16bit_png_becomes_an_8bit_png_of_the_same_size_and_pixels(sample_data, tmp_path):
    src = sample_data / "bad_inputs" / "gray16.png"
    out = to_web_image(src, tmp_path)
    assert out.parent == tmp_path and out.name == "gray16.png"
    fmt, mode, size = _web_ok(out)
    with Image.open(src) as raw:
        assert raw.mode.startswith("I") and size == raw.size
    assert (fmt, mode) == ("PNG", "RGB")
    assert not needs_web_copy(out)
    assert np.array_equal(np.asarray(Image.open(out)), load_image(src).rgb)  # what the detector sees


def test_48bit_rgb_png_is_scaled_to_8_bits(tmp_path):
    rgb16 = np.zeros((6, 8, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32768, 0
    _png16_rgb(tmp_path / "rgb48.png", rgb16)
    out = to_web_image(tmp_path / "rgb48.png", tmp_path / "web")
    assert _web_ok(out) == ("PNG", "RGB", (8, 6))
    assert np.abs(np.asarray(Image.open(out)).astype(int) - [255, 128, 0]).max() <= 1


def test_16bit_tiff_becomes_an_8bit_png_scaled_not_clipped(tmp_path):
    ramp = (np.arange(30 * 40, dtype=np.uint32).reshape(30, 40) * 54).astype(np.uint16)  # 0 .. 64746
    Image.fromarray(ramp).save(tmp_path / "scan.tif")
    with Image.open(tmp_path / "scan.tif") as raw:
        assert raw.mode == "I;16"
    out = to_web_image(tmp_path / "scan.tif", tmp_path / "web")
    assert out.name == "scan.png" and _web_ok(out) == ("PNG", "RGB", (40, 30))
    px = np.asarray(Image.open(out)).astype(int)
    assert np.array_equal(px[..., 0], px[..., 2])
    assert np.abs(px[..., 0] - ramp / 65535 * 255).max() <= 1  # scaled over the full range
    assert px.max() > 250 and len(np.unique(px)) > 200


def test_tiff_with_exif_orientation_is_written_upright_with_the_upright_size(tmp_path):
    img = Image.new("RGB", (40, 30), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 20, 30))  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    img.save(tmp_path / "rot.TIF", exif=exif)
    loaded = load_image(tmp_path / "rot.TIF")
    assert (loaded.width, loaded.height) == (30, 40) == (loaded.rgb.shape[1], loaded.rgb.shape[0])
    out = to_web_image(tmp_path / "rot.TIF", tmp_path / "web")
    assert _web_ok(out) == ("PNG", "RGB", (30, 40))
    with Image.open(out) as web:
        assert web.getexif().get(0x0112, 1) == 1  # no orientation left for a browser to apply twice
        px = np.asarray(web)
    assert (px[:20] == [255, 0, 0]).all() and (px[20:] == 0).all()  # upright: the red half is on top


def test_exif_rotated_jpeg_copy_is_upright(sample_data, tmp_path):
    src = sample_data / "bad_inputs" / "exif_rotated.jpg"
    out = to_web_image(src, tmp_path)
    loaded = load_image(src)
    assert _web_ok(out)[2] == (loaded.width, loaded.height)
    with Image.open(out) as web:
        assert web.getexif().get(0x0112, 1) == 1
        err = np.abs(np.asarray(web.convert("RGB")).astype(int) - loaded.rgb.astype(int)).mean()
    assert err < 3


def test_heic_photo_becomes_a_jpeg_of_the_same_size(tmp_path):
    out = to_web_image(DATA / "photo.heic", tmp_path)
    assert out.name == "photo.jpg" and _web_ok(out) == ("JPEG", "RGB", (288, 216))
    err = np.abs(np.asarray(Image.open(out)).astype(int) - load_image(DATA / "photo.heic").rgb.astype(int)).mean()
    assert err < 3


def test_cmyk_jpeg_becomes_rgb_and_names_do_not_clash(tmp_path):
    Image.new("RGB", (12, 10), (200, 30, 30)).convert("CMYK").save(tmp_path / "a.jpg", "JPEG")
    Image.new("RGB", (12, 10), (30, 200, 30)).save(tmp_path / "a.tif", "TIFF")
    first = to_web_image(tmp_path / "a.jpg", tmp_path / "web")
    second = to_web_image(tmp_path / "a.tif", tmp_path / "web")
    third = to_web_image(tmp_path / "a.tif", tmp_path / "web")
    assert len({first, second, third}) == 3 and all(p.exists() for p in (first, second, third))
    assert _web_ok(first)[:2] == ("JPEG", "RGB")


def test_unreadable_file_is_not_converted(sample_data, tmp_path):
    with pytest.raises(ImageLoadError, match="truncated"):
        to_web_image(sample_data / "bad_inputs" / "truncated.jpg", tmp_path)
    assert list(tmp_path.iterdir()) == []


def _huge_png(path, side: int) -> None:
    """A valid grayscale PNG of side x side zero pixels, written in a stream (a few hundred KB on disk)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp, row = zlib.compressobj(9), b"\x00" * (side + 1)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_an_image_over_the_decode_budget_is_refused_before_decoding(tmp_path):
    """19999 x 19999 (just under the pixel limit; 389 KB on disk) took 16 s and 4.5 GB: now refused at once."""
    import time

    from detector_al.io.images import ImageLoadError, load_image

    big = tmp_path / "huge.png"
    _huge_png(big, 19999)
    assert big.stat().st_size < 2_000_000
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match=r"too large to decode: 19999x19999 L needs \d+ MB > the 512 MB budget"):
        load_image(big)
    assert time.perf_counter() - start < 1.0
    with pytest.raises(ImageLoadError, match="> the 100 MB budget"):
        load_image(big, max_bytes=100 * 2**20)


def test_a_large_image_is_kept_small_after_decoding_but_reports_its_full_size(tmp_path):
    from PIL import Image

    from detector_al.io.images import DOWNSCALE_FACTOR, load_image

    path = tmp_path / "wide.png"
    Image.new("RGB", (3000, 1200), (200, 10, 10)).save(path)
    img = load_image(path, max_side=256)
    assert (img.width, img.height) == (3000, 1200)
    assert max(img.rgb.shape[:2]) == DOWNSCALE_FACTOR * 256
    assert img.scale == pytest.approx((3000 / 1024, 1200 / 410), rel=1e-2)


def _odd_entries(root):
    import os

    (root / "dir.jpg").mkdir()
    os.mkfifo(root / "pipe.jpg")
    (root / "dangling.jpg").symlink_to(root / "absent.jpg")
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    return {
        "dir.jpg": "a folder, not an image file",
        "pipe.jpg": "not a regular file (a FIFO)",
        "dangling.jpg": "broken symbolic link",
        "loop.jpg": "symbolic link loop",
    }


def test_entries_that_are_no_regular_file_get_their_true_reason(tmp_path):
    from detector_al.io.images import ImageLoadError, list_images, load_image

    expected = _odd_entries(tmp_path)
    listed = {p.name for p in list_images(tmp_path)}
    assert listed == set(expected)  # none vanishes from the run
    for name, reason in expected.items():
        with pytest.raises(ImageLoadError, match=re.escape(reason)):
            load_image(tmp_path / name)  # a FIFO is never opened: this returns at once


def test_score_records_every_odd_entry_with_its_reason(tmp_path, trained_weights):
    import json

    from typer.testing import CliRunner

    from detector_al.cli.app import app

    folder = tmp_path / "in"
    folder.mkdir()
    expected = _odd_entries(folder)
    out = tmp_path / "q.jsonl"
    res = CliRunner().invoke(app, ["score", str(folder), "--model", str(trained_weights), "--out", str(out)])
    assert res.exit_code == 0, res.output
    recs = {r["image"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(recs) == set(expected)
    for name, reason in expected.items():
        assert reason in recs[name]["error"]
