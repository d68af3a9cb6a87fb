"""Edges of the system: Label Studio regions, label configs, local-files URLs, dataset paths, versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detector_al.label_studio.client import local_files_path
from detector_al.label_studio.config import LabelConfigError, default_label_config, parse_label_config
from detector_al.label_studio.regions import from_label_studio_regions, to_label_studio_regions, xyxy_to_percent
from detector_al.label_studio.task_sink import local_files_url
from detector_al.model.predictions import Detections

CFG = """<View><Image name="img" value="$image"/><RectangleLabels name="box" toName="img">
<Label value="Car" predicted_values="car,truck"/><Label value="Person"/></RectangleLabels></View>"""


def region(x, y, w, h, label="Car", rotation=0, ow=200, oh=100):
    return {
        "type": "rectanglelabels",
        "from_name": "box",
        "to_name": "img",
        "original_width": ow,
        "original_height": oh,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]},
    }


def test_regions_round_trip():
    target = parse_label_config(CFG, ("person", "car"))
    dets = Detections(np.array([[20, 10, 60, 50]]), np.array([0.8]), np.array([1]))
    (r,) = to_label_studio_regions(dets, 200, 100, target)
    assert r["value"]["rectanglelabels"] == ["Car"] and r["score"] == 0.8
    assert (r["value"]["x"], r["value"]["y"], r["value"]["width"], r["value"]["height"]) == (10, 10, 20, 40)
    boxes, classes = from_label_studio_regions([r], target)
    np.testing.assert_allclose(boxes[0], [0.1, 0.1, 0.3, 0.5])
    assert classes.tolist() == [1]


def test_rotated_rectangle_becomes_its_axis_aligned_bounds():
    target = parse_label_config(CFG, ("car",))
    boxes, _ = from_label_studio_regions([region(50, 50, 10, 20, rotation=90)], target)
    # 20 px wide, 20 px high at (100, 50), turned 90 degrees clockwise about its top-left corner
    np.testing.assert_allclose(boxes[0], [80 / 200, 50 / 100, 100 / 200, 70 / 100], atol=1e-9)
    r = region(50, 50, 10, 20, rotation=30)
    del r["original_width"]
    assert len(from_label_studio_regions([r], target)[0]) == 0  # no image size: cannot rotate, skipped


def test_many_classes_to_one_label_train_the_class_named_like_it():
    target = parse_label_config(CFG, ("truck", "car", "person"))
    assert target.class_to_label == {0: "Car", 1: "Car", 2: "Person"}
    assert target.label_to_class == {"Car": 1, "Person": 2}


def test_config_errors_name_the_problem():
    with pytest.raises(LabelConfigError, match="no label matches"):
        parse_label_config(CFG, ("dog",))
    with pytest.raises(LabelConfigError, match="no such label"):
        parse_label_config(CFG, ("dog",), mapping={"dog": "Cat"})
    assert parse_label_config(CFG, ("dog",), mapping={"dog": "Person"}).class_to_label == {0: "Person"}
    assert parse_label_config(default_label_config(("a&b", "c")), ("a&b", "c")).labels == ("a&b", "c")


@pytest.mark.parametrize("name", ["plain.jpg", "cat & dog.jpg", "a+b.jpg", "x#1.jpg", "dir with space/é.png"])
def test_local_files_urls_round_trip(tmp_path, name):
    f = tmp_path / "root" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(b"x")
    url = local_files_url(f, tmp_path / "root")
    assert local_files_path(url, tmp_path / "root") == f.resolve()
    assert local_files_path(url, tmp_path / "elsewhere") is None


def test_yolo_label_path_replaces_only_the_last_images_folder():
    from detector_al.simulation.dataset import _label_path

    assert _label_path(Path("/data/myimages/images/train/a.jpg")) == Path("/data/myimages/labels/train/a.txt")


def test_unfinished_version_folders_are_not_versions(tmp_path):
    from detector_al.state.registry import ModelRegistry

    reg = ModelRegistry(tmp_path)
    w = tmp_path / "w.pt"
    w.write_bytes(b"weights")
    v = reg.add(w)
    (tmp_path / "versions" / ".v1-deadbeef.tmp").mkdir()
    (tmp_path / "versions" / ".v1-deadbeef.tmp" / "meta.json").write_text("{}")
    assert reg.versions() == [v] and reg.version_of(w) == v
    assert xyxy_to_percent([0, 0, 10, 10], 100, 100) == (0.0, 0.0, 10.0, 10.0)
