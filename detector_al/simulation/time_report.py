"""A simulation in annotator seconds: what a labeling team pays per arm, against labeling from scratch.

The arms, priced by a :class:`~detector_al.policy.annotator_cost.CostModel` from the actions each round recorded:

- ``scratch``: plain Label Studio: random order, no pre-annotations, every box drawn. It labels the same images as
  ``random`` (same seeds), so it shares ``random``'s models and mAP; only the seconds differ;
- every simulated variant (``random``: random order with pre-annotations, what Label Studio's own YOLO backend
  gives; ``entropy+cold+ceal``: the shipped pipeline; ``oracle``): its batches' pre-annotations corrected;
- ``<variant> +review`` for a variant whose CEAL auto-accepted images would be reviewed: their review pass added.

The initial labeled set has no model to pre-annotate it: every arm draws it. **Seconds to reach** a target and the
saving follow :func:`~detector_al.simulation.report.savings` with seconds spent in place of labeled images; the
target is ``scratch``'s full-budget test mAP50 on the same seed (= ``random``'s).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np

from detector_al.policy.annotator_cost import Actions, CostModel
from detector_al.simulation.report import _fmt, _table, curves, savings, t_interval

SCRATCH = "scratch"
REVIEW = " +review"
"""The suffix of an arm's twin that also pays for reviewing its CEAL pseudo-labels (:func:`priced`)."""


def priced(results: dict, cost: CostModel) -> dict:
    """``results`` with a ``seconds`` field on every row, plus the ``scratch`` arm and the ``+review`` arms."""
    out = {**results, "runs": []}
    for r in results["runs"]:
        if "actions" not in r:
            raise ValueError("these results have no annotator actions: re-run them with this version of simulate")
        actions = Actions(**r["actions"])
        out["runs"].append({**r, "seconds": cost.seconds(actions)})
        if r["variant"] == "random":
            scratch = Actions(images=actions.images, draw=r["drawn"])  # the same images, every box drawn
            out["runs"].append({**copy.deepcopy(r), "variant": SCRATCH, "seconds": cost.seconds(scratch)})
    reviewed = {r["variant"] for r in results["runs"] if r.get("accepted_images")}
    for r in results["runs"]:
        if r["variant"] in reviewed:
            review = cost.review_seconds(r.get("accepted_images", 0), r.get("accepted_boxes", 0))
            row = {**r, "variant": r["variant"] + REVIEW}
            out["runs"].append({**row, "seconds": cost.seconds(Actions(**r["actions"])) + review})
    return out


def seconds_per_image(results: dict) -> list[tuple[float, float, str]]:
    """``(mAP50 of the model that pre-annotated, seconds per image of the batch, variant)`` for every round >= 1 of a
    priced result (``scratch`` too, at the same mAP50: what the same images cost without pre-annotations)."""
    prev: dict[tuple[str, int], dict] = {}
    points = []
    for r in sorted(results["runs"], key=lambda r: (r["variant"], r["seed"], r["round"])):
        key = (r["variant"], r["seed"])
        before = prev.get(key)
        if before is not None and r["round"] > 0:
            images = r["actions"]["images"]
            if images:
                points.append((before["map50"], r["seconds"] / images, r["variant"]))
        prev[key] = r
    return points


def time_report(results: dict, cost: CostModel, arms: tuple[str, ...] | None = None) -> str:
    """Markdown: annotator seconds per arm, seconds (and labels) to reach ``scratch``'s full-budget mAP50, paired
    ratios against ``scratch`` and ``random``, and seconds per image against the pre-annotating model's mAP50."""
    p = priced(results, cost)
    spent = curves(p, "map50", "seconds")
    arms = arms or tuple(spent)
    lines = [f"Cost model (seconds): {', '.join(f'{k} {v:g}' for k, v in cost.to_dict().items())}", ""]
    lines += ["**Annotator hours spent by labeled images**, mean [95 % interval] over seeds", ""]
    budgets = sorted({r["labeled"] for r in p["runs"]})
    rows = []
    for arm in arms:
        per_seed = _cumulative(p, arm)
        rows.append(
            [f"`{arm}`"] + [_fmt(t_interval([s[n] / 3600 for s in per_seed.values() if n in s]), 2) for n in budgets]
        )
    lines += [*_table(["arm"] + [str(n) for n in budgets], rows), ""]
    by_time, by_labels = savings(p, baseline=SCRATCH, x="seconds"), savings(p, baseline=SCRATCH)
    vs_random, vs_random_after = _paired_ratio(p, "random"), _paired_ratio(p, "random", after_initial=True)
    lines += [
        f"**To reach `{SCRATCH}`'s full-budget test mAP50** (paired by seed, interpolated): annotator hours, their "
        f"share of `{SCRATCH}`'s full-budget hours, the paired ratio to `random`'s (pre-annotated, random order) "
        "hours, both also counted after the initial set (which every arm draws alike), and labels",
        "",
    ]
    rows = []
    for arm in arms:
        t, lab = by_time.get(arm), by_labels.get(arm)
        if not t:
            continue
        hours = tuple(v / 3600 for v in t["labels"])
        share = _share(p, arm)
        rows.append(
            [
                f"`{arm}`",
                _fmt(hours, 2),
                _fmt(share, 2),
                _fmt(_share(p, arm, after_initial=True), 2),
                _fmt(vs_random.get(arm, (math.nan,) * 3), 2),
                _fmt(vs_random_after.get(arm, (math.nan,) * 3), 2),
                _fmt(lab["labels"], 1) if lab else "-",
                f"{t['censored']}/{t['seeds']}",
            ]
        )
    header = ["arm", "hours to reach", f"share of {SCRATCH}'s hours", "after the initial set"]
    header += ["ratio to random's (paired)", "after the initial set", "labels", "never"]
    lines += [*_table(header, rows), ""]
    lines += _per_image_table(seconds_per_image(p))
    return "\n".join(lines)


def _cumulative(p: dict, arm: str) -> dict[int, dict[int, float]]:
    """seed -> labeled images -> seconds spent so far."""
    out: dict[int, dict[int, float]] = {}
    for r in sorted((r for r in p["runs"] if r["variant"] == arm), key=lambda r: (r["seed"], r["round"])):
        s = out.setdefault(r["seed"], {})
        s[r["labeled"]] = (max(s.values()) if s else 0.0) + r["seconds"]
    return out


def _reach(p: dict, arm: str) -> dict[int, float]:
    """seed -> seconds ``arm`` spent to reach ``scratch``'s full-budget mAP50 (inf: never)."""
    return savings(p, baseline=SCRATCH, x="seconds").get(arm, {}).get("per_seed", {})


def _initial(p: dict) -> dict[int, float]:
    """seed -> seconds of the initial set (drawn in every arm alike)."""
    return {seed: min(s.values()) for seed, s in _cumulative(p, SCRATCH).items()}


def _share(p: dict, arm: str, after_initial: bool = False) -> tuple[float, float, float]:
    """Seconds to reach / ``scratch``'s full-budget seconds, per seed (a seed that never reaches counts with its
    full-budget seconds: a lower bound of its share). ``after_initial``: both counted after the initial set."""
    full = {seed: max(s.values()) for seed, s in _cumulative(p, SCRATCH).items()}
    start = _initial(p) if after_initial else dict.fromkeys(full, 0.0)
    own = _cumulative(p, arm)
    shares = []
    for seed, need in _reach(p, arm).items():
        spent = need if math.isfinite(need) else max(own[seed].values())
        shares.append((spent - start[seed]) / (full[seed] - start[seed]))
    return t_interval(shares)


def _paired_ratio(p: dict, base: str, after_initial: bool = False) -> dict[str, tuple[float, float, float]]:
    """arm -> mean [interval] of :func:`_seed_ratios` over the seeds."""
    return {arm: t_interval(ratios) for arm, ratios in _seed_ratios(p, base, after_initial).items()}


def _seed_ratios(p: dict, base: str, after_initial: bool = False) -> dict[str, list[float]]:
    """arm -> seconds to reach / ``base``'s seconds to reach, one per seed; a seed on which an arm never reaches
    counts with that arm's full-budget seconds (a lower bound of what it would have needed), so no seed is dropped
    (the table's ``never`` column says how many). ``after_initial``: both counted after the initial set."""
    start = _initial(p)

    def spent(arm: str) -> dict[int, float]:
        own = _cumulative(p, arm)
        return {s: need if math.isfinite(need) else max(own[s].values()) for s, need in _reach(p, arm).items()}

    ref = spent(base)
    out = {}
    for arm in {r["variant"] for r in p["runs"]}:
        mine = spent(arm)
        both = [s for s in mine if s in ref]
        shift = {s: start[s] if after_initial else 0.0 for s in both}
        out[arm] = [(mine[s] - shift[s]) / (ref[s] - shift[s]) for s in both if ref[s] > shift[s]]
    return out


def pooled_ratio(
    results: list[dict], arm: str, base: str, cost: CostModel = CostModel()
) -> tuple[tuple[float, float, float], int]:
    """``arm``'s hours to reach ``scratch``'s full-budget mAP50 over ``base``'s, paired within each results (one
    dataset's seeds) and pooled over all of them: mean [95 % interval] over every (dataset, seed) pair, and how many
    pairs. A dataset without both arms adds none."""
    ratios = [x for res in results for x in _seed_ratios(priced(res, cost), base).get(arm, [])]
    return t_interval(ratios), len(ratios)


def versus_table(results: dict, base: str, cost: CostModel = CostModel()) -> str:
    """Markdown: every arm's hours to reach ``scratch``'s full-budget mAP50 over ``base``'s, paired by seed (mean [95 %
    interval]; a seed that never reaches counts with its full-budget hours, as in :func:`time_report`), to compare
    candidates with the shipped arm rather than with random order."""
    p = priced(results, cost)
    ratios, after = _paired_ratio(p, base), _paired_ratio(p, base, after_initial=True)
    rows = [[f"`{arm}`", _fmt(ratios[arm], 2), _fmt(after[arm], 2)] for arm in sorted(ratios) if arm != base]
    return "\n".join(_table(["arm", f"ratio to `{base}`'s hours (paired)", "after the initial set"], rows))


SENSITIVITY = {"draw_box": (7.0, 15.0, 25.5, 35.0), "verify_box": (1.6, 3.0)}
"""The cost model's two decisive prices, over the range the literature gives (docs/annotator_time.md): extreme
clicking's 7 s to a full 35 s box; a 1.6 s to 3 s verification."""


def sensitivity_table(results: dict, arm: str, cost: CostModel = CostModel()) -> str:
    """Markdown: ``arm``'s share of ``scratch``'s hours and its paired ratio to ``random``'s, for every draw / verify
    price of :data:`SENSITIVITY` (the other prices as ``cost``): the draw/verify ratio decides the saving."""
    from dataclasses import replace

    rows = []
    for draw in SENSITIVITY["draw_box"]:
        for verify in SENSITIVITY["verify_box"]:
            p = priced(results, replace(cost, draw_box=draw, verify_box=verify))
            ratio = _paired_ratio(p, "random").get(arm, (math.nan,) * 3)
            rows.append(
                [f"{draw:g}", f"{verify:g}", _fmt(_share(p, "random"), 2), _fmt(_share(p, arm), 2), _fmt(ratio, 2)]
            )
    header = ["draw_box s", "verify_box s", "`random` share of scratch's", f"`{arm}` share of scratch's"]
    return "\n".join(_table([*header, f"`{arm}` / `random` (paired)"], rows))


def _per_image_table(points: list[tuple[float, float, str]]) -> list[str]:
    """Seconds per image by the pre-annotating model's mAP50 (bins of 0.1), per arm: how the saving grows."""
    if not points:
        return []
    arms = sorted({a for _, _, a in points})
    bins = sorted({math.floor(m * 10) / 10 for m, _, _ in points})
    lines = ["**Seconds per image by the mAP50 of the model that pre-annotated it** (mean over rounds and seeds)", ""]
    rows = []
    for lo in bins:
        row = [f"{lo:.1f}-{lo + 0.1:.1f}"]
        for arm in arms:
            v = [s for m, s, a in points if a == arm and lo <= m < lo + 0.1 + 1e-12]
            row.append(f"{np.mean(v):.0f} (n={len(v)})" if v else "-")
        rows.append(row)
    return [*lines, *_table(["model mAP50", *(f"`{a}`" for a in arms)], rows), ""]


def plot_annotator_time(results: dict, cost: CostModel, path: Path, title: str = "Annotator time") -> Path:
    """Two panels: test mAP50 against annotator hours so far (per arm, mean over seeds per round), and seconds per
    image against the pre-annotating model's mAP50 (every round and seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = priced(results, cost)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    arms = curves(p, "map50", "seconds")
    base_of = {arm: arm.removesuffix(REVIEW) for arm in arms}  # an arm and its review twin share a colour (the
    bases = list(dict.fromkeys(base_of.values()))  # twin's line dashed); tab20's darker shades while they suffice
    step = 2 if len(bases) <= 10 else 1
    palette = plt.get_cmap("tab20").colors
    colors = {arm: palette[(step * bases.index(base_of[arm])) % 20] for arm in arms}
    for arm, by_seed in arms.items():
        rounds: dict[int, list[tuple[float, float]]] = {}
        for curve in by_seed.values():
            for k, (x, y) in enumerate(sorted(curve.items())):
                rounds.setdefault(k, []).append((x / 3600, y))
        xy = np.array([np.mean(v, axis=0) for _, v in sorted(rounds.items())])
        ax1.plot(xy[:, 0], xy[:, 1], "--" if arm != base_of[arm] else "-", marker="o", label=arm, color=colors[arm])
    ax1.set_xlabel("annotator hours so far")
    ax1.set_ylabel("test mAP50")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    for arm in colors:
        pts = np.array([(m, s) for m, s, a in seconds_per_image(p) if a == arm]).reshape(-1, 2)
        ax2.scatter(pts[:, 0], pts[:, 1], s=14, label=arm, color=colors[arm], alpha=0.7)
    ax2.set_xlabel("mAP50 of the model that pre-annotated the batch")
    ax2.set_ylabel("annotator seconds per image")
    ax2.grid(alpha=0.3)
    seeds = sorted({r["seed"] for r in results["runs"]})
    fig.suptitle(f"{title}: seeds {seeds}; cost model draw {cost.draw_box:g} s/box, verify {cost.verify_box:g} s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
