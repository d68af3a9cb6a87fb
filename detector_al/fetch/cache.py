"""The folder where fetched task images are kept: cache file names, one lock per image, and the clean-up of
downloads a killed process left unfinished.

A complete download is ``<digest>__<safe name>`` (the digest names the source, the name keeps a readable
suffix); an unfinished one is a ``.part-*`` file, renamed into place only when complete.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

from detector_al.label_studio.errors import ImageFetchError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".svg"}
PART_PREFIX = ".part-"


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "detector-al-images"


class KeyLocks:
    """One lock per cache key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, list] = {}

    @contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[bool]:
        with self._lock:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        got = entry[0].acquire(timeout=max(timeout, 0.0))
        try:
            yield got
        finally:
            if got:
                entry[0].release()
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    self._locks.pop(key, None)


KEY_LOCKS = KeyLocks()
_CLEANED: set[Path] = set()


def safe_name(name: str) -> str:
    """The last path part of ``name``, reduced to ``[A-Za-z0-9._-]`` and at most 96 characters (suffix kept)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", unquote(name).rsplit("/", 1)[-1]).strip("._") or "image"
    if len(name) > 96:
        stem, suffix = os.path.splitext(name)
        name = stem[: 96 - len(suffix[:12])] + suffix[:12]
    return name


def prepare_cache(cache_dir: Path) -> Path:
    """The cache folder, created; once per process, unfinished downloads older than an hour are removed."""
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageFetchError(f"cannot create the image cache folder {cache_dir}: {exc}") from None
    if cache_dir not in _CLEANED:  # leftovers of a killed process: never complete, never used
        _CLEANED.add(cache_dir)
        cutoff = time.time() - 3600
        for p in cache_dir.glob(f"{PART_PREFIX}*"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass
    return cache_dir


def cached(cache_dir: Path, digest: str, name: str) -> Path | None:
    """The complete download of ``digest`` named ``name`` (or with a suffix sniffed from its content), else None."""
    p = cache_dir / f"{digest}__{name}"
    if p.is_file():
        return p
    if Path(name).suffix.lower() not in IMAGE_SUFFIXES:  # the suffix was sniffed from the content
        return next((q for q in cache_dir.glob(f"{digest}__{name}.*") if q.is_file()), None)
    return None
