"""Model versions on disk: every trained model is kept with its metrics; one of them is current.

Layout::

    MODEL_DIR/
      versions/<version>/best.pt        # the weights
      versions/<version>/meta.json      # metrics, parent version, created_at, source
      current.json                      # {"version": ...}, replaced atomically on promotion

A version name is ``v<n>-<sha256 of the weights, 8 hex>``: increasing, and tied to the bytes it serves. The
registry is the one namer of versions: the backend and ``ingest`` both register the weights they use (in the same
``MODEL_DIR`` by default, :data:`DEFAULT_MODEL_DIR`), and a backend that meets a project whose version names its
own weights under another folder's name answers that project under that name (:func:`names_same_weights`) instead
of renaming the project.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from detector_al.io.files import atomic_write, file_sha256

DEFAULT_MODEL_DIR = Path("models") / "backend"
"""Where the backend (``MODEL_DIR``) and ``ingest`` (``--model-dir``) keep versions unless told otherwise."""


def digest_of(version: str) -> str | None:
    """The weights' digest a version name carries: ``v3-5518076f`` -> ``5518076f``; an older bare hash
    (``5518076f4d43``, what ``ingest`` named weights before it used the registry) -> its first 8 hex; else None."""
    tail = version.rsplit("-", 1)[-1].lower()
    if len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail):
        return tail[:8] if "-" not in version else (tail if len(tail) == 8 else None)
    return None


def names_same_weights(name: str, version: str) -> bool:
    """Whether ``name`` (a project's version, perhaps from another registry) names ``version``'s weights: the same
    digest (:func:`digest_of`). Never for a name without one (Label Studio's default version, the backend's title)."""
    digest = digest_of(name)
    return bool(name) and digest is not None and digest == digest_of(version)


class ModelRegistry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "versions").mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _numbering(self) -> Iterator[None]:
        """Hold the registry's file lock (``versions/.lock``, ``flock``): the backend, retraining and ``ingest`` runs
        in other processes share ``MODEL_DIR``, so a version's number is taken by one of them at a time."""
        with open(self.root / "versions" / ".lock", "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def versions(self) -> list[str]:
        """All complete versions, oldest first."""
        done = [
            p.parent.name for p in (self.root / "versions").glob("*/meta.json") if not p.parent.name.startswith(".")
        ]
        return sorted(done, key=lambda v: int(v.split("-")[0][1:]) if v[1:].split("-")[0].isdigit() else -1)

    def path(self, version: str) -> Path:
        return self.root / "versions" / version / "best.pt"

    def meta(self, version: str) -> dict:
        return json.loads((self.root / "versions" / version / "meta.json").read_text())

    def update_meta(self, version: str, **fields) -> None:
        """Add or replace ``fields`` of ``version``'s ``meta.json`` (atomically, under the registry's lock)."""
        with self._numbering():
            meta = self.meta(version) | fields
            with atomic_write(self.root / "versions" / version / "meta.json") as f:
                json.dump(meta, f, indent=2)

    def current(self) -> str | None:
        f = self.root / "current.json"
        if not f.exists():
            return None
        version = json.loads(f.read_text()).get("version")
        return version if version in self.versions() else None

    def add(self, weights: str | Path, **meta) -> str:
        """Copy ``weights`` in as a new version (not yet current) and return its name.

        The weights land under a temporary name and the folder appears only once complete.
        """
        weights = Path(weights)
        digest = file_sha256(weights)[:8]
        with self._numbering():
            for v in self.versions():
                if v.endswith(digest):
                    return v
            n = 1 + max(
                (int(v.split("-")[0][1:]) for v in self.versions() if v.split("-")[0][1:].isdigit()), default=-1
            )
            version = f"v{n}-{digest}"
            tmp = self.root / "versions" / f".{version}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            shutil.copyfile(weights, tmp / "best.pt")
            with atomic_write(tmp / "meta.json") as f:
                json.dump({"version": version, "created_at": time.time(), "source": str(weights), **meta}, f, indent=2)
            os.replace(tmp, self.root / "versions" / version)
        return version

    def version_of(self, weights: str | Path) -> str | None:
        """The registered version holding these exact weights, if any."""
        digest = file_sha256(weights)[:8]
        return next((v for v in self.versions() if v.endswith(digest)), None)

    def registered(self, name: str | None) -> str | None:
        """This registry's version holding the weights ``name`` names: ``name`` itself, or the same weights under our
        name (another registry's name, :func:`names_same_weights`); None for weights this registry never held."""
        if not name:
            return None
        versions = self.versions()
        if name in versions:
            return name
        return next((v for v in versions if names_same_weights(name, v)), None)

    def promote(self, version: str) -> None:
        if version not in self.versions():
            raise KeyError(f"unknown model version {version!r}")
        with atomic_write(self.root / "current.json") as f:
            json.dump({"version": version, "promoted_at": time.time()}, f)

    def resolve(self, weights: str | None) -> tuple[str, Path]:
        """The version to serve at start-up.

        ``weights`` never seen before are registered and promoted; weights already registered (the same
        ``MODEL_PATH`` after a restart) leave the current version, possibly a retrained one, in place.

        Raises:
            FileNotFoundError: nothing to serve (no weights given and no current version).
        """
        if weights:
            p = Path(weights)
            if not p.is_file():
                raise FileNotFoundError(f"model weights not found: {p}")
            known = any(v.endswith(file_sha256(p)[:8]) for v in self.versions())
            version = self.add(p, note="initial weights")
            if self.current() is None or not known:  # new weights win; known ones do not undo a retrained model
                self.promote(version)
        cur = self.current()
        if cur is None:
            raise FileNotFoundError(
                f"no model in {self.root}: set MODEL_PATH (or pass --model) to the weights to serve"
            )
        return cur, self.path(cur)
