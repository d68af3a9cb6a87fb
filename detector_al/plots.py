"""Plots people would rather see than read: score histograms, learning curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def score_histogram(
    scores: np.ndarray, path: Path, thresholds: dict[str, float] | None = None, title: str = "Image uncertainty"
) -> Path:
    """Histogram of image scores (log-spaced bins when they span decades) with thresholds as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = np.asarray(scores, np.float64)
    fig, ax = plt.subplots(figsize=(7, 4))
    positive = scores[scores > 0]
    if positive.size and positive.max() / max(positive.min(), 1e-300) > 100:
        bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 40)
        ax.set_xscale("log")
        ax.hist(positive, bins=bins, color="#4c72b0")
    else:
        ax.hist(scores, bins=40, color="#4c72b0")
    colors = ["#d62728", "#2ca02c", "#ff7f0e", "#9467bd"]
    for (name, value), c in zip((thresholds or {}).items(), colors, strict=False):
        if value is not None and value > 0:
            ax.axvline(value, color=c, linestyle="--", label=f"{name} = {value:.3g}")
    if thresholds:
        ax.legend()
    ax.set_xlabel("score (higher = more uncertain)")
    ax.set_ylabel("images")
    ax.set_title(f"{title} (n = {scores.size})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
