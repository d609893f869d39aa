"""The demo's drift report: one self-contained HTML page, reference vs live, per feature.

Each feature gets a plot of its reference sample (the bundle's ``reference.csv``)
against the traffic the demo sent before and after the drift point, titled with the
pipeline's verdict (drifted or not, when, by which detector, p-value). A timeline
plots the share of drifting features that Prometheus recorded, with the drift point
and the alert marked. Images are PNGs inlined as data URIs, so the page opens from
disk, offline, in any browser.

Why not Evidently's data-drift report: evidently 0.7.23 resolves beside our pins, but
fails at import under pandas 3 (``ImportError: infer_dtype_from_object`` from
``evidently.legacy``); see docs/demo.md.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REFERENCE_COLOUR = "#4C72B0"
BEFORE_COLOUR = "#55A868"
AFTER_COLOUR = "#C44E52"
REPORT_FILE = "index.html"


@dataclass(frozen=True)
class FeatureVerdict:
    """What the pipeline concluded about one feature stream."""

    feature: str
    kind: str  # numeric | categorical
    drifted: bool
    detector: str = ""  # detector label of the lowest p-value, if exported
    p_value: float | None = None
    first_drift_row: int | None = None  # rows sent when Prometheus first saw it drift
    first_drift_seconds: float | None = None  # seconds after the drift point


@dataclass(frozen=True)
class Timeline:
    """The drift share over time (unix seconds) and the moments worth marking."""

    times: Sequence[float] = ()
    drift_share: Sequence[float] = ()
    drift_started_at: float | None = None
    alert_fired_at: float | None = None
    alert_received_at: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class ReportInput:
    """Everything the report page shows."""

    title: str
    scenario: str
    scenario_description: str
    reference: pd.DataFrame
    before: pd.DataFrame  # traffic sent before the drift point
    after: pd.DataFrame  # traffic sent after it
    verdicts: Sequence[FeatureVerdict]
    timeline: Timeline = field(default_factory=Timeline)
    links: Sequence[tuple[str, str]] = ()  # (label, url)


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _numeric_plot(name: str, reference: pd.Series, before: pd.Series, after: pd.Series) -> Figure:
    fig = Figure(figsize=(5.2, 3.0))
    ax = fig.add_subplot()
    values = pd.concat([reference, before, after]).to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    # Shared bins from the pooled 0.5-99.5% range: one outlier must not squash the plot.
    lo, hi = np.quantile(values, [0.005, 0.995]) if values.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 31)
    for series, colour, label in (
        (reference, REFERENCE_COLOUR, f"reference (n={len(reference)})"),
        (before, BEFORE_COLOUR, f"live, before drift (n={len(before)})"),
        (after, AFTER_COLOUR, f"live, after drift (n={len(after)})"),
    ):
        data = series.to_numpy(dtype=np.float64)
        data = data[np.isfinite(data)]
        if data.size:
            ax.hist(
                np.clip(data, lo, hi),
                bins=bins.tolist(),
                density=True,
                histtype="step",
                linewidth=1.8,
                color=colour,
                label=label,
            )
    ax.set_xlabel(name)
    ax.set_ylabel("density")
    ax.legend(fontsize=7, frameon=False)
    return fig


def _categorical_plot(
    name: str, reference: pd.Series, before: pd.Series, after: pd.Series
) -> Figure:
    fig = Figure(figsize=(5.2, 3.0))
    ax = fig.add_subplot()
    categories = list(
        dict.fromkeys(
            [
                *reference.astype(str).value_counts().index,
                *before.astype(str).unique(),
                *after.astype(str).unique(),
            ]
        )
    )
    x = np.arange(len(categories))
    width = 0.27
    for offset, (series, colour, label) in zip(
        (-width, 0.0, width),
        (
            (reference, REFERENCE_COLOUR, "reference"),
            (before, BEFORE_COLOUR, "live, before drift"),
            (after, AFTER_COLOUR, "live, after drift"),
        ),
        strict=False,
    ):
        shares = series.astype(str).value_counts(normalize=True).reindex(categories, fill_value=0.0)
        ax.bar(x + offset, shares.to_numpy(), width=width, color=colour, label=label)
    ax.set_xticks(x, categories, rotation=30 if len(categories) > 5 else 0, fontsize=8)
    ax.set_xlabel(name)
    ax.set_ylabel("share of rows")
    ax.legend(fontsize=7, frameon=False)
    return fig


def _timeline_plot(timeline: Timeline) -> Figure | None:
    if not timeline.times:
        return None
    fig = Figure(figsize=(10.5, 2.8))
    ax = fig.add_subplot()
    t0 = timeline.times[0]
    xs = [t - t0 for t in timeline.times]
    ax.step(
        xs,
        timeline.drift_share,
        where="post",
        color=AFTER_COLOUR,
        linewidth=1.8,
        label="share of features drifting (Prometheus)",
    )
    if timeline.threshold is not None:
        ax.axhline(
            timeline.threshold,
            color="grey",
            linestyle=":",
            linewidth=1,
            label=f"alert threshold ({timeline.threshold:g})",
        )
    for when, colour, label in (
        (timeline.drift_started_at, "black", "drift starts in the traffic"),
        (timeline.alert_fired_at, "#8172B2", "alert fires (Prometheus)"),
        (timeline.alert_received_at, "#CCB974", "alert received (webhook)"),
    ):
        if when is not None:
            ax.axvline(when - t0, color=colour, linestyle="--", linewidth=1.2, label=label)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("seconds since traffic started")
    ax.set_ylabel("drifting share")
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    return fig


def _verdict_text(v: FeatureVerdict) -> str:
    # The p-value is the latest one the workers export; "first flagged" is when the
    # stream's drift flag first showed up in Prometheus. Both are labelled as such,
    # since a stream may drop below the decision rule again after being flagged.
    last_p = (
        f"last {v.detector + ' ' if v.detector else ''}p={v.p_value:.2g}"
        if v.p_value is not None and math.isfinite(v.p_value)
        else ""
    )
    if not v.drifted:
        return "no drift detected" + (f" ({last_p})" if last_p else "")
    parts = ["DRIFT"]
    if v.first_drift_seconds is not None:
        when = f"first flagged {v.first_drift_seconds:.1f} s after the drift point"
        if v.first_drift_row is not None:
            when += f" (row {v.first_drift_row})"
        parts.append(when)
    if last_p:
        parts.append(last_p)
    return ", ".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px} .sub{color:#555;margin:0 0 16px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(470px,1fr));gap:14px}
.card{border:1px solid #ddd;border-radius:6px;padding:10px}
.card h2{font-size:15px;margin:0 0 6px} .card img{width:100%}
.drift{border-color:#C44E52;box-shadow:0 0 0 1px #C44E52 inset} .badge{font-size:12px;
padding:2px 6px;border-radius:4px;background:#eee} .drift .badge{background:#C44E52;color:#fff}
table{border-collapse:collapse;margin:8px 0 16px} td,th{border:1px solid #ddd;padding:4px 8px;
font-size:13px;text-align:left} a{color:#4C72B0}
"""


def render_html(data: ReportInput) -> str:
    """Return the report page as one self-contained HTML document."""
    kinds = {v.feature: v.kind for v in data.verdicts}
    cards = []
    ordered = sorted(data.verdicts, key=lambda v: (not v.drifted, v.feature))
    for v in ordered:
        if v.feature not in data.reference.columns:
            continue
        plot = _numeric_plot if kinds[v.feature] == "numeric" else _categorical_plot
        image = _png(
            plot(
                v.feature, data.reference[v.feature], data.before[v.feature], data.after[v.feature]
            )
        )
        cards.append(
            f'<div class="card{" drift" if v.drifted else ""}" data-feature="{html.escape(v.feature)}">'
            f'<h2>{html.escape(v.feature)} <span class="badge">{html.escape(_verdict_text(v))}</span></h2>'
            f'<img alt="{html.escape(v.feature)}: reference vs live" src="{image}"></div>'
        )
    drifted = [v.feature for v in ordered if v.drifted]
    timeline = _timeline_plot(data.timeline)
    timeline_html = (
        f'<h2>Timeline</h2><img alt="drift share over time" style="max-width:1100px;width:100%" '
        f'src="{_png(timeline)}">'
        if timeline is not None
        else ""
    )
    links = "".join(
        f'<li>{html.escape(label)}: <a href="{html.escape(url)}">{html.escape(url)}</a></li>'
        for label, url in data.links
    )
    rows = "".join(
        f"<tr><td>{html.escape(v.feature)}</td><td>{v.kind}</td><td>{html.escape(_verdict_text(v))}</td></tr>"
        for v in ordered
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(data.title)}</title><style>{_CSS}</style></head>
<body>
<h1>{html.escape(data.title)}</h1>
<p class="sub">Scenario <b>{html.escape(data.scenario)}</b>: {html.escape(data.scenario_description)}</p>
<p id="drifted">Features that drifted ({len(drifted)} of {len(data.verdicts)}):
<b>{html.escape(", ".join(drifted) or "none")}</b></p>
<table><tr><th>feature</th><th>type</th><th>verdict of the drift workers</th></tr>{rows}</table>
{timeline_html}
<h2>Reference vs live, per feature</h2>
<div class="grid">{"".join(cards)}</div>
{f"<h2>Where to look</h2><ul>{links}</ul>" if links else ""}
</body></html>
"""


def write_report(data: ReportInput, directory: Path) -> Path:
    """Write the report page into ``directory``; return the path of its index.html."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / REPORT_FILE
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_html(data), encoding="utf-8")
    tmp.replace(path)  # a browser reloading the page never sees half of it
    return path
