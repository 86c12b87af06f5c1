"""The interactive HTML pages of ``tvnsearch.inspect.plots``: plotly, with plotly.js inlined so
that a page opens without a network; hovering a point shows its candidate, genome and measurements.

Each page's figure is built apart from its writing (``pareto_figure``, ``progress_figure``), so
that the run's report (``tvnsearch.inspect.report``) composes the same figures in one page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tvnsearch.files import atomic_write_text
from tvnsearch.inspect.figures import (
    FRONT_COLOUR,
    HYPERVOLUME_COLOUR,
    LOG_SCALE,
    OTHER_COLOUR,
    REJECTED_COLOUR,
    SHARE_RANGE,
    axis_label,
    hover_text,
    maximised,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go


def pareto_html(
    rows: pd.DataFrame, on_front: np.ndarray, objectives: tuple[str, ...], path: Path, title: str
) -> None:
    write_page(pareto_figure(rows, on_front, objectives, title), path)


def progress_html(
    progress: pd.DataFrame, path: Path, title: str, fitness: str, volume: str
) -> None:
    write_page(progress_figure(progress, title, fitness, volume), path)


def write_page(fig: go.Figure, path: Path) -> None:
    """One figure as a whole page, plotly.js inlined."""
    atomic_write_text(path, fig.to_html(include_plotlyjs=True, full_html=True))


def pareto_figure(
    rows: pd.DataFrame, on_front: np.ndarray, objectives: tuple[str, ...], title: str
) -> go.Figure:
    """The trained ``rows`` over 2 or 3 objectives (x, y, colour), ``on_front`` highlighted, each
    point hovered with its candidate (``hover_text``)."""
    import plotly.graph_objects as go

    texts = np.array([hover_text(row) for _, row in rows.iterrows()], dtype=object)
    x, y = (rows[n].to_numpy(dtype=np.float64) for n in objectives[:2])
    fig = go.Figure()
    for name, mask in (("dominated", ~on_front), ("non-dominated", on_front)):
        marker = _marker(rows, mask, objectives, front=name == "non-dominated")
        hover = {"hovertext": texts[mask], "hovertemplate": "%{hovertext}<extra></extra>"}
        fig.add_scatter(x=x[mask], y=y[mask], mode="markers", name=name, marker=marker, **hover)
    if len(objectives) == 2:
        order = np.argsort(x[on_front], kind="stable")
        line = {"color": FRONT_COLOUR, "shape": "vh" if maximised(objectives[0]) else "hv"}
        fx, fy = x[on_front][order], y[on_front][order]
        fig.add_scatter(x=fx, y=fy, mode="lines", name="front", line=line, hoverinfo="skip")
    else:
        colour_bar = {"title": axis_label(objectives[2], rows)}
        if objectives[2] in LOG_SCALE:  # coloured by log10: label the ticks with the counts
            colour_bar |= {
                "tickvals": list(range(13)),
                "ticktext": [f"{10**t:,}" for t in range(13)],
            }
        fig.update_layout(coloraxis={"colorscale": "Viridis", "colorbar": colour_bar})
    _layout(fig, rows, objectives, title)
    return fig


def _marker(
    rows: pd.DataFrame, mask: np.ndarray, objectives: tuple[str, ...], *, front: bool
) -> dict[str, Any]:
    marker: dict[str, Any] = {"size": 13 if front else 8, "line": {"width": 1, "color": "black"}}
    if len(objectives) == 2:
        return marker | {"color": FRONT_COLOUR if front else OTHER_COLOUR}
    z = rows[objectives[2]].to_numpy(dtype=np.float64)[mask]
    z = np.log10(z) if objectives[2] in LOG_SCALE else z
    marker |= {"color": z, "coloraxis": "coloraxis"}
    return marker | ({"symbol": "diamond"} if front else {"opacity": 0.7})


def _layout(fig: Any, rows: pd.DataFrame, objectives: Sequence[str], title: str) -> None:
    axis_type = {n: "log" if n in LOG_SCALE else "linear" for n in objectives}
    fig.update_layout(
        title={"text": title.replace("\n", "<br><sup>") + ("</sup>" if "\n" in title else "")},
        xaxis={"title": axis_label(objectives[0], rows), "type": axis_type[objectives[0]]},
        yaxis={"title": axis_label(objectives[1], rows), "type": axis_type[objectives[1]]},
        hoverlabel={"align": "left"},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.15},
    )


def progress_figure(progress: pd.DataFrame, title: str, fitness: str, volume: str) -> go.Figure:
    """A ``progress_table`` drawn: each fitness and the best so far with the share rejected so far
    (``fitness`` and ``volume`` title the axes), and the hypervolume so far below."""
    import plotly.graph_objects as go

    told = progress["told"]
    best = [f"best so far {v:.4f}" if not math.isnan(v) else "" for v in progress["best_fitness"]]
    each = {"customdata": progress["candidate_id"], "marker_color": OTHER_COLOUR}
    each["hovertemplate"] = "candidate %{customdata}: fitness %{y:.4f}<extra></extra>"
    best_line = {"line": {"color": FRONT_COLOUR, "shape": "hv"}, "text": best, "hoverinfo": "text"}
    share = {"line_color": REJECTED_COLOUR, "yaxis": "y2", "mode": "lines"}
    fig = go.Figure()
    fig.add_scatter(x=told, y=progress["fitness"], mode="markers", name="each trained", **each)
    fig.add_scatter(
        x=told, y=progress["best_fitness"], name="best so far", mode="lines", **best_line
    )
    fig.add_scatter(x=told, y=progress["rejected_share"] * 100, name="share rejected", **share)
    below = {"line": {"color": HYPERVOLUME_COLOUR, "shape": "hv"}, "yaxis": "y3"}
    fig.add_scatter(x=told, y=progress["hypervolume"], name="hypervolume", mode="lines", **below)
    right = {"overlaying": "y", "side": "right", "range": list(SHARE_RANGE), "showgrid": False}
    fig.update_layout(
        title={"text": f"{title}<br><sup>below: {volume}</sup>"},
        # One x axis under both panels: fitness and share above, hypervolume below.
        xaxis={"title": "candidates evaluated (in the order told)", "anchor": "y3"},
        yaxis={"title": fitness, "domain": [0.38, 1.0]},
        yaxis3={"title": "hypervolume so far", "domain": [0.0, 0.28], "rangemode": "tozero"},
        yaxis2={"title": "share rejected so far (%)", "tickmode": "linear", "dtick": 20, **right},
        hovermode="x unified",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.15},
    )
    return fig
