"""Decoding of the odd files real folders contain."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from detector_al.images import ImageLoadError, load_image

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
    import detector_al.images as images

    Image.new("RGB", (200, 100)).save(tmp_path / "a.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(tmp_path / "a.png")


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
