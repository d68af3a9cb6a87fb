"""Progress display for long runs: a bar with count, rate and ETA (rich), or log lines when not a terminal."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
log = logging.getLogger("detector_al")


def track(items: Iterable[T], total: int | None, description: str, unit: str = "img") -> Iterator[T]:
    """Yield ``items`` while showing progress: a rich bar on a terminal, else a log line every ~10 s."""
    if sys.stderr.isatty():
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task(description, total=total, rate="")
            start = time.perf_counter()
            for n, item in enumerate(items, 1):
                yield item
                rate = n / max(time.perf_counter() - start, 1e-9)
                bar.update(task, advance=1, rate=f"{rate:.1f} {unit}/s")
        return
    start = last = time.perf_counter()
    n = 0
    for n, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= 10:
            last = now
            of = f"/{total}" if total else ""
            log.info("%s: %d%s %s, %.1f %s/s", description, n, of, unit, n / (now - start), unit)
    elapsed = time.perf_counter() - start
    log.info("%s: %d %s in %.1f s (%.1f %s/s)", description, n, unit, elapsed, n / max(elapsed, 1e-9), unit)


@contextmanager
def epoch_progress(description: str, epochs: int) -> Iterator[Callable[[int, int], None]]:
    """A callback ``on_epoch(epoch, epochs)`` for a training, shown as a rich bar on a terminal, else one log line
    per epoch."""
    if not sys.stderr.isatty():
        yield lambda e, n: log.info("%s: epoch %d/%d", description, e, n)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"))
    with Progress(*columns, TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()) as bar:
        task = bar.add_task(description, total=epochs)
        yield lambda e, n: bar.update(task, completed=e, total=n)
