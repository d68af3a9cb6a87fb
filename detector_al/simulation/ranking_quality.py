"""How well a score ranks the images a model gets wrong: the training-free screen's statistics.

``auc``: P(a score of ``pos`` > one of ``neg``) + 0.5 P(equal), over all pairs (0.5: chance); its 95 %
percentile interval over bootstrap resamples of the images; Spearman's rank correlation.
"""

from __future__ import annotations

import numpy as np


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + 0.5 P(pos == neg), over all pairs (0.5: no better than chance)."""
    if not len(pos) or not len(neg):
        return float("nan")
    diff = np.asarray(pos, np.float64)[:, None] - np.asarray(neg, np.float64)[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def auc_interval(score: np.ndarray, wrong: np.ndarray, rng: np.random.Generator, n: int = 1000) -> tuple[float, float]:
    """95 % percentile interval of the AUC over bootstrap resamples of the images."""
    values = []
    for _ in range(n):
        i = rng.integers(0, len(score), len(score))
        values.append(auc(score[i][wrong[i]], score[i][~wrong[i]]))
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (average ranks for ties)."""

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):  # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r

    ra, rb = ranks(np.asarray(a, np.float64)), ranks(np.asarray(b, np.float64))
    return float(np.corrcoef(ra, rb)[0, 1])
