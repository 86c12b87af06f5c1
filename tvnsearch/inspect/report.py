"""A run's report: one self-contained HTML page, rewritten while the search runs.

The page holds plotly.js once, inline, and every figure after it: it opens from the run folder
without a network, and fetches nothing (no CDN, no web fonts). From the top: the summary
(``tvnsearch.inspect.summary``, the same facts a terminal prints), the progress of the search,
the Pareto front, the lineage tree (click a candidate to follow its ancestry), why candidates
were rejected or failed (with links to their logs, which lie in the run folder beside it), and
what the gate cost. While the search runs the page reloads itself every few seconds, until the
browser has seen it unchanged for ``STALE_SECONDS``: then it says that the driver may have
stopped (a running search rewrites it more often than that, new candidates or not).
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tvnsearch.files import atomic_write_text
from tvnsearch.inspect.figures import DEVICE_COLUMNS, number
from tvnsearch.inspect.hypervolume import in_told_order
from tvnsearch.inspect.lineage_tree import ANCESTRY_SCRIPT, STATUS_COLOURS, lineage_figure
from tvnsearch.inspect.plots import pareto_inputs, progress_inputs
from tvnsearch.inspect.plots_html import pareto_figure, progress_figure
from tvnsearch.inspect.summary import (
    RunSummary,
    best_table,
    facts,
    gate_share,
    headline,
    summarize,
)
from tvnsearch.search.progress import counts_line
from tvnsearch.search.recipe import RunConfig
from tvnsearch.status import Status

if TYPE_CHECKING:
    import plotly.graph_objects as go

REPORT_FILE = "report.html"  # in the run folder
STALE_SECONDS = 600.0  # a live page seen unchanged this long stops reloading, and says so
MAX_FAILED_ROWS = 100  # failed candidates listed, the last told; the rest are counted
GATE_STATUSES = (Status.TRAINED, Status.REJECTED, Status.FAILED)  # duplicates: copies, no cost
NUMBER = re.compile(r"#?-?[\d,]*\.?\d+[kMG]?|-")  # a table cell right-aligned: ids, figures
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em 3em;
  color: #222; max-width: 1400px; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.state { font-size: 1.1em; } .stale { color: #b00; font-weight: bold; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { padding: 0.2em 0.7em; text-align: left; border-bottom: 1px solid #eee; }
th { background: #f5f5f5; } .number { text-align: right; }
.bar { background: #1f77b4; height: 0.8em; min-width: 1px; }
.note { color: #555; }
"""


def write_report(
    frame: pd.DataFrame,
    config: RunConfig,
    path: Path,
    *,
    live: bool,
    note: str = "",
    updated_at: datetime | None = None,
    reload_seconds: float = 5.0,
) -> Path:
    """Write the report of a lineage frame of the run ``config`` describes to ``path`` (whole,
    or not at all). ``live``: the search is running, and the page reloads itself every
    ``reload_seconds`` while ``updated_at`` (default: now) is recent; ``note`` says how the
    search ended, where it did not complete."""
    updated_at = updated_at or datetime.now(UTC)
    summary = summarize(frame, config)
    stamp = f"{updated_at.astimezone(UTC):%H:%M:%S} UTC"
    state = f"running — updated {stamp}" if live else note or _ended(summary)
    body = [_header(summary, state)]
    if frame.empty:
        body.append('<p class="note">Nothing has been told yet: no candidate to show.</p>')
    else:
        body += [_progress(frame, summary), _pareto(frame, summary), _lineage(frame)]
        body += [_rejections(frame), _gate(frame, summary)]
    script = _reload_script(updated_at, reload_seconds) if live else ""
    atomic_write_text(path, _page(summary.run, body, plotly=not frame.empty, script=script))
    return Path(path)


def _ended(summary: RunSummary) -> str:
    return "complete" if summary.complete else "not running, unfinished"


def _page(title: str, body: list[str], *, plotly: bool, script: str) -> str:
    from plotly.offline import get_plotlyjs

    library = f"<script>{get_plotlyjs()}</script>" if plotly else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}: tvnsearch report</title>\n<style>{STYLE}</style>\n"
        f"<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>\n{library}\n"
        f"</head>\n<body>\n{''.join(body)}\n{script}\n</body>\n</html>\n"
    )


def _embed(fig: go.Figure, *, height: int = 520, script: str | None = None) -> str:
    """A figure's div, drawn by the page's plotly.js; ``script`` runs once it is drawn."""
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        post_script=script,
        default_height=f"{fig.layout.height or height}px",
        config={"displaylogo": False},
    )


def _header(summary: RunSummary, state: str) -> str:
    rows = "".join(
        f"<tr><th>{label}</th><td>{html.escape(text)}</td></tr>" for label, text in facts(summary)
    )
    best = best_table(summary).map(html.escape)
    table = _table(list(best.columns), best.to_numpy().tolist()) if len(best) else ""
    return (
        f"<h1>{html.escape(summary.run)}</h1>\n"
        f'<p class="state">{html.escape(headline(summary))}: <span id="state">'
        f"{html.escape(state)}</span></p>\n"
        f"<p>{counts_line(summary.counts)}</p>\n<table>{rows}</table>\n"
        + (f"<h3>The best candidates</h3>\n{table}\n" if table else "")
    )


def _progress(frame: pd.DataFrame, summary: RunSummary) -> str:
    fig = progress_figure(*progress_inputs(frame, summary.reference))
    return f'<h2 id="progress">Progress</h2>\n{_embed(fig, height=620)}'


def _pareto(frame: pd.DataFrame, summary: RunSummary) -> str:
    objectives = summary.objectives[::-1]  # fitness up, as in the other figures
    rows, on_front, title = pareto_inputs(frame, objectives)
    if rows.empty:
        over = " x ".join(summary.objectives)
        why = f"Nothing is trained yet over {over}."
        return f'<h2 id="pareto">Pareto front</h2>\n<p class="note">{why}</p>'
    fig = pareto_figure(rows, on_front, objectives, title)
    return f'<h2 id="pareto">Pareto front</h2>\n{_embed(fig, height=620)}'


def _lineage(frame: pd.DataFrame) -> str:
    how = (
        "Each candidate in the order told, at its fitness; a line joins each parent to each "
        "child, faint and dotted to a child rejected, failed or duplicated, drawn at its "
        "parent's fitness. Hover midway along a line for its mutation; click a candidate to "
        "draw its ancestry."
    )
    figure = _embed(lineage_figure(frame), script=ANCESTRY_SCRIPT)
    return f'<h2 id="lineage">Lineage</h2>\n<p class="note">{how}</p>\n{figure}'


def _rejections(frame: pd.DataFrame) -> str:
    """Counts of the rejected by the constraint their reason names first, with an example; the
    failed, each with its reason and a link to its log."""
    rejected = frame[frame["status"].eq(str(Status.REJECTED)).to_numpy(dtype=bool)]
    reasons = rejected["reason"].fillna("(no reason given)").astype(str)
    named = pd.DataFrame({"constraint": reasons.str.split(":", n=1).str[0], "reason": reasons})
    groups = named.groupby("constraint")["reason"].agg(["size", "first"])
    groups = groups.sort_values("size", ascending=False, kind="stable")
    rows = [
        [html.escape(name), f"{count:,}", _bar(count / len(rejected)), html.escape(example)]
        for name, count, example in groups.itertuples()
    ]
    table = _table(["constraint", "rejected", "", "e.g."], rows)
    return f'<h2 id="rejected">Rejected</h2>\n{table}\n{_failures(frame)}'


def _failures(frame: pd.DataFrame) -> str:
    failed = frame[frame["status"].eq(str(Status.FAILED)).to_numpy(dtype=bool)]
    shown = failed.tail(MAX_FAILED_ROWS)
    rows = [
        [str(i), html.escape(number(why, "")), _link(log)]
        for i, why, log in zip(shown["candidate_id"], shown["reason"], shown["log"], strict=True)
    ]
    more = "" if len(shown) == len(failed) else f" (the last {len(shown)} told)"
    table = _table(["candidate", "reason", "log"], rows)
    return f"<h3>Failed: {len(failed):,}{more}</h3>\n{table}"


def _gate(frame: pd.DataFrame, summary: RunSummary) -> str:
    """Seconds in the gate per candidate by status, and how many were decided without a
    measurement (counted, bounded or predicted) against how many were measured."""
    frame = in_told_order(frame)
    measured = frame[list(DEVICE_COLUMNS.values())].notna().any(axis=1).to_numpy(dtype=bool)
    seconds = frame["profile_seconds"].to_numpy(dtype=np.float64, na_value=np.nan)
    rows = []
    for status in GATE_STATUSES:
        mine = frame["status"].eq(str(status)).to_numpy(dtype=bool)
        decided = [f"{(mine & ~measured).sum():,}", f"{(mine & measured).sum():,}"]
        rows.append([str(status), *decided, f"{np.nansum(seconds[mine]):,.1f}"])
    heads = ["status", "decided without a measurement", "measured", "seconds in the gate"]
    total = html.escape(gate_share(summary.measure_seconds, summary.train_seconds))
    return (
        '<h2 id="gate">The gate\'s costs</h2>\n'
        f"<p>{total}; duplicates left out, whose measurements are "
        f"copies</p>\n{_table(heads, rows)}\n{_embed(_gate_figure(frame, seconds), height=420)}"
    )


def _gate_figure(frame: pd.DataFrame, seconds: np.ndarray) -> go.Figure:
    """Each candidate's seconds in the gate against the order told, by status."""
    import plotly.graph_objects as go

    told = np.arange(1, len(frame) + 1)
    fig = go.Figure()
    for status in GATE_STATUSES:
        mine = frame["status"].eq(str(status)).to_numpy(dtype=bool)
        marker = {"color": STATUS_COLOURS[status], "size": 5}
        fig.add_scatter(x=told[mine], y=seconds[mine], mode="markers", name=status, marker=marker)
    fig.update_layout(
        xaxis={"title": "candidates told (in the order told)"},
        yaxis={"title": "seconds in the gate", "type": "log"},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _table(heads: list[str], rows: list[list[str]]) -> str:
    """An HTML table of cells already HTML, numbers right-aligned; "None." without rows."""
    if not rows:
        return '<p class="note">None.</p>'
    numeric = [bool(NUMBER.fullmatch(cell)) for cell in rows[0]]
    head = "".join(f"<th{_NUMERIC[n]}>{h}</th>" for h, n in zip(heads, numeric, strict=True))
    body = "".join(
        "<tr>"
        + "".join(f"<td{_NUMERIC[n]}>{c}</td>" for c, n in zip(row, numeric, strict=True))
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


_NUMERIC = {True: ' class="number"', False: ""}


def _bar(share: float) -> str:
    return f'<div class="bar" style="width: {200 * share:.0f}px"></div>'


def _link(log: object) -> str:
    """A link to a candidate's log: a path relative to the run folder, where the report is."""
    if pd.isna(log):
        return "-"
    path = html.escape(str(log))
    return f'<a href="{path}">{path}</a>'


def _reload_script(updated_at: datetime, reload_seconds: float) -> str:
    """Reload every ``reload_seconds``, keeping the scroll position, while the page changes; once
    the same page has been seen for ``STALE_SECONDS``, say so and stop. Judged by the browser's
    clock alone: the machine that writes the page may keep another time than the one reading."""
    since = f"{updated_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    settings = {
        "updated": updated_at.timestamp() * 1000,
        "every": reload_seconds * 1000,
        "stale": (STALE_SECONDS + reload_seconds) * 1000,
        "said": f"not updated since {since}, the driver may have stopped",
    }
    return f"<script>\nvar RELOAD = {json.dumps(settings)};\n{RELOAD_SCRIPT}</script>"


# The scroll position is kept across the page's own reloads only (a link to #lineage still
# scrolls there); ``seen`` is when this browser first saw the page of this ``updated``.
RELOAD_SCRIPT = """(function () {
  var key = "tvnsearch:" + location.pathname, state = document.getElementById("state"), last;
  try { last = JSON.parse(sessionStorage.getItem(key)); } catch (e) {}
  if (last && last.scroll !== undefined) window.scrollTo(0, last.scroll);
  var seen = last && last.updated === RELOAD.updated ? last.seen : Date.now();
  if (Date.now() - seen > RELOAD.stale) {
    state.textContent = RELOAD.said; state.className = "stale"; return;
  }
  setTimeout(function () {
    var now = {updated: RELOAD.updated, seen: seen, scroll: window.scrollY};
    try { sessionStorage.setItem(key, JSON.stringify(now)); } catch (e) {}
    location.reload();
  }, RELOAD.every);
})();
"""
