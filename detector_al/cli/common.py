"""What the commands of :mod:`detector_al.cli.app` share: image arguments to files, failing with a message, loading
a model."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from detector_al.images import list_images


def expand_sources(paths: list[Path]) -> list[Path]:
    """Files as given, and the image files inside folders (recursively), in a stable order.

    A named file is kept whatever its suffix (it gets an error record if it is no image); a folder
    contributes only files with image suffixes.
    """
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(list_images(p))
        elif p.exists():
            out.append(p)
        else:
            raise typer.BadParameter(f"no such file or folder: {p}")
    return out


def fail(message: str) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with status 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def load_detector(model: str, **kwargs):
    """:meth:`Detector.load <detector_al.detector.Detector.load>`, failing with a message for a missing or
    unsupported model."""
    from detector_al.detector import Detector, UnsupportedModelError

    try:
        return Detector.load(model, **kwargs)
    except (FileNotFoundError, UnsupportedModelError) as exc:
        fail(str(exc))
