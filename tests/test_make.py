"""The Makefile's checks fail when they find something: ``make lint`` on a file ruff would reformat."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUFF = REPO / ".venv" / "bin" / "ruff"

pytestmark = pytest.mark.skipif(shutil.which("make") is None or not RUFF.exists(), reason="needs make and .venv")


def lint(path: Path) -> subprocess.CompletedProcess:
    # -o: the environment's stamp counts as made (no reinstall, whatever the timestamps say)
    cmd = ["make", "-s", "-o", ".venv/.installed", "lint", f"LINT_PATHS={path}"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("source", "passes"),
    [
        ("values = [1, 2]\n", True),
        ("values = [1,\n    2]\n", False),  # lints clean, formats differently: only the format check sees it
    ],
)
def test_make_lint_fails_on_bad_formatting(tmp_path, source, passes):
    f = tmp_path / "module.py"
    f.write_text(source)
    res = lint(f)
    assert (res.returncode == 0) is passes, res.stdout + res.stderr
    if not passes:
        assert "would reformat" in (res.stdout + res.stderr).lower() or "would be reformatted" in (
            res.stdout + res.stderr
        )
