"""The dashboard's HTML: server-rendered, charts as inline SVG, no script and no build step.

:func:`render` takes :func:`detector_al.signals.dashboard.project_overview`'s dicts; every number on the page is one of theirs.
"""

from __future__ import annotations

import datetime as dt
from html import escape

W, H, PAD = 420, 180, 34

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2328;background:#f6f8fa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
h3{font-size:14px;margin:0 0 6px;color:#57606a;text-transform:uppercase;letter-spacing:.04em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:14px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 14px}
.num{font-size:26px;font-weight:600} .muted{color:#57606a;font-size:13px}
.stop{background:#dafbe1;border-color:#4ac26b} .go{background:#fff8c5;border-color:#d4a72c}
table{border-collapse:collapse;font-size:13px;width:100%} td,th{padding:3px 6px;border-bottom:1px solid #eaeef2;text-align:left}
.counts{display:flex;gap:18px;flex-wrap:wrap} .counts div{min-width:90px}
a{color:#0969da}
"""


def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else escape(str(v))


def _when(ts) -> str:
    return "-" if not ts else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _scale(v: float, lo: float, hi: float, a: float, b: float) -> float:
    return a if hi <= lo else a + (v - lo) / (hi - lo) * (b - a)


def line_chart(
    series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, hline: float | None = None
) -> str:
    """An SVG line chart of named series of ``(x, y)`` points (y in [0, 1] fixed, x over the data)."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return '<p class="muted">no data yet</p>'
    xs = [p[0] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    colors = ["#0969da", "#bf3989", "#1a7f37", "#9a6700"]
    out = [f'<svg width="{W}" height="{H}" role="img" aria-label="{escape(ylabel)} by {escape(xlabel)}">']
    out.append(f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 8}" y2="{H - PAD}" stroke="#8c959f"/>')
    out.append(f'<line x1="{PAD}" y1="8" x2="{PAD}" y2="{H - PAD}" stroke="#8c959f"/>')
    for t in (0.0, 0.5, 1.0):
        y = _scale(t, 0, 1, H - PAD, 8)
        out.append(f'<text x="4" y="{y + 4:.0f}" font-size="10">{t:.1f}</text>')
    if hline is not None:
        y = _scale(hline, 0, 1, H - PAD, 8)
        out.append(f'<line x1="{PAD}" y1="{y:.1f}" x2="{W - 8}" y2="{y:.1f}" stroke="#cf222e" stroke-dasharray="4 3"/>')
    for i, (name, s) in enumerate(series.items()):
        c = colors[i % len(colors)]
        xy = [(_scale(x, x0, x1, PAD + 6, W - 14), _scale(y, 0, 1, H - PAD, 8)) for x, y in s]
        out.append(
            f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in xy)}"/>'
        )
        out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{c}"/>' for a, b in xy]
        out.append(f'<text x="{PAD + 8}" y="{16 + 13 * i}" font-size="11" fill="{c}">{escape(name)}</text>')
    out.append(f'<text x="{PAD}" y="{H - 8}" font-size="10">{_fmt(x0, 0)}</text>')
    out.append(f'<text x="{W - 40}" y="{H - 8}" font-size="10">{_fmt(x1, 0)}</text>')
    out.append(f'<text x="{W / 2 - 40:.0f}" y="{H - 8}" font-size="11">{escape(xlabel)}</text></svg>')
    return "".join(out)


def bar_chart(
    labels: list[str], values: list[float], marker: float | None = None, edges: list[float] | None = None
) -> str:
    """An SVG bar chart; with ``edges`` a histogram, ``marker`` drawn as a vertical line at that x."""
    if not values:
        return '<p class="muted">no data yet</p>'
    top = max(values) or 1
    n = len(values)
    bw = (W - PAD - 10) / n
    out = [f'<svg width="{W}" height="{H}" role="img">']
    for i, v in enumerate(values):
        h = _scale(v, 0, top, 0, H - PAD - 12)
        out.append(
            f'<rect x="{PAD + i * bw:.1f}" y="{H - PAD - h:.1f}" width="{max(bw - 2, 1):.1f}" height="{h:.1f}" '
            f'fill="#54aeff"><title>{escape(labels[i])}: {v:g}</title></rect>'
        )
        if edges is None:
            out.append(
                f'<text x="{PAD + i * bw:.1f}" y="{H - PAD + 14}" font-size="10">{escape(labels[i][:12])}</text>'
            )
            out.append(f'<text x="{PAD + i * bw:.1f}" y="{H - PAD - h - 3:.1f}" font-size="10">{v:g}</text>')
    if edges:
        out.append(f'<text x="{PAD}" y="{H - 12}" font-size="10">{edges[0]:.3g}</text>')
        out.append(f'<text x="{W - 50}" y="{H - 12}" font-size="10">{edges[-1]:.3g}</text>')
        if marker is not None and edges[0] <= marker <= edges[-1]:
            x = _scale(marker, edges[0], edges[-1], PAD, W - 10)
            out.append(
                f'<line x1="{x:.1f}" y1="8" x2="{x:.1f}" y2="{H - PAD}" stroke="#cf222e" stroke-dasharray="4 3"/>'
            )
            out.append(f'<text x="{x + 3:.1f}" y="18" font-size="10" fill="#cf222e">CEAL threshold</text>')
    out.append(f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 8}" y2="{H - PAD}" stroke="#8c959f"/></svg>')
    return "".join(out)


def _stopping_card(s: dict) -> str:
    if s["rounds"] == 0:
        verdict, css = "not measured yet: the signal needs two promoted models", ""
    elif s["stop"]:
        verdict, css = "STOP: more labels of this kind are unlikely to change the model much", "stop"
    else:
        verdict, css = f"keep labeling ({s['streak']} of {s['patience']} stable rounds)", "go"
    points = [(h["labeled"] or i, h["agreement"]) for i, h in enumerate(s["history"], 1)]
    chart = line_chart({"agreement (box F1)": points}, "labeled images", "agreement", hline=s["threshold"])
    return (
        f'<div class="card {css}" id="stopping"><h3>Stopping signal</h3><div class="num">{escape(verdict)}</div>'
        f'<p class="muted">Agreement of consecutive models on a fixed stop set (box F1 at IoU 0.5); stop when it '
        f"stays &ge; {s['threshold']} for {s['patience']} promotions. Last: {_fmt(s['last'])}.</p>{chart}</div>"
    )


def _errors_card(e: dict, ls_url: str | None, project: int) -> str:
    link = (
        f'<a href="{escape(ls_url)}/projects/{project}/data">Label Studio: tab "Possible label errors"</a>'
        if ls_url
        else ""
    )
    rows = "".join(
        f"<tr><td>{r['task_id']}</td><td>{r['score']:.2f}</td><td>{escape(', '.join(f'{k} {v}' for k, v in r['kinds'].items() if v))}</td>"
        f"<td>{'in-sample' if r['in_sample'] else 'held out'}</td></tr>"
        for r in e["top"][:8]
    )
    table = (
        f"<table><tr><th>task</th><th>score</th><th>kinds</th><th>model saw it</th></tr>{rows}</table>" if rows else ""
    )
    return (
        f'<div class="card" id="label-errors"><h3>Possible label errors</h3><div class="num">{e["flagged"]} of '
        f'{e["checked"]}</div><p class="muted">labeled tasks the model doubts ({e["flagged_out_of_sample"]} on '
        f"images it was not trained on). {link}</p>{table}</div>"
    )


def _time_card(t: dict, project: int) -> str:
    """Seconds per image by model version (median, a bar each), the projection and the fitted cost model."""
    versions = t["by_model_version"]
    chart = bar_chart(list(versions), [v["median_s"] for v in versions.values()]) if versions else ""
    proj, fit = t["projection"], t["cost_model"]
    left = (
        f"{_fmt(proj['hours'], 1)} h for the {proj['tasks']} tasks left at the current rate"
        if proj["hours"] is not None
        else f"{proj['tasks']} tasks left; the rate is known after 5 timed annotations"
    )
    if fit["fitted"]:
        rows = "".join(
            f"<tr><td>{escape(a)}</td><td>{_fmt(f['seconds'], 1)} [{_fmt(f['low'], 1)}, {_fmt(f['high'], 1)}]</td>"
            f"<td>{_fmt(fit['literature'][a], 1)}</td></tr>"
            for a, f in fit["fitted"].items()
        )
        model = (
            f"<table><tr><th>action</th><th>fitted s [95 %]</th><th>literature s</th></tr>{rows}</table>"
            f'<p class="muted">fitted on {fit["annotations"]} annotations: '
            f'<a href="cost-model?project={project}">the file for simulate and entropy_roi</a></p>'
        )
    else:
        model = (
            f'<p class="muted">per-action seconds are fitted once {fit["min_annotations"]} annotations have a known '
            f"edit ({fit['annotations']} so far)</p>"
        )
    return (
        f'<div class="card" id="annotator-time"><h3>Annotator time</h3><div class="num">{_fmt(t["median_s"], 1)} s'
        f'</div><p class="muted">median seconds per annotation over {t["annotations"]} (mean without outliers '
        f"{_fmt(t['mean_s'], 1)} s; {t['skipped']} skips); {escape(left)}. Seconds per image by model version:</p>"
        f"{chart or '<p class=muted>no timed annotation yet</p>'}{model}</div>"
    )


def _judged_on(c: dict) -> str:
    """Where a candidate was judged: held-out validation images (the rule), or, for a job from before the rule, the
    images it trained on."""
    if c.get("validated_on") == "images/val":
        n = c.get("val_images")
        return f"{n} held-out images" if n is not None else "held-out images"
    return "its training images (before the rule)" if c.get("validated_on") else "-"


def _job_row(j: dict) -> str:
    """A training job's row: its error (or, without one, its reason) cut at 140 characters, the whole on hover."""
    said = j["error"] or j["reason"] or ""
    return (
        f"<tr><td>{j['id']}</td><td>{escape(j['status'])}</td><td>{'promoted' if j['promoted'] else ''}</td>"
        f'<td title="{escape(said)}">{escape(said[:140])}</td><td>{_when(j["finished_at"])}</td></tr>'
    )


def _project(o: dict, ls_url: str | None) -> str:
    p, q = o["project"], o["queue"]
    curve = o["curve"]
    series = {
        "candidate mAP50 (human val split)": [(c["labeled"] or 0, c["map50"]) for c in curve if c["map50"] is not None],
        "serving mAP50": [(c["labeled"] or 0, c["serving_map50"]) for c in curve if c["serving_map50"] is not None],
    }
    versions = "".join(
        f"<tr><td>{escape(str(c['version']))}</td><td>{c['labeled']}</td><td>{c['pseudo_labeled']}</td>"
        f"<td>{_fmt(c['map50'])}</td><td>{_fmt(c['map50_95'])}</td><td>{escape(_judged_on(c))}</td>"
        f"<td>{'promoted' if c['promoted'] else 'kept the serving model'}</td>"
        f"<td>{_when(c['finished_at'])}</td></tr>"
        for c in curve
    )
    live = o["live_job"]
    live_html = (
        f'<div class="num">{escape(str(live.get("phase")))}</div><p class="muted">job {live.get("job")}, epoch '
        f"{live.get('epoch', '-')} of {live.get('epochs', '-')}, {_fmt(live.get('elapsed_s'), 0)} s elapsed, ETA "
        f"{_fmt(live.get('eta_s'), 0)} s</p>"
        if live
        else '<p class="muted">no training running</p>'
    )
    jobs = "".join(_job_row(j) for j in o["jobs"])
    hist = o["scores"]
    labels = [f"{a:.3g}-{b:.3g}" for a, b in zip(hist["edges"], hist["edges"][1:], strict=False)]
    classes = o["labels_per_class"] or {}
    warn = f'<p class="card go">{escape(o["sampling_warning"])}</p>' if o["sampling_warning"] else ""
    return f"""
<section id="project-{p}"><h2>Project {p} &middot; model {escape(str(o["model_version"]))} &middot; round {o["round"]}</h2>{warn}
<div class="grid">
 <div class="card" id="queue"><h3>Queue</h3><div class="counts">
  <div><div class="num">{q["queued"]}</div><span class="muted">queued ({q["batch"]} in the batch)</span></div>
  <div><div class="num">{q["auto_accepted"]}</div><span class="muted">auto-accepted</span></div>
  <div><div class="num">{q["labeled"]}</div><span class="muted">labeled</span></div>
  <div><div class="num">{q["failed"]}</div><span class="muted">failed</span></div></div>
  <p class="muted" id="ceal">Auto-accept: {escape(o["ceal"])}</p>
  {f'<p><a href="{escape(ls_url)}/projects/{p}/data">Label Studio: tabs "Active learning queue", "Auto-accepted (review)"</a></p>' if ls_url else ""}</div>
 {_stopping_card(o["stopping"])}
 <div class="card" id="curve"><h3>Learning curve of this project</h3>{line_chart(series, "human labels", "mAP50")}</div>
 {_errors_card(o["label_errors"], ls_url, p)}
 {_time_card(o["annotator_time"], p)}
 <div class="card" id="training"><h3>Training</h3>{live_html}<p class="muted" id="cadence">Retrains {escape(o["retraining"])}</p><table><tr><th>job</th><th>status</th><th></th><th>reason / error</th><th>finished</th></tr>{jobs}</table></div>
 <div class="card" id="scores"><h3>Uncertainty of the unlabeled images ({hist["n"]})</h3>{bar_chart(labels, hist["counts"], o["ceal_threshold"], hist["edges"])}</div>
 <div class="card" id="classes"><h3>Human labels per class</h3>{bar_chart(list(classes), list(classes.values())) if classes else '<p class="muted">known after the first training</p>'}</div>
</div>
<div class="card" id="versions"><h3>Model versions</h3><table><tr><th>version</th><th>human labels</th><th>pseudo</th><th>mAP50</th><th>mAP50-95</th><th>judged on</th><th>outcome</th><th>finished</th></tr>{versions or '<tr><td colspan="8" class="muted">no training yet: press Start Training in Label Studio</td></tr>'}</table>
<p class="muted" id="promotion-rule">{escape(o["promotion_rule"])}</p></div>
</section>"""


def render(overviews: list[dict], serving: str, ls_url: str | None, refresh_s: int | None = None) -> str:
    """The whole page: one section per project (an empty state before the first one)."""
    body = "".join(_project(o, ls_url) for o in overviews) or (
        '<div class="card"><p>No project yet: connect this backend to a Label Studio project (Settings &rarr; Model).</p></div>'
    )
    meta = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}<title>detector-al dashboard</title>'
        f"<style>{STYLE}</style></head><body><h1>detector-al dashboard</h1>"
        f'<p class="muted">serving {escape(serving)} &middot; machine-readable: <a href="status">/status</a></p>{body}</body></html>'
    )
