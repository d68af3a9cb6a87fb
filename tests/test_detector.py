"""The adapter: anchor alignment of the two views, robust batches, model checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from detector_al.model.detector import (
    Detector,
    UnsupportedModelError,
    anchor_centers,
    anchor_levels,
    flip_permutation,
    grid_shapes,
)
from detector_al.model.geometry import box_iou

STRIDES = [8, 16, 32]


def scene(size=256, objects=(("circle", 128, 128, 24),), bg=(40, 90, 160)) -> np.ndarray:
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    for kind, cx, cy, r in objects:
        if kind == "circle":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(240, 200, 40))
        else:
            d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=(230, 60, 60))
    return np.asarray(img).copy()


# ---- pure anchor geometry -------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(256, 256), (128, 320), (640, 640)])
def test_flip_permutation_mirrors_anchor_centres_within_each_level(hw):
    grids = grid_shapes(hw, STRIDES)
    perm = flip_permutation(grids)
    centres = anchor_centers(grids, STRIDES)
    lv = anchor_levels(grids)
    assert sorted(perm.tolist()) == list(range(len(perm)))
    np.testing.assert_array_equal(perm[perm], np.arange(len(perm)))  # an involution
    np.testing.assert_array_equal(lv[perm], lv)  # never leaves its level
    np.testing.assert_allclose(centres[:, 0] + centres[perm, 0], hw[1])  # x mirrors to W - x
    np.testing.assert_allclose(centres[:, 1], centres[perm, 1])  # y unchanged


# ---- the trained model ----------------------------------------------------------------------------


def one(detector, img):
    return next(detector.predict([img]))


def matched_by_iou_and_class(a, b) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of two detection sets: pairs of the same class, highest IoU first."""
    iou = box_iou(a.xyxy, b.xyxy) * (a.class_id[:, None] == b.class_id[None, :])
    pairs = []
    while iou.size and iou.max() > 0:
        i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        pairs.append((int(i), int(j), float(iou[i, j])))
        iou[i, :] = iou[:, j] = 0
    return pairs


def test_symmetric_image_gives_the_same_detections_in_both_views(detector):
    """On a mirror-symmetric image both views see the same objects: the flip view's boxes, mapped back, match
    the image's own boxes one to one (class, box, confidence), in whatever order either view lists them. Anchor by
    anchor the views may differ where an object sits on the mirror axis (a CNN is not flip-equivariant: it may fire
    on either of two mirrored anchors), which is why the exact alignment is checked on the flipped image below."""
    left = scene(objects=(("circle", 128, 100, 22), ("square", 60, 190, 14)))[:, :128]
    img = np.ascontiguousarray(np.concatenate([left, left[:, ::-1]], axis=1))
    assert np.array_equal(img, img[:, ::-1])
    p = one(detector, img)
    a, b = p.detections, p.detections_flip
    a, b = a[a.confidence >= 0.25], b[b.confidence >= 0.25]
    assert len(a) >= 1, "the model should see the shapes"
    pairs = matched_by_iou_and_class(a, b)
    assert len(pairs) == len(a) == len(b), (a, b)
    # a wrong alignment mirrors a box to the other side (IoU ~0 for all but the centred circle); a right one leaves
    # the box regression's own asymmetry, at most a stride at each edge of a box of >= 28 px
    min_side = float(np.minimum(*(a.xyxy[:, 2:] - a.xyxy[:, :2]).T).min())
    stride = detector.strides[0]
    worst = ((min_side - stride) / (min_side + stride)) ** 2
    assert all(iou >= worst for _, _, iou in pairs), (pairs, worst)
    for i, j, _ in pairs:
        assert abs(a.confidence[i] - b.confidence[j]) <= 0.1, (a.confidence, b.confidence)


def test_flip_view_is_the_flipped_image_mapped_back(detector):
    img = scene(objects=(("square", 24, 128, 16),))  # near the left edge
    p, q = one(detector, img), one(detector, np.ascontiguousarray(img[:, ::-1]))
    perm = flip_permutation(grid_shapes((detector.imgsz, detector.imgsz), detector.strides))
    np.testing.assert_allclose(p.probs_flip, q.probs[perm], atol=1e-4)
    np.testing.assert_allclose(q.probs_flip, p.probs[perm], atol=1e-4)


def test_box_near_left_edge_lands_on_the_same_anchor_in_both_views(detector):
    """The strongest anchor of each view sits on the object: the flip view's, mapped back, lands on the same cell or a
    neighbouring one of its level (a CNN is not flip-equivariant), never on the mirrored side of the image."""
    img = scene(objects=(("square", 24, 128, 16),))
    p = one(detector, img)
    top = int(np.argmax(p.probs.max(1)))
    top_flip = int(np.argmax(p.probs_flip.max(1)))
    centres = anchor_centers(grid_shapes((detector.imgsz, detector.imgsz), detector.strides), detector.strides)
    assert centres[top, 0] < 64, "the strongest anchor sits on the object at the left edge"
    cell = max(detector.strides[p.level[top]], detector.strides[p.level[top_flip]])
    # one cell of the coarser level away, diagonally at most; a mirrored anchor would be ~200 px away
    assert np.linalg.norm(centres[top] - centres[top_flip]) <= np.sqrt(2) * cell, (centres[top], centres[top_flip])


def test_boxes_from_both_views_agree(detector, sample_data):
    files = sorted((sample_data / "images" / "val").glob("*.jpg"))[:20]
    matched = total = 0
    for p in detector.predict(files):
        a = p.detections[p.detections.confidence >= 0.3]
        b = p.detections_flip[p.detections_flip.confidence >= 0.1]
        total += len(a)
        if len(a) and len(b):
            matched += int((box_iou(a.xyxy, b.xyxy).max(1) >= 0.5).sum())
    assert total >= 10
    assert matched / total >= 0.8, f"{matched}/{total} boxes found again in the flipped view"


def test_bad_inputs_get_records_and_leave_the_batch_unaffected(detector, sample_data):
    bad_dir = sample_data / "bad_inputs"
    expected = json.loads((bad_dir / "expected.json").read_text())
    good = sorted((sample_data / "images" / "val").glob("*.jpg"))[:3]
    sources = [good[0], *sorted(bad_dir / n for n in expected), good[1], good[2]]
    records = list(detector.predict(sources, batch_size=4))
    assert [r.source for r in records] == [str(s) for s in sources]
    for r in records[1:-2]:
        name = r.source.rsplit("/", 1)[-1]
        if expected[name] == "error":
            assert not r.ok and r.error, name
        else:
            assert r.ok, f"{name}: {r.error}"
            assert r.probs.shape == (detector.num_anchors, len(detector.names))
    alone = list(detector.predict(good))
    for r, ref in zip([records[0], records[-2], records[-1]], alone, strict=True):
        np.testing.assert_allclose(r.detections.xyxy, ref.detections.xyxy, atol=0.05)
        np.testing.assert_allclose(r.probs, ref.probs, atol=1e-4)


def test_exif_rotated_and_huge_images_are_predicted_in_the_upright_full_size_frame(detector, sample_data):
    bad = sample_data / "bad_inputs"
    ref, rot, huge = detector.predict([bad / "png_named.jpg", bad / "exif_rotated.jpg", bad / "huge.jpg"])
    assert (rot.width, rot.height) == (ref.width, ref.height)
    assert (huge.width, huge.height) == (25 * ref.width, 25 * ref.height)
    top = np.argsort(-ref.probs.max(1))[:3]  # the anchors the model finds most object-like
    for other, scale in ((rot, 1.0), (huge, 25.0)):
        assert np.abs(other.probs[top] - ref.probs[top]).max() < 0.15, other.source
        iou = np.diag(box_iou(ref.anchor_boxes[top] * scale, other.anchor_boxes[top]))
        assert iou.min() > 0.7, (other.source, iou)


def test_embedding_is_normalised_and_stable(detector, sample_data):
    f = sorted((sample_data / "images" / "val").glob("*.jpg"))[0]
    a, b = detector.predict([f, f])
    assert np.linalg.norm(a.embedding) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)


def test_arrays_must_be_rgb_uint8(detector):
    (r,) = detector.predict([np.zeros((10, 10), np.float32)])
    assert not r.ok and "uint8" in r.error


# ---- which models are accepted ---------------------------------------------------------------------


def test_classification_model_is_refused():
    from ultralytics import YOLO

    with pytest.raises(UnsupportedModelError, match="detection model"):
        Detector(YOLO("yolov8n-cls.yaml"))


def test_end_to_end_head_uses_its_one_to_many_branch():
    from ultralytics import YOLO

    det = Detector(YOLO("yolo26n.yaml"), imgsz=128)
    (p,) = det.predict([scene(128, (("circle", 64, 64, 20),))])
    assert p.ok and p.probs.shape == (det.num_anchors, 80)


def test_one_to_one_only_head_is_refused():
    from ultralytics import YOLO

    y = YOLO("yolo26n.yaml")
    head = y.model.model[-1]
    head.cv2 = head.cv3 = None  # what fusing for NMS-free export leaves
    with pytest.raises(UnsupportedModelError, match="NMS-free"):
        Detector(y)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Detector.load(tmp_path / "nope.pt")


def test_one_view_gives_the_images_own_view_without_the_flip(detector, sample_data):
    paths = [str(p) for p in sorted((sample_data / "images" / "pool").glob("*.jpg"))[:6]]
    one = list(detector.predict(paths, batch_size=3, views=1))
    two = list(detector.predict(paths, batch_size=3, views=2))
    for a, b in zip(one, two, strict=True):
        assert not a.has_flip and a.detections_flip is None and a.probs_flip is None
        assert b.has_flip and b.probs_flip.shape == b.probs.shape
        np.testing.assert_array_equal(a.detections.class_id, b.detections.class_id)
        np.testing.assert_allclose(a.detections.xyxy, b.detections.xyxy, atol=0.05)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-4)  # the image's own view in both
    with pytest.raises(ValueError, match="views"):
        list(detector.predict(paths[:1], views=3))


def test_the_views_run_are_what_the_strategy_and_ceal_read(detector, sample_data):
    from dataclasses import replace

    from detector_al.policy.ceal import CealConfig
    from detector_al.policy.decision import DecisionPolicy, views_needed
    from detector_al.policy.strategies import STRATEGIES
    from detector_al.scoring.file_stream import scored_files

    ceal = CealConfig()
    assert views_needed(STRATEGIES["entropy_sum"], ceal) == 1  # the default path: one view
    assert views_needed(STRATEGIES["entropy_sum"], replace(ceal, flip_test=True)) == 2
    assert all(views_needed(STRATEGIES[n], ceal) == 2 for n in ("mi_aod", "cald", "entropy_enms"))
    paths = sorted((sample_data / "images" / "pool").glob("*.jpg"))[:4]
    for name in ("mi_aod", "cald", "entropy_sum"):  # a flip-reading strategy gets its flip, the default none
        out = list(scored_files(detector, paths, DecisionPolicy(name, ceal=ceal), hash_files=False))
        assert all(f.decision.score is not None and np.isfinite(f.decision.score) for f in out)
    with_test = DecisionPolicy("entropy_sum", ceal=replace(ceal, flip_test=True))
    assert with_test.views == 2 and DecisionPolicy("entropy_sum").views == 1
