"""What a simulation's ``results.json`` says: curves with intervals, labels saved (paired), effort, a plot.

Intervals are 95 % Student-t intervals over seeds: ``mean +- t_{0.975, n-1} * sd / sqrt(n)`` (``sd`` with
``n - 1``); with one seed there is no interval (``nan``).

**Labels to reach** a target: on one seed's curve (labeled images -> mAP50), the first budget at which the
curve reaches the target, linearly interpolated between the two budgets around it; ``inf`` when it never does.
The target of a seed is **random's mAP50 at the full budget on the same seed**, so every comparison is
paired. The **saving** of a variant on a seed is ``1 - labels_to_reach / full_budget``; a variant that
never reaches the target has saving ``<= 0`` and is counted as 0 (censored: the mean saving is then an upper
bound, and the report says how many seeds were censored).

**Effort** of a variant up to a round: the oracle boxes of every labeled image (``drawn``: labeling from
scratch) and the corrections its pre-annotations needed (``corrections``: the initial set counts as drawn).
**Effort to reach** the target is labels to reach with the effort spent so far in place of the labeled images
on the x axis (a batch of crowded images costs more than a batch of sparse ones).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np

BASELINE = "random"
# t_{0.975, df} for df = 1..10 (above 10 the interval uses 2.228 - a slight over-coverage, never under)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t_interval(values) -> tuple[float, float, float]:
    """(mean, low, high) of the 95 % Student-t interval over ``values`` (low = high = nan for one value)."""
    x = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    half = float(T975[min(len(x) - 1, len(T975)) - 1] * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def on_split(results: dict, split: str) -> dict:
    """``results`` with every mAP read from ``split``: ``"test"`` as they are, ``"val"`` with each row's val mAP in its
    ``map50`` / ``map50_95`` (to choose on val; every table then shows val's figures under the test names)."""
    if split == "test":
        return results
    return {**results, "runs": [{**r, "map50": r["val_map50"], "map50_95": r["val_map50_95"]} for r in results["runs"]]}


def curves(results: dict, metric: str = "map50", x: str = "labeled") -> dict[str, dict[int, dict[int, float]]]:
    """variant -> seed -> spent -> ``metric``, variants in the order they ran; ``spent`` is ``x`` of the round:
    labeled images (``"labeled"``), or the effort so far, summed over the rounds up to it (``"drawn"``,
    ``"corrections"``)."""
    order: dict[str, int] = {}
    for r in results["runs"]:
        order.setdefault(r["variant"], len(order))
    out: dict[str, dict[int, dict[int, float]]] = {}
    spent: dict[tuple[str, int], int] = {}
    for r in sorted(results["runs"], key=lambda r: (order[r["variant"]], r["seed"], r["round"])):
        key = (r["variant"], r["seed"])
        spent[key] = r[x] if x == "labeled" else spent.get(key, 0) + r[x]
        out.setdefault(r["variant"], {}).setdefault(r["seed"], {})[spent[key]] = r[metric]
    return out


def summarise(results: dict, metric: str = "map50") -> dict[str, dict[int, tuple[float, float, float]]]:
    """variant -> labeled images -> (mean, low, high) of ``metric`` over seeds."""
    table = {}
    for variant, by_seed in curves(results, metric).items():
        budgets = sorted({n for c in by_seed.values() for n in c})
        table[variant] = {n: t_interval([c[n] for c in by_seed.values() if n in c]) for n in budgets}
    return table


def labels_to_reach(curve: dict[int, float], target: float) -> float:
    """Labeled images at which a piecewise-linear curve first reaches ``target`` (``inf`` if never)."""
    pts = sorted(curve.items())
    if pts and pts[0][1] >= target:
        return float(pts[0][0])
    for (n0, m0), (n1, m1) in itertools.pairwise(pts):
        if m1 >= target:
            return n0 + (n1 - n0) * (target - m0) / (m1 - m0)
    return math.inf


def savings(results: dict, metric: str = "map50", baseline: str = BASELINE, x: str = "labeled") -> dict[str, dict]:
    """Per variant: ``x`` spent to reach the baseline's full-budget ``metric`` (paired by seed), and the saving.

    ``x``: labeled images, or the effort (``"corrections"``, ``"drawn"``: see :func:`curves`). Returns variant ->
    ``{"labels": (mean, low, high), "saving": (mean, low, high), "delta_labels": (mean, low, high), "censored":
    k, "seeds": n, "per_seed": {seed: spent}}``: ``labels`` averaged over the seeds that reach the target;
    ``delta_labels`` the paired difference ``spent(variant) - spent(baseline)`` on each seed (the baseline's own
    curve may reach its last value early, where it is not monotone), a curve that never reaches the target
    counted as one round past the baseline's full budget (so the difference is a bound); ``saving`` =
    ``1 - spent / baseline's full-budget spent`` (0 where never reached).
    """
    c, last = curves(results, metric, x), {}
    for r in results["runs"]:  # the last round each (variant, seed) finished
        last[r["variant"], r["seed"]] = max(last.get((r["variant"], r["seed"]), 0), r["round"])
    if baseline not in c:
        return {}
    out = {}
    for variant, by_seed in c.items():
        per_seed, saved, delta = {}, [], []
        for seed, curve in by_seed.items():
            base = c[baseline].get(seed)
            if not base or last[baseline, seed] != last[variant, seed]:
                continue  # unpaired, or not finished
            full = max(base)
            per_seed[seed] = need = labels_to_reach(curve, base[full])
            saved.append(max(0.0, 1.0 - need / full) if math.isfinite(need) else 0.0)
            cap = 2 * full - sorted(base)[-2]  # one round past the full budget
            delta.append(min(need, cap) - min(labels_to_reach(base, base[full]), cap))
        finite = [v for v in per_seed.values() if math.isfinite(v)]
        out[variant] = {
            "labels": t_interval(finite),
            "delta_labels": t_interval(delta),
            "saving": t_interval(saved),
            "censored": len(per_seed) - len(finite),
            "seeds": len(per_seed),
            "per_seed": per_seed,
        }
    return out


def paired_difference(results: dict, a: str, b: str, metric: str = "map50") -> dict[int, tuple[float, float, float]]:
    """labeled images -> (mean, low, high) of ``metric(a) - metric(b)`` over the seeds both ran."""
    c = curves(results, metric)
    if a not in c or b not in c:
        return {}
    diffs: dict[int, list[float]] = {}
    for seed, curve in c[a].items():
        for n, v in curve.items():
            if n in c[b].get(seed, {}):
                diffs.setdefault(n, []).append(v - c[b][seed][n])
    return {n: t_interval(d) for n, d in sorted(diffs.items())}


EFFORT_KEYS = ("drawn", "corrections", "pseudo_boxes", "pseudo_right", "pseudo_truth", "pseudo_unseen")


def effort(results: dict) -> dict[str, dict[str, tuple[float, float, float]]]:
    """variant -> totals over the run, (mean, low, high) over seeds: ``drawn``, ``corrections``, ``pseudo_boxes``,
    ``pseudo_precision`` (pseudo boxes matching an oracle box of their class) and ``pseudo_unseen`` (the share of
    oracle boxes in pseudo-labeled images that are neither pseudo-labeled nor masked: taught as background)."""
    per: dict[str, dict[int, dict[str, float]]] = {}
    for r in results["runs"]:
        acc = per.setdefault(r["variant"], {}).setdefault(r["seed"], dict.fromkeys(EFFORT_KEYS, 0))
        for k in EFFORT_KEYS:
            acc[k] += r.get(k, 0)
    out = {}
    for variant, seeds in per.items():
        out[variant] = {
            "drawn": t_interval([s["drawn"] for s in seeds.values()]),
            "corrections": t_interval([s["corrections"] for s in seeds.values()]),
            "pseudo_precision": t_interval(
                [s["pseudo_right"] / s["pseudo_boxes"] for s in seeds.values() if s["pseudo_boxes"]]
            ),
            "pseudo_boxes": t_interval([s["pseudo_boxes"] for s in seeds.values()]),
            "pseudo_unseen": t_interval(
                [s["pseudo_unseen"] / s["pseudo_truth"] for s in seeds.values() if s["pseudo_truth"]]
            ),
            "box_thresholds": _box_thresholds(results, variant),
        }
    return out


def _box_thresholds(results: dict, variant: str) -> str:
    """The calibrated box confidences of a ``+boxes`` variant's rounds: ``"mean (min-max), k/n rounds"`` where
    ``k`` rounds found a safe threshold; ``"-"`` for rows without calibration (other variants, older runs)."""
    if "boxes" not in variant.split("+")[1:]:
        return "-"
    rows = [r for r in results["runs"] if r["variant"] == variant and r["round"] > 0 and "pseudo_threshold" in r]
    found = [r["pseudo_threshold"] for r in rows if r["pseudo_threshold"] is not None]
    if not rows:
        return "-"
    if not found:
        return f"none, 0/{len(rows)} rounds"
    return f"{np.mean(found):.2f} ({min(found):.2f}-{max(found):.2f}), {len(found)}/{len(rows)} rounds"


def _fmt(t: tuple[float, float, float], digits: int = 3) -> str:
    mean, lo, hi = t
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f}" + (f" [{lo:.{digits}f}, {hi:.{digits}f}]" if math.isfinite(lo) else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def report(results: dict, baselines: tuple[str, ...] = (BASELINE, "entropy")) -> str:
    """Markdown tables: mAP per budget; paired differences against the baselines; labels saved and effort."""
    lines = []
    names = {"map50": "test mAP50", "map50_95": "test mAP50-95", "val_map50": "val mAP50"}
    for metric, title in names.items():
        table = summarise(results, metric)
        budgets = sorted({n for t in table.values() for n in t})
        lines += [f"**{title}** by labeled images, mean [95 % interval] over seeds", ""]
        rows = [[f"`{v}`"] + [_fmt(t[n]) if n in t else "-" for n in budgets] for v, t in table.items()]
        lines += [*_table(["variant"] + [str(n) for n in budgets], rows), ""]
    for base in baselines:
        diffs = {v: paired_difference(results, v, base) for v in curves(results) if v != base}
        budgets = sorted({n for d in diffs.values() for n in d})[1:]
        if not budgets:
            continue
        lines += [f"**test mAP50 minus `{base}`'s on the same seed**, mean [95 % interval]", ""]
        rows = [[f"`{v}`"] + [_fmt(d[n]) if n in d else "-" for n in budgets] for v, d in diffs.items() if d]
        lines += [*_table(["variant"] + [str(n) for n in budgets], rows), ""]
    save, work = savings(results), effort(results)
    lines += ["**Labels to reach `random`'s full-budget test mAP50** (paired by seed, interpolated; saving = "
              "1 - labels / full budget, 0 where never reached) **and effort** (totals over the run)", ""]  # fmt: skip
    rows = []
    for v, w in work.items():
        sv = save.get(v, {})
        never = f"{sv['censored']}/{sv['seeds']}" if sv else "-"
        nan = (math.nan,) * 3
        rows.append(
            [
                f"`{v}`",
                _fmt(sv.get("labels", nan), 1),
                _fmt(sv.get("delta_labels", nan), 1),
                _fmt(sv.get("saving", nan), 2),
                never,
                _fmt(w["drawn"], 0),
                _fmt(w["corrections"], 0),
                _fmt(w["pseudo_precision"]),
                _fmt(w["pseudo_unseen"]),
                w["box_thresholds"],
            ]
        )
    header = ["variant", "labels to reach", "minus random's (paired)", "saving", "never", "boxes drawn", "corrections"]
    lines += _table([*header, "pseudo-label box precision", "true boxes left unmasked", "box conf. (val)"], rows)
    return "\n".join([*lines, "", *_effort_to_reach(results)])


def _effort_to_reach(results: dict) -> list[str]:
    """The table of the effort (corrections, boxes drawn) spent to reach random's full-budget test mAP50."""
    units = {"corrections": "corrections (pre-annotated)", "drawn": "boxes drawn (from scratch)"}
    if not all(x in r for r in results["runs"] for x in units):
        return []  # runs from before effort was recorded
    spent = {x: savings(results, x=x) for x in units}
    if not spent["corrections"]:
        return []
    lines = ["**Effort to reach `random`'s full-budget test mAP50** (paired by seed, interpolated; saving = 1 - "
             "effort / random's full-budget effort, 0 where never reached)", ""]  # fmt: skip
    header, rows = ["variant"], []
    for unit in units.values():
        header += [f"{unit} to reach", "minus random's (paired)", "saving"]
    for v in spent["corrections"]:
        row = [f"`{v}`"]
        for x in units:
            sv = spent[x][v]
            row += [_fmt(sv["labels"], 0), _fmt(sv["delta_labels"], 0), _fmt(sv["saving"], 2)]
        rows.append([*row, f"{spent['corrections'][v]['censored']}/{spent['corrections'][v]['seeds']}"])
    return lines + _table([*header, "never"], rows)


def plot_learning_curves(
    results: dict, path: Path, split: str = "test", baseline: str | None = BASELINE, title: str = "Active learning"
) -> Path:
    """mAP50 and mAP50-95 of ``split`` against labeled images (mean and 95 % interval band per variant), the
    paired difference of mAP50 to ``baseline`` on the same seed (when it ran), and mAP50 against the corrections
    spent so far (when the runs recorded them: the mean over seeds of both, per round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix = "" if split == "test" else f"{split}_"
    panels = [(f"{prefix}map50", None), (f"{prefix}map50_95", None)]
    if baseline and baseline in curves(results):
        panels.append((f"{prefix}map50", baseline))
    if all("corrections" in r for r in results["runs"]):
        panels.append((f"{prefix}map50", "corrections"))
    colors = {v: f"C{i % 10}" for i, v in enumerate(curves(results))}  # one colour per variant in every panel
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5))
    for ax, (metric, base) in zip(axes, panels, strict=True):
        if base == "corrections":
            _plot_against_effort(ax, results, metric, colors)
            ax.set_ylabel(f"{split} mAP50")
            continue
        table = summarise(results, metric) if base is None else {
            v: paired_difference(results, v, base, metric) for v in curves(results) if v != base
        }  # fmt: skip
        for variant, curve in table.items():
            n = np.array(list(curve))
            mean, lo, hi = (np.array([v[k] for v in curve.values()]) for k in range(3))
            style = "--" if "+" in variant else "-"
            ax.plot(n, mean, style, marker="o", label=variant, color=colors[variant])
            ax.fill_between(n, lo, hi, alpha=0.12, color=colors[variant])
        label = f"{split} " + metric.removeprefix(prefix).replace("map", "mAP").replace("_", "-")
        ax.set_ylabel(label if base is None else f"{label} minus {base}'s (same seed)")
        if base is not None:
            ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xlabel("labeled images")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    seeds = sorted({r["seed"] for r in results["runs"]})
    fig.suptitle(f"{title}: mean and 95 % interval over seeds {seeds}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_against_effort(ax, results: dict, metric: str, colors: dict[str, str]) -> None:
    """``metric`` against the corrections spent so far: per variant and round, the mean over seeds of both."""
    by_round: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for variant, by_seed in curves(results, metric, "corrections").items():
        for curve in by_seed.values():
            for rnd, (x, y) in enumerate(sorted(curve.items())):
                by_round.setdefault(variant, {}).setdefault(rnd, []).append((x, y))
    for variant, rounds in by_round.items():
        xy = np.array([np.mean(pts, axis=0) for _, pts in sorted(rounds.items())])
        style = "--" if "+" in variant else "-"
        ax.plot(xy[:, 0], xy[:, 1], style, marker="o", label=variant, color=colors[variant])
    ax.set_xlabel("corrections so far (boxes drawn, deleted or relabeled)")
    ax.grid(alpha=0.3)
