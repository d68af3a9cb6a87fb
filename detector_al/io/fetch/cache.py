"""The folder where fetched task images are kept: cache file names, one lock per image, and the clean-up of
downloads a killed process left unfinished.

A complete download is ``<digest>__<safe name>`` (the digest names the source, the name keeps a readable
suffix); an unfinished one is a ``.part-*`` file, renamed into place only when complete.

The folder is bounded (:func:`note_download`): past its size cap, the least recently used images go first (a
cache hit renews an image's modification time), down to 90 % of the cap.
"""

from __future__ import annotations

import contextlib
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
_USAGE: dict[Path, int] = {}  # bytes of complete images per cache folder, as this process counts them
_USAGE_LOCK = threading.Lock()


def _complete_files(cache_dir: Path) -> list[os.DirEntry]:
    with os.scandir(cache_dir) as it:
        return [e for e in it if "__" in e.name and not e.name.startswith(PART_PREFIX) and e.is_file()]


def note_download(cache_dir: Path, path: Path, max_bytes: int) -> int:
    """Count a new download into its folder's size and, past ``max_bytes``, evict the least recently used images
    (oldest modification time first; never ``path``) until the folder holds at most 90 % of ``max_bytes``.
    Returns how many files were removed. The folder is scanned once per process, then only when over the cap."""
    cache_dir = Path(cache_dir)
    with _USAGE_LOCK:
        if cache_dir not in _USAGE:
            _USAGE[cache_dir] = sum(e.stat().st_size for e in _complete_files(cache_dir))
        else:
            _USAGE[cache_dir] += path.stat().st_size if path.exists() else 0
        if _USAGE[cache_dir] <= max_bytes:
            return 0
        entries = sorted(_complete_files(cache_dir), key=lambda e: e.stat().st_mtime)
        total = sum(e.stat().st_size for e in entries)
        removed = 0
        for e in entries:
            if total <= 0.9 * max_bytes:
                break
            if e.path == str(path):
                continue
            try:
                size = e.stat().st_size
                os.unlink(e.path)
            except OSError:
                continue
            total -= size
            removed += 1
        _USAGE[cache_dir] = total
        return removed


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
    if not p.is_file():
        p = None
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:  # the suffix was sniffed from the content
            p = next((q for q in cache_dir.glob(f"{digest}__{name}.*") if q.is_file()), None)
    if p is not None:
        with contextlib.suppress(OSError):
            os.utime(p)  # recently used: evicted last
    return p
