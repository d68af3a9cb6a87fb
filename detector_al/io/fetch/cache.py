"""The folder where fetched task images are kept: cache file names, one lock per image, and the clean-up of
downloads a killed process left unfinished.

A complete download is ``<digest>__<safe name>`` (the digest names the source, the name keeps a readable
suffix); an unfinished one is a ``.part-*`` file, renamed into place only when complete.

The folder is bounded (:func:`note_download`): past its size cap, the least recently used images go first (a
cache hit renews an image's modification time), down to 90 % of the cap. An image that a request or a job still
needs is **pinned** (:class:`Pins`): it is not evicted while held, so the folder may run over its cap by what is
pinned (a batch of a job, one /predict request).
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
_PINNED: dict[str, int] = {}  # cache file path -> how many holders need it (under _USAGE_LOCK)


class Pins:
    """Cache files that a request or a job still needs: :func:`note_download` never evicts a pinned file.

    Pin a file with :meth:`hold` (``fetch_image(..., pins=...)`` does it before returning the path); leaving the
    ``with`` block (or :meth:`release`) unpins. Thread-safe; one file may be held by several holders at once.

    Example:
        >>> with Pins() as pins:  # doctest: +SKIP
        ...     paths = [fetch_image(u, pins=pins) for u in urls]
        ...     predict(paths)  # none of them is evicted meanwhile, whatever else is downloaded
    """

    def __init__(self) -> None:
        self._held: list[str] = []
        self._lock = threading.Lock()

    def hold(self, path: Path) -> bool:
        """Pin ``path``; True when the file is there (pinned from now on), False when it was evicted before."""
        key = str(path)
        with _USAGE_LOCK:
            _PINNED[key] = _PINNED.get(key, 0) + 1
            there = os.path.isfile(key)
        with self._lock:
            self._held.append(key)
        return there

    def release(self) -> None:
        """Unpin every file this holder pinned."""
        with self._lock:
            held, self._held = self._held, []
        with _USAGE_LOCK:
            for key in held:
                n = _PINNED.get(key, 0) - 1
                if n > 0:
                    _PINNED[key] = n
                else:
                    _PINNED.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def __enter__(self) -> Pins:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def pinned() -> int:
    """How many distinct files are pinned now (all holders of this process)."""
    with _USAGE_LOCK:
        return len(_PINNED)


def _complete_files(cache_dir: Path) -> list[os.DirEntry]:
    with os.scandir(cache_dir) as it:
        return [e for e in it if "__" in e.name and not e.name.startswith(PART_PREFIX) and e.is_file()]


def note_download(cache_dir: Path, path: Path, max_bytes: int) -> int:
    """Count a new download into its folder's size and, past ``max_bytes``, evict the least recently used images
    (oldest modification time first; never ``path``, never a pinned file: :class:`Pins`) until the folder holds at
    most 90 % of ``max_bytes`` or only pinned files are left. Returns how many files were removed. The folder is
    scanned once per process, then only when over the cap."""
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
            if e.path == str(path) or e.path in _PINNED:
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
