"""The report as one self-contained HTML file: plotly.js inlined, the figures as JSON beside it.

Nothing is fetched when the file is opened: no CDN, no web font, no image; it works offline and
can be mailed. plotly.js comes from the ``plotly`` Python package (the optional ``report``
extra), which ships the minified library; the figures are plain plotly JSON built here, so the
Python side of plotly is not used at all. Every text from the data is escaped.
"""

from __future__ import annotations

import html
import json
import math
import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from km2pg import db
from km2pg.cli.report import Report, Request, Section, Table, gather, plan_report
from km2pg.cli.report_text import fmt, print_report, retention_grid
from km2pg.dsn import ConnectionSettings
from km2pg.errors import ConfigError

Figure = dict[str, Any]

BLUE: Final = "#2563eb"
LIGHT_BLUE: Final = "#93c5fd"
GREEN: Final = "#059669"
GREY: Final = "#6b7280"
FONT: Final = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
# Sections drawn across the whole page; the others share a row on wide screens.
WIDE: Final = frozenset({"people", "retention"})


def plotly_js() -> str:
    """The minified plotly.js shipped inside the ``plotly`` package."""
    try:
        from plotly.offline import get_plotlyjs  # noqa: PLC0415 - the optional [report] extra
    except ImportError:
        raise ConfigError(
            "km2pg report draws its charts with plotly: pip install 'km2pg[report]'"
        ) from None
    return str(get_plotlyjs())


def make_report(settings: ConnectionSettings, request: Request, path: Path) -> Path:
    """Ask, print the tables, write the HTML file; returns its absolute path."""
    library = plotly_js()  # before the queries: a missing extra fails at once
    with db.connection(settings) as con:
        db.ensure_schema(con)
        report = gather(con, plan_report(con, request), settings.describe())
    print_report(report)
    size = write_report(report, path, library)
    path = path.resolve()
    print(f"\nreport written to {path} ({size / 1e6:.1f} MB, opens offline)")
    return path


def write_report(report: Report, path: Path, library: str) -> int:
    """Write the HTML file; returns its size in bytes."""
    text = render(report, library)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path.stat().st_size


def render(report: Report, library: str) -> str:
    plan = report.plan
    figures = {
        f"chart-{s.key}": figure(s) for s in report.sections if s.table is not None and s.table.rows
    }
    version = re.search(r"plotly\.js v([\d.]+)", library[:400])
    title = f"km2pg report, {plan.since} to {plan.until}"
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            f"<style>{CSS}</style>",
            f"<script>{_script_safe(library)}</script>",
            "</head><body>",
            _header(report),
            "<main>",
            *(_section(s, f"chart-{s.key}" in figures) for s in report.sections),
            "</main>",
            "<footer>Made by <code>km2pg report</code>. Charts by plotly.js "
            f"{_e(version.group(1) if version else '')}, inside this file: it opens offline. "
            "Every number comes from the SQL shown under each chart.</footer>",
            f"<script>const FIGURES = {_json(figures)};\n{DRAW}</script>",
            "</body></html>",
        ]
    )


# ---------------------------------------------------------------------------------------------
# Page


def _header(report: Report) -> str:
    plan, totals = report.plan, report.totals
    kpis = "".join(
        f'<div class="kpi"><b>{totals[k]:,}</b><span>{label}</span></div>'
        for k, label in (("people", "people"), ("identities", "identities"), ("events", "events"))
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in plan.notes)
    defaults = f'<ul class="notes"><li>Defaults used:</li>{notes}</ul>' if notes else ""
    return (
        "<header><h1>km2pg report</h1>"
        f'<p class="meta">{plan.since:%d %b %Y} to {plan.until:%d %b %Y} '
        f"(UTC, {plan.days} days, the end excluded) · {_e(report.database)} · "
        f"made {report.generated:%Y-%m-%d %H:%M} UTC</p>"
        f'<div class="kpis">{kpis}</div>{defaults}</header>'
    )


def _section(section: Section, drawn: bool) -> str:
    wide = " wide" if section.key in WIDE else ""
    parts = [f'<section class="card{wide}" id="{section.key}"><h2>{_e(section.title)}</h2>']
    if section.table is None:
        parts.append(f'<p class="absent">{_e(section.absent or "")}</p>')
    elif not drawn:
        parts.append('<p class="absent">nothing in this range</p>')
    else:
        parts.append(f'<div class="chart" id="chart-{section.key}"></div>')
        parts.append(_verdict(section))
    if section.table is not None:
        parts.append(
            "<details><summary>Numbers and SQL</summary>"
            f"<pre>{_e(section.sql)};</pre>{_html_table(section)}</details>"
        )
    parts.append("</section>")
    return "".join(parts)


def _verdict(section: Section) -> str:
    """Under the A/B chart: each variant against the control, in words."""
    if section.key != "ab_test" or section.table is None:
        return ""
    rows = section.table.rows
    control = rows[0][0]
    lines = []
    for variant, _people, _conv, rate, z, p, *_ in rows[1:]:
        if z is None or p is None:
            continue
        verdict = "significant at the 5% level" if p < Decimal("0.05") else "not significant"
        lines.append(
            f"<li><b>{_e(variant)}</b> converts at {fmt(rate, 'share')} against "
            f"{_e(control)}'s {fmt(rows[0][3], 'share')}: z = {float(z):.2f}, "
            f"p = {float(p):.3g}, {verdict}.</li>"
        )
    return f'<ul class="verdict">{"".join(lines)}</ul>' if lines else ""


def _html_table(section: Section) -> str:
    table = section.table
    assert table is not None
    if section.key == "retention":
        cohorts, periods, sizes, grid = retention_grid(table)
        head = ["cohort", "people", *(str(p) for p in periods)]
        body = [
            [str(c), fmt(sizes[c], "int"), *(fmt(v, "share") if v is not None else "" for v in r)]
            for c, r in zip(cohorts, grid, strict=True)
        ]
    else:
        head = list(table.columns)
        body = [[fmt(v, k) for v, k in zip(r, table.kinds, strict=True)] for r in table.rows]
    ths = "".join(f"<th>{_e(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{trs}</tbody></table>"


# ---------------------------------------------------------------------------------------------
# Figures (plotly JSON)


def figure(section: Section) -> Figure:
    assert section.table is not None
    makers = {
        "people": _people,
        "actions": _actions,
        "funnel": _funnel,
        "retention": _retention,
        "ab_test": _ab_test,
        "revenue": _revenue,
    }
    return makers[section.key](section.table)


def _layout(x: str, y: str, **extra: Any) -> dict[str, Any]:
    axis = {"gridcolor": "#e5e7eb", "zeroline": False, "automargin": True, "linecolor": "#9ca3af"}
    layout: dict[str, Any] = {
        "height": 340,
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "font": {"family": FONT, "size": 13, "color": "#1f2937"},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "showlegend": False,
        "hoverlabel": {"font": {"family": FONT}},
        "xaxis": {**axis, "title": {"text": x}},
        "yaxis": {**axis, "title": {"text": y}, "rangemode": "tozero"},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(layout.get(key), dict):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def _people(table: Table) -> Figure:
    days = [_day(d) for d in table.column("day")]
    trace = {
        "type": "bar",
        "x": days,
        "y": table.column("people"),
        "customdata": table.column("events"),
        "marker": {"color": BLUE},
        "hovertemplate": "%{x|%a %d %b %Y}<br>%{y:,} people<br>%{customdata:,} events"
        "<extra></extra>",
    }
    layout = _layout("day (UTC)", "people", xaxis={"type": "date", "tickformat": "%d %b"})
    return {"data": [trace], "layout": layout}


def _actions(table: Table) -> Figure:
    # Reversed, so the most common action is on top.
    names = [_e(a) for a in reversed(table.column("action"))]
    people = list(reversed(table.column("people")))
    trace = {
        "type": "bar",
        "orientation": "h",
        "y": names,
        "x": people,
        "text": [f"{p:,}" for p in people],
        "textposition": "auto",
        "customdata": list(reversed(table.column("events"))),
        "marker": {"color": BLUE},
        "hovertemplate": "%{y}<br>%{x:,} people<br>%{customdata:,} events<extra></extra>",
    }
    height = max(240, 60 + 30 * len(names))
    return {"data": [trace], "layout": _layout("people who did it", "", height=height)}


def _funnel(table: Table) -> Figure:
    labels = [
        f"{s}. {_e(a)}" for s, a in zip(table.column("step"), table.column("action"), strict=True)
    ]
    people = table.column("people")
    shares = table.column("of_first")
    text = [
        f"{p:,}<br>{fmt(s, 'share')}" if s is not None else f"{p:,}"
        for p, s in zip(people, shares, strict=True)
    ]
    trace = {
        "type": "bar",
        "x": labels,
        "y": people,
        "text": text,
        "textposition": "outside",
        "cliponaxis": False,
        "customdata": [_float(v) for v in table.column("of_previous")],
        "marker": {"color": [BLUE, *[LIGHT_BLUE] * (len(people) - 1)]},
        "hovertemplate": "%{x}<br>%{y:,} people<br>%{customdata:.1%} of the step before"
        "<extra></extra>",
    }
    top = max(people) if people else 0
    layout = _layout("step", "people", yaxis={"range": [0, top * 1.25 or 1]})
    return {"data": [trace], "layout": layout}


def _retention(table: Table) -> Figure:
    cohorts, periods, sizes, grid = retention_grid(table)
    z = [[None if v is None else round(100 * float(v), 1) for v in row] for row in grid]
    later = [v for row in z for v in row[1:] if v is not None]
    everything = [v for row in z for v in row if v is not None]
    # Period 0 is near 100% by construction; scale the colours to the later periods.
    top = max(later or everything or [1.0]) or 1.0
    trace = {
        "type": "heatmap",
        "z": z,
        "x": [str(p) for p in periods],
        "y": [f"{c:%d %b %Y} ({sizes[c]:,})" for c in cohorts],
        "zmin": 0,
        "zmax": top,
        "colorscale": [[0, "#eff6ff"], [0.5, "#60a5fa"], [1, "#1e3a8a"]],
        "text": [["" if v is None else f"{v:.1f}%" for v in row] for row in z],
        "texttemplate": "%{text}",
        "hoverongaps": False,
        "xgap": 2,
        "ygap": 2,
        "colorbar": {"title": {"text": "% back"}, "ticksuffix": "%", "thickness": 12},
        "hovertemplate": "cohort %{y}<br>period %{x}: %{z:.1f}% came back<extra></extra>",
    }
    height = max(260, 90 + 34 * len(cohorts))
    layout = _layout(
        "periods after the first action (0 = the cohort's own period)",
        "cohort (people)",
        height=height,
        xaxis={"type": "category", "gridcolor": "white", "linecolor": "white"},
        yaxis={
            "type": "category",
            "autorange": "reversed",
            "gridcolor": "white",
            "rangemode": "normal",
        },
    )
    return {"data": [trace], "layout": layout}


def _ab_test(table: Table) -> Figure:
    rates = [100 * _float0(v) for v in table.column("rate")]
    low = [100 * _float0(v) for v in table.column("low")]
    high = [100 * _float0(v) for v in table.column("high")]
    labels = [
        f"{_e(v)}<br>{p:,} people"
        for v, p in zip(table.column("variant"), table.column("people"), strict=True)
    ]
    trace = {
        "type": "bar",
        "x": labels,
        "y": rates,
        "text": [f"{r:.1f}%" for r in rates],
        "textposition": "inside",
        "insidetextanchor": "start",
        "textfont": {"color": "white"},
        "marker": {"color": [GREY, *[BLUE] * (len(rates) - 1)]},
        "error_y": {
            "type": "data",
            "symmetric": False,
            "array": [h - r for h, r in zip(high, rates, strict=True)],
            "arrayminus": [r - lo for r, lo in zip(rates, low, strict=True)],
            "color": "#111827",
            "thickness": 1.5,
            "width": 8,
        },
        "customdata": [[lo, h] for lo, h in zip(low, high, strict=True)],
        "hovertemplate": "%{x}<br>%{y:.2f}% converted<br>95% interval %{customdata[0]:.2f}% "
        "to %{customdata[1]:.2f}%<extra></extra>",
    }
    layout = _layout(
        "variant (grey: the control, the one with the most people)",
        "conversion rate, % (95% interval)",
        yaxis={"ticksuffix": "%"},
    )
    return {"data": [trace], "layout": layout}


def _revenue(table: Table) -> Figure:
    periods = [_day(d) for d in table.column("period_start")]
    revenue = [_float0(v) for v in table.column("revenue")]
    bars = {
        "type": "bar",
        "name": "revenue",
        "x": periods,
        "y": revenue,
        "marker": {"color": [GREEN if r >= 0 else "#dc2626" for r in revenue]},
        "customdata": [_float0(v) for v in table.column("per_payer")],
        "hovertemplate": "%{x|%d %b %Y}<br>revenue %{y:,.2f}<br>%{customdata:,.2f} per payer"
        "<extra></extra>",
    }
    payers = {
        "type": "scatter",
        "mode": "lines+markers",
        "name": "payers",
        "x": periods,
        "y": table.column("payers"),
        "yaxis": "y2",
        "line": {"color": "#f59e0b", "width": 2},
        "hovertemplate": "%{x|%d %b %Y}<br>%{y:,} payers<extra></extra>",
    }
    layout = _layout(
        "period start (UTC)",
        "revenue",
        showlegend=True,
        legend={"orientation": "h", "y": 1.12, "x": 0},
        xaxis={"type": "date", "tickformat": "%d %b"},
        yaxis={"tickformat": ",.0f"},
        yaxis2={
            "title": {"text": "payers"},
            "dtick": _integer_step(max(table.column("payers"), default=1)),
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "showgrid": False,
            "automargin": True,
        },
    )
    return {"data": [bars, payers], "layout": layout}


# ---------------------------------------------------------------------------------------------
# Helpers


def _e(text: Any) -> str:
    return html.escape(str(text))


def _day(value: date) -> str:
    return value.isoformat()


def _integer_step(top: int, ticks: int = 5) -> int:
    """A whole, round tick step for counts up to top (no "6.5 payers")."""
    raw = max(1.0, top / ticks)
    magnitude = 10 ** math.floor(math.log10(raw))
    return int(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _float0(value: Any) -> float:
    return 0.0 if value is None else float(value)


def _json(value: Any) -> str:
    # "<" escaped, so no data can close the script element.
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")


def _script_safe(js: str) -> str:
    return js.replace("</script", "<\\/script")


# Each chart marks itself drawn (data-drawn) once plotly has rendered it; the browser test waits
# for that. Sizes follow the window (responsive) and the page (a resize after layout).
DRAW: Final = """
const CONFIG = {displayModeBar: false, responsive: true};
for (const [id, fig] of Object.entries(FIGURES)) {
  const div = document.getElementById(id);
  Plotly.newPlot(div, fig.data, fig.layout, CONFIG).then(() => { div.dataset.drawn = "1"; });
}
"""

CSS: Final = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f3f4f6; color: #1f2937; font: 15px/1.45 FONT_FAMILY; }
header, main, footer { max-width: 1240px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 24px; }
h1 { margin: 0 0 4px; font-size: 26px; }
.meta { margin: 0 0 16px; color: #4b5563; }
.kpis { display: flex; gap: 12px; flex-wrap: wrap; }
.kpi { background: white; border-radius: 10px; padding: 10px 18px; min-width: 150px;
       box-shadow: 0 1px 2px rgba(0,0,0,.06); }
.kpi b { display: block; font-size: 24px; font-variant-numeric: tabular-nums; }
.kpi span { color: #6b7280; font-size: 13px; }
.notes { list-style: none; padding: 0; margin: 12px 0 0; color: #6b7280; font-size: 13px; }
.notes li { display: inline; margin-right: 14px; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px;
       padding-top: 16px; padding-bottom: 16px; }
.card { background: white; border-radius: 10px; padding: 14px 18px 10px;
        box-shadow: 0 1px 2px rgba(0,0,0,.06); min-width: 0; }
.card.wide { grid-column: 1 / -1; }
h2 { margin: 0 0 6px; font-size: 17px; }
.chart { width: 100%; min-height: 240px; }
.absent { color: #6b7280; font-style: italic; }
.verdict { margin: 6px 0; padding-left: 18px; font-size: 14px; }
details { margin-top: 6px; font-size: 13px; }
summary { cursor: pointer; color: #2563eb; }
pre { background: #f9fafb; padding: 8px; border-radius: 6px; white-space: pre-wrap; }
table { border-collapse: collapse; margin: 6px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e5e7eb; text-align: right; }
th:first-child, td:first-child { text-align: left; }
footer { color: #6b7280; font-size: 13px; padding-bottom: 24px; }
""".replace("FONT_FAMILY", FONT)
