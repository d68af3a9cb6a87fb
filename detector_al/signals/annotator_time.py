"""The time annotators really spend on a project, from Label Studio's ``lead_time``: what it says per model version and
queue band, how long the rest of the queue will take, and the per-action seconds fitted to it.

One :class:`AnnotationTime` per annotation: its ``lead_time`` (the seconds Label Studio measured on the labeling
page), whether it was a skip, what the annotator started from (:class:`ShownPrediction`: the prediction's model
version, queue band and boxes) and the edit from that prediction to the result (an
:class:`~detector_al.policy.annotator_cost.Actions`, matched as the cost model matches).

What counts:

- an annotation without ``lead_time`` (imported ones) counts nowhere;
- a skip is time spent, not a label: it is in ``spent_h`` and in the projection's seconds per task, never in
  ``annotations``, the per-annotation statistics or the fit;
- every figure aggregates the project's annotators; the annotator of each row is stored, never shown.

Robust statistics. ``lead_time`` has outliers that are not work (a tab left open over lunch), all on the high side:

- ``median_s``: the plain median (robust by itself);
- an **upper outlier** is an annotation whose ``log(1 + t)`` has a modified z-score above 3.5 (Iglewicz and Hoaglin
  1993): ``z = 0.6745 (log(1 + t) - M) / max(MAD, 0.1)``, ``M`` the median and ``MAD`` the median absolute deviation
  of ``log(1 + t)`` over the project's timed annotations (labels and skips); with fewer than 3 none is one;
- ``mean_s``: the mean without the upper outliers;
- ``spent_h``: ``(sum of the other lead times + outliers * their mean) / 3600`` (an outlier counts as a typical
  annotation);
- the projection and the fit leave the upper outliers out.

Projection: ``hours = sum_b remaining_b * s_b / 3600`` over the queue's bands ``b`` (batch, uncertain,
auto-accepted), ``s_b`` the mean seconds per handled task (labels and skips, outliers out) of the band's latest
:data:`RECENT` annotations when it has at least :data:`MIN_RATE` of them, else of the project's latest
:data:`RECENT`: the current rate.

Fitted cost model (:func:`fit_cost_model`): non-negative least squares of ``lead_time`` on the action counts,
``t_i ~ images_i look_image + draw_i draw_box + adjust_i adjust_box + delete_i delete_box + relabel_i change_class +
verify_i verify_box``, over the labels with a known edit (outliers out), once there are :data:`MIN_FIT`; an action
done in fewer than :data:`MIN_SUPPORT` of them is not fitted (its seconds stay the literature's). The interval is
the 2.5 and 97.5 percentiles of :data:`RESAMPLES` refits on rows resampled with replacement (seeded).

Example:
    >>> recs = [AnnotationTime(i, i, t) for i, t in enumerate([10, 20, 30, 40, 50, 3600])]
    >>> s = summary(recs, upper_outliers(recs))
    >>> s["annotations"], s["median_s"], s["mean_s"], s["outliers"]
    (6, 35.0, 30.0, 1)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from detector_al.model.predictions import Detections
from detector_al.policy.annotator_cost import ACTION_SECONDS, Actions, CostModel
from detector_al.queue.build import AUTO_ACCEPT, QUERY, REST

Z_MAX, MAD_FLOOR = 3.5, 0.1
MIN_FIT, MIN_SUPPORT, RESAMPLES = 30, 5, 200
RECENT, MIN_RATE = 50, 5
BAND_NAMES = {QUERY: "batch", REST: "uncertain", AUTO_ACCEPT: "auto_accepted"}
"""The queue bands (:mod:`detector_al.queue.build`) as /status and the dashboard name them."""
NONE = "none"
"""The group of annotations that started from no prediction (or from one not known)."""
STATISTIC = (
    "median_s: the median; mean_s: the mean without upper outliers (modified z-score of log(1 + lead_time) above "
    "3.5, Iglewicz-Hoaglin); skips count as time spent, not as labels; annotations without lead_time do not count"
)


@dataclass(frozen=True)
class ShownPrediction:
    """What an annotator started from: a prediction's model version, queue band (:data:`BAND_NAMES`' keys) and boxes.

    ``boxes`` None: only their number is known (the edit then is not). :data:`NOTHING_SHOWN`: no prediction.
    """

    model_version: str | None
    band: str | None
    count: int | None
    boxes: Detections | None = None


NOTHING_SHOWN = ShownPrediction(None, None, 0, Detections.empty())


@dataclass(frozen=True)
class AnnotationTime:
    """One annotation: its seconds, whether it was a skip, what it started from and the edit (None: not known)."""

    annotation_id: int
    task_id: int
    lead_time: float | None
    skipped: bool = False
    annotator: int | None = None
    model_version: str | None = None
    band: str | None = None
    shown: int | None = None
    boxes: int = 0
    edit: Actions | None = None
    updated_at: str | None = None  # Label Studio's: a later version of the annotation replaces an earlier one

    @property
    def timed(self) -> bool:
        return self.lead_time is not None


@dataclass(frozen=True)
class CostFit:
    """Per-action seconds fitted to a project's annotations (:func:`fit_cost_model`)."""

    annotations: int
    seconds: dict[str, float]  # CostModel field -> fitted seconds, fitted actions only
    low: dict[str, float]
    high: dict[str, float]
    not_fitted: tuple[str, ...]

    def cost_model(self) -> CostModel:
        """The fitted seconds, the literature's for the actions not fitted."""
        return CostModel(**self.seconds)


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def upper_outliers(records: Sequence[AnnotationTime]) -> np.ndarray:
    """(N,) True where a timed record is an upper outlier (the module docstring's rule); False for untimed ones."""
    t = np.array([r.lead_time if r.timed else np.nan for r in records], np.float64)
    out = np.zeros(len(t), bool)
    timed = ~np.isnan(t)
    if timed.sum() < 3:
        return out
    x = np.log1p(t[timed])
    m = np.median(x)
    mad = max(float(np.median(np.abs(x - m))), MAD_FLOOR)
    out[timed] = 0.6745 * (x - m) / mad > Z_MAX
    return out


def summary(records: Sequence[AnnotationTime], outlier: np.ndarray) -> dict:
    """``{"annotations", "median_s", "mean_s", "outliers"}`` of the timed labels among ``records`` (skips left out).

    ``outlier`` is :func:`upper_outliers` of the same records (computed over the whole project)."""
    keep = np.array([r.timed and not r.skipped for r in records], bool)
    t = np.array([r.lead_time for r, k in zip(records, keep, strict=True) if k], np.float64)
    inlier = t[~np.asarray(outlier, bool)[keep]]
    return {
        "annotations": len(t),
        "median_s": _r(float(np.median(t))) if len(t) else None,
        "mean_s": _r(float(inlier.mean())) if len(inlier) else None,
        "outliers": int(len(t) - len(inlier)),
    }


def grouped(records: Sequence[AnnotationTime], outlier: np.ndarray, key: Callable[[AnnotationTime], str]) -> dict:
    """:func:`summary` per group ``key(record)`` of the timed labels, groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        if r.timed and not r.skipped:
            groups.setdefault(key(r), []).append(i)
    return {k: summary([records[i] for i in idx], outlier[idx]) for k, idx in groups.items()}


def spent_hours(records: Sequence[AnnotationTime], outlier: np.ndarray) -> float:
    """``(sum of the inliers' lead times + outliers * their mean) / 3600`` over timed labels and skips."""
    t = np.array([r.lead_time if r.timed else np.nan for r in records], np.float64)
    timed = ~np.isnan(t)
    inlier = t[timed & ~outlier]
    mean = inlier.mean() if len(inlier) else 0.0
    return float((inlier.sum() + (timed & outlier).sum() * mean) / 3600.0)


def per_box(records: Sequence[AnnotationTime], outlier: np.ndarray) -> dict:
    """Seconds per box drawn against per box kept, read off the simplest images (look time included, so upper
    bounds): ``drawn_s`` = median of ``lead_time / draw`` over labels whose edit only drew boxes, ``kept_s`` = median
    of ``lead_time / verify`` over labels that kept every box shown as it was, and how many images each rests on."""
    drawn, kept = [], []
    for r, out in zip(records, outlier, strict=True):
        if not r.timed or r.skipped or out or r.edit is None:
            continue
        e = r.edit
        if e.draw and not (e.adjust or e.delete or e.relabel or e.verify):
            drawn.append(r.lead_time / e.draw)
        elif e.verify and not (e.draw or e.adjust or e.delete or e.relabel):
            kept.append(r.lead_time / e.verify)
    return {
        "drawn_s": _r(float(np.median(drawn))) if drawn else None,
        "kept_s": _r(float(np.median(kept))) if kept else None,
        "drawn_images": len(drawn),
        "kept_images": len(kept),
    }


def seconds_per_task(records: Sequence[AnnotationTime], outlier: np.ndarray, band: str | None = None) -> float | None:
    """Mean seconds per handled task (labels and skips, outliers out) over the latest :data:`RECENT` timed records
    of ``band`` (None: of every band), by annotation id; None with fewer than :data:`MIN_RATE`."""
    rows = sorted(
        (r.annotation_id, r.lead_time)
        for r, out in zip(records, outlier, strict=True)
        if r.timed and not out and (band is None or r.band == band)
    )[-RECENT:]
    return float(np.mean([t for _, t in rows])) if len(rows) >= MIN_RATE else None


def projection(records: Sequence[AnnotationTime], outlier: np.ndarray, remaining: dict[str, int]) -> dict:
    """The hours to get through the rest of the queue at the current rate (the module docstring's formula).

    Args:
        remaining: tasks still to label per band (:data:`BAND_NAMES`' keys).
    """
    overall = seconds_per_task(records, outlier)
    rates = {b: overall if (s := seconds_per_task(records, outlier, b)) is None else s for b in remaining}
    tasks = int(sum(remaining.values()))
    hours = None if overall is None else sum(n * rates[b] for b, n in remaining.items()) / 3600.0
    return {
        "tasks": tasks,
        "hours": _r(hours),
        "tasks_by_band": {BAND_NAMES.get(b, b): int(n) for b, n in remaining.items()},
        "seconds_per_task": {BAND_NAMES.get(b, b): _r(s) for b, s in rates.items()},
        "rate": f"mean seconds per handled task of each band's latest {RECENT} (at least {MIN_RATE}, else all bands')",
    }


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``argmin_{x >= 0} ||a x - b||_2`` (:func:`nnls_gram` of ``a^T a`` and ``a^T b``).

    Example:
        >>> nnls(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([2.0, -1.0])).tolist()
        [2.0, 0.0]
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return nnls_gram(a.T @ a, a.T @ b)


def nnls_gram(g: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``argmin_{x >= 0} x^T g x - 2 c^T x`` (``g = a^T a``, ``c = a^T b``: least squares, from the normal equations)
    by Lawson and Hanson's active-set method (1974, chapter 23): free the variable of largest gradient ``c - g x``,
    solve on the free set, step back to the boundary while a free variable would turn negative."""
    n = len(c)
    x, free = np.zeros(n), np.zeros(n, bool)
    tol = 1e-10 * max(float(np.abs(g).max(initial=0.0)), 1.0)
    for _ in range(3 * n + 3):
        w = c - g @ x
        if free.all() or w[~free].max() <= tol:
            break
        free[int(np.argmax(np.where(free, -np.inf, w)))] = True
        for _ in range(3 * n + 3):
            s = np.zeros(n)
            s[free] = np.linalg.lstsq(g[np.ix_(free, free)], c[free], rcond=None)[0]
            if s[free].min() > 0:
                x = s
                break
            neg = free & (s <= 0)
            x = x + float((x[neg] / np.maximum(x[neg] - s[neg], 1e-300)).min(initial=1.0)) * (s - x)
            free &= x > tol
            x[~free] = 0.0
            if not free.any():
                break
    return x


def _design(records: Sequence[AnnotationTime]) -> tuple[np.ndarray, np.ndarray]:
    counts = operator.attrgetter(*(name for name, _ in ACTION_SECONDS))
    x = np.array([counts(r.edit) for r in records], np.float64).reshape(-1, len(ACTION_SECONDS))
    return x, np.array([r.lead_time for r in records], np.float64)


def fit_rows(records: Sequence[AnnotationTime], outlier: np.ndarray) -> list[AnnotationTime]:
    """The records the fit uses: timed labels with a known edit, upper outliers left out."""
    return [r for r, out in zip(records, outlier, strict=True) if r.timed and not r.skipped and r.edit and not out]


def fit_cost_model(
    rows: Sequence[AnnotationTime], min_rows: int = MIN_FIT, resamples: int = RESAMPLES, seed: int = 0
) -> CostFit | None:
    """Per-action seconds by non-negative least squares with a bootstrap interval (the module docstring); None with
    fewer than ``min_rows`` rows (:func:`fit_rows`)."""
    if len(rows) < min_rows:
        return None
    x, y = _design(rows)
    used = np.flatnonzero((x > 0).sum(axis=0) >= MIN_SUPPORT)
    names = [ACTION_SECONDS[j][1] for j in used]
    x = x[:, used]
    coef = nnls(x, y)
    rng = np.random.default_rng(seed)
    n = len(y)
    draws = rng.integers(0, n, (resamples, n)) + n * np.arange(resamples)[:, None]
    weights = np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)
    k = x.shape[1]
    grams = (weights @ (x[:, :, None] * x[:, None, :]).reshape(n, k * k)).reshape(-1, k, k)  # per resample
    boot = np.array([nnls_gram(g, c) for g, c in zip(grams, weights @ (x * y[:, None]), strict=True)])
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    return CostFit(
        annotations=len(rows),
        seconds={n: float(c) for n, c in zip(names, coef, strict=True)},
        low={n: float(v) for n, v in zip(names, low, strict=True)},
        high={n: float(v) for n, v in zip(names, high, strict=True)},
        not_fitted=tuple(s for _, s in ACTION_SECONDS if s not in names),
    )


def cost_model_status(fit: CostFit | None, usable: int) -> dict:
    """The fitted seconds (with their interval) beside the literature's defaults, or why there are none yet."""
    fitted_actions = {s for _, s in ACTION_SECONDS}
    literature = {s: v for s, v in CostModel().to_dict().items() if s in fitted_actions}
    return {
        "model": "lead_time = look_image + draw draw_box + adjust adjust_box + delete delete_box + relabel "
        f"change_class + verify verify_box; non-negative least squares, 95 % bootstrap interval ({RESAMPLES} resamples)",
        "annotations": usable,
        "min_annotations": MIN_FIT,
        "fitted": None
        if fit is None
        else {s: {"seconds": _r(v), "low": _r(fit.low[s]), "high": _r(fit.high[s])} for s, v in fit.seconds.items()},
        "not_fitted": None if fit is None else list(fit.not_fitted),
        "literature": literature,
    }


def export(fit: CostFit, project: int) -> dict:
    """The fitted cost model as a file's JSON: ``{"seconds": {...}, ...}``, which
    :meth:`~detector_al.policy.annotator_cost.CostModel.from_file` reads (``simulate --cost-model``, ``entropy_roi:FILE``);
    the actions not fitted are left out, so they keep the literature's seconds."""
    return {
        "seconds": {s: round(v, 3) for s, v in fit.seconds.items()},
        "interval_95": {s: [round(fit.low[s], 3), round(fit.high[s], 3)] for s in fit.seconds},
        "not_fitted": list(fit.not_fitted),
        "annotations": fit.annotations,
        "project": project,
        "fitted_by": "detector-al: non-negative least squares of Label Studio's lead_time on the action counts",
    }


def fit_table(fit: CostFit) -> str:
    """The fitted seconds beside the literature's, as a markdown table."""
    literature = CostModel()
    rows = [
        f"| {s} | {v:.1f} [{fit.low[s]:.1f}, {fit.high[s]:.1f}] | {getattr(literature, s):.1f} |"
        for s, v in fit.seconds.items()
    ]
    rows += [f"| {s} | not fitted (too rare) | {getattr(literature, s):.1f} |" for s in fit.not_fitted]
    head = f"| action | fitted s [95 %], {fit.annotations} annotations | literature s |\n|---|---|---|\n"
    return head + "\n".join(rows)


def project_time(records: Sequence[AnnotationTime], remaining: dict[str, int]) -> dict:
    """``/status`` -> ``annotator_time.projects[<id>]``: the module docstring's figures for one project.

    Args:
        records: the project's annotations (:class:`AnnotationTime`, any order).
        remaining: tasks still to label per queue band (:data:`BAND_NAMES`' keys).
    """
    outlier = upper_outliers(records)
    rows = fit_rows(records, outlier)
    return {
        **summary(records, outlier),
        "skipped": sum(r.timed and r.skipped for r in records),
        "without_lead_time": sum(not r.timed for r in records),
        "spent_h": _r(spent_hours(records, outlier), 3),
        "by_model_version": grouped(records, outlier, lambda r: r.model_version or NONE),
        "by_band": grouped(records, outlier, lambda r: BAND_NAMES.get(r.band, NONE)),
        "per_box": per_box(records, outlier),
        "projection": projection(records, outlier, remaining),
        "cost_model": cost_model_status(fit_cost_model(rows), len(rows)),
    }


def actions_from_row(values: Iterable[int | None]) -> Actions | None:
    """:class:`Actions` of one image from stored ``draw, adjust, delete, relabel, verify`` (None when any is)."""
    v = list(values)
    return None if any(x is None for x in v) else Actions(1, *(int(x) for x in v))


EDIT_FIELDS = tuple(f.name for f in fields(Actions) if f.name != "images")
"""The stored edit's columns, in :class:`Actions`' order (``images`` is 1 for every annotation)."""
