"""`detector-al ingest` of odd but readable files against a real Label Studio (issue #11).

TIFF (16-bit, plain, EXIF-rotated), HEIC, 16-bit PNG, upper-case suffixes and a non-ASCII name must each
become a task whose image Label Studio serves in a format browsers show, with pre-annotations in the
original's upright pixel frame; an unreadable file is reported and stops nothing. A file Label Studio
refuses fails alone: the rest of its upload request still becomes tasks.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from detector_al.io.files import file_sha256
from detector_al.label_studio.client import LabelStudioClient
from detector_al.label_studio.local_server import LocalLabelStudio
from detector_al.policy.settings import POLICY
from tests.integration.conftest import REPO

pytestmark = pytest.mark.slow
DATA = REPO / "tests" / "data"
WEB_FORMATS = {"PNG", "JPEG", "GIF", "BMP", "WEBP"}
NEED_COPY = {"scan16.tif", "plain.tif", "rotated.TIF", "photo.heic", "gray16.png"}
AS_IS = {"UPPER.JPG", "UPPER.PNG", "größe_ß.jpg"}
UNREADABLE = "broken.tif"


def make_odd_folder(folder: Path, sample_data: Path) -> dict[str, tuple[int, int]]:
    """The odd files, and each readable one's upright size (computed with PIL alone, not our decoder)."""
    import detector_al.io.images  # noqa: F401  (registers the HEIF opener)

    folder.mkdir(parents=True, exist_ok=True)
    pool = sorted((sample_data / "images" / "pool").glob("*.jpg"))
    gray = np.asarray(Image.open(pool[1]).convert("L"), np.uint16) * 257
    Image.fromarray(gray).save(folder / "scan16.tif")  # I;16
    Image.open(pool[2]).convert("RGB").save(folder / "plain.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 192x256, shown 256x192
    Image.open(pool[3]).convert("RGB").save(folder / "rotated.TIF", exif=exif)
    shutil.copy(DATA / "photo.heic", folder / "photo.heic")
    shutil.copy(sample_data / "bad_inputs" / "gray16.png", folder / "gray16.png")
    shutil.copy(pool[4], folder / "UPPER.JPG")
    Image.open(pool[0]).save(folder / "UPPER.PNG")
    shutil.copy(pool[5], folder / "größe_ß.jpg")
    (folder / UNREADABLE).write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    sizes = {}
    for name in NEED_COPY | AS_IS:
        with Image.open(folder / name) as img:
            img.load()
            sizes[name] = ImageOps.exif_transpose(img).size
    assert sizes["rotated.TIF"] == (256, 192)
    return sizes


def ingest_cmd(label_studio, folder, weights, store, title, *extra):
    return [
        sys.executable,
        "-m",
        "detector_al",
        "ingest",
        str(folder),
        "--model",
        str(weights),
        "--ls-url",
        label_studio.url,
        "--api-key",
        label_studio.token,
        "--project-title",
        title,
        "--label-config",
        str(REPO / "sample_data" / "label_config.xml"),
        "--store",
        str(store),
        "--score-threshold",
        "0.05",
        *map(str, extra),
    ]


def run(cmd, tmp: Path, timeout=600) -> str:
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp)}
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def failed_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("  failed: ")]


def tasks_of(ls_client, title):
    project = next(p for p in ls_client.projects.list(title=title) if p.title == title)
    return list(ls_client.tasks.list(project=project.id, fields="all"))


def served_image(label_studio, url: str) -> Image.Image:
    """The bytes Label Studio serves for a task's image, fetched with the client's auth, as an image."""
    http = LabelStudioClient(label_studio.url, label_studio.token).http
    r = http.get(label_studio.url + url, timeout=60)
    assert r.status_code == 200, (url, r.status_code)
    img = Image.open(io.BytesIO(r.content))
    img.load()
    return img


@pytest.mark.parametrize("shared", [False, True], ids=["uploaded", "shared-root"])
def test_odd_files_become_visible_tasks_in_the_original_frame(
    ls_client, label_studio, trained_weights, sample_data, tmp_path, shared
):
    if shared:  # under Label Studio's local-files root: the web ones are served, the others uploaded as copies
        folder = label_studio.files_root / "odd-src"
        extra = ("--ls-files-root", label_studio.files_root)
    else:
        folder = tmp_path / "odd-src"
        extra = ()
    sizes = make_odd_folder(folder, sample_data)
    by_hash = {file_sha256(folder / name): name for name in sizes}
    title = f"odd files {'shared' if shared else 'uploaded'}"
    tmp = tmp_path / "tmp"
    out = run(ingest_cmd(label_studio, folder, trained_weights, tmp_path / "s.sqlite3", title, *extra), tmp)

    fails = failed_lines(out)
    assert len(fails) == 1 and UNREADABLE in fails[0], out  # the unreadable file, and nothing else
    assert f"{len(sizes)} tasks created ({len(NEED_COPY)} uploaded as web copies)" in out, out
    assert list(tmp.iterdir()) == []  # the web copies are gone

    tasks = tasks_of(ls_client, title)
    assert sorted(by_hash[t.data["al_hash"]] for t in tasks) == sorted(sizes)  # one task per readable file
    boxes = 0
    for t in tasks:
        name, url = by_hash[t.data["al_hash"]], t.data["image"]
        if shared and name in AS_IS:
            assert url.startswith("/data/local-files/?d="), (name, url)
        else:
            assert url.startswith("/data/upload/"), (name, url)
        img = served_image(label_studio, url)
        assert img.format in WEB_FORMATS and img.mode in ("L", "RGB", "RGBA", "P"), (name, img.format, img.mode)
        assert img.size == sizes[name], (name, img.size, sizes[name])
        if name in NEED_COPY:
            assert img.mode == "RGB" and img.getexif().get(0x0112, 1) == 1, name
        (pred,) = t.predictions
        for region in pred.result:
            assert (region["original_width"], region["original_height"]) == sizes[name], name
            boxes += name in NEED_COPY
    assert boxes > 0  # the frame check above is not empty for the converted files

    out2 = run(ingest_cmd(label_studio, folder, trained_weights, tmp_path / "s.sqlite3", title, *extra), tmp)
    assert " 0 new" in out2 and "0 tasks created" in out2
    assert len(tasks_of(ls_client, title)) == len(sizes)


@pytest.fixture(scope="module")
def strict_label_studio(ls_template, tmp_path_factory):
    """A second Label Studio that takes at most 300 kB of files per request (``DATA_UPLOAD_MAX_MEMORY_SIZE``).

    Above that it refuses the request (Label Studio 1.23.2 answers 500, "You cannot access body after reading
    from request's data stream"), as a stock install does above 250 MB or 100 files in one request."""
    data = tmp_path_factory.mktemp("ls-strict")
    ls = LocalLabelStudio(data / "d", files_root=data / "files")
    ls.copy_from(ls_template)
    old = os.environ.get("DATA_UPLOAD_MAX_MEMORY_SIZE")
    os.environ["DATA_UPLOAD_MAX_MEMORY_SIZE"] = "300000"
    try:
        ls.start()
    finally:
        if old is None:
            del os.environ["DATA_UPLOAD_MAX_MEMORY_SIZE"]
        else:
            os.environ["DATA_UPLOAD_MAX_MEMORY_SIZE"] = old
    yield ls
    ls.stop()


def test_a_file_label_studio_refuses_fails_alone(strict_label_studio, detector, sample_data, tmp_path):
    from detector_al.label_studio.config import parse_label_config
    from detector_al.label_studio.task_sink import LabelStudioSink
    from detector_al.pipelines.ingest import IngestConfig, ingest
    from detector_al.state.store import Store

    folder = tmp_path / "src"
    folder.mkdir()
    pool = sorted((sample_data / "images" / "pool").glob("*.jpg"))
    for p in pool[:6]:
        shutil.copy(p, folder / p.name)
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), np.uint8)
    Image.fromarray(noise).save(folder / "big_noise.png")  # readable, about 480 kB: over the server's limit
    assert (folder / "big_noise.png").stat().st_size > 300_000
    (folder / "zz_broken.jpg").write_bytes(b"not an image at all")

    client = LabelStudioClient(strict_label_studio.url, strict_label_studio.token)
    config = (sample_data / "label_config.xml").read_text()
    project = client.ls.projects.create(title="refusal", label_config=config).id
    target = parse_label_config(config, detector.names)
    store = Store(tmp_path / "s.sqlite3")

    def run_once():
        sink = LabelStudioSink(client, project, None, folder)
        return ingest(
            folder, detector, store, target, IngestConfig(policy=replace(POLICY, budget=2)), sink=sink, project=project
        )

    report = run_once()
    failed = dict(report.failed)
    assert set(failed) == {str(folder / "big_noise.png"), str(folder / "zz_broken.jpg")}, report.summary()
    assert "refused by Label Studio" in failed[str(folder / "big_noise.png")]
    assert "not an image" in failed[str(folder / "zz_broken.jpg")]
    assert report.not_uploaded == 1 and report.created_tasks == 6
    tasks = list(client.ls.tasks.list(project=project, fields="all"))
    assert sorted(t.data["al_hash"] for t in tasks) == sorted(file_sha256(folder / p.name) for p in pool[:6])
    assert "big_noise.png" in report.summary()

    again = run_once()  # a refused file is not recorded as done: the next run tries it again
    assert again.new == 1 and again.created_tasks == 0 and again.not_uploaded == 1
    assert len(list(client.ls.tasks.list(project=project))) == 6
