"""Plots of a run from its lineage: the Pareto front, and the search's progress.

Each plot is written as a PNG (matplotlib, Agg) or as one self-contained HTML page (plotly, with
plotly.js inlined: it opens without a network), chosen by the file's suffix. In the HTML, hovering
a point shows the candidate, its genome and its measurements.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tvnsearch.errors import InputError
from tvnsearch.files import atomic_write_bytes
from tvnsearch.inspect.figures import (
    DEVICE_COLUMNS,
    FRONT_COLOUR,
    HYPERVOLUME_COLOUR,
    LOG_SCALE,
    OTHER_COLOUR,
    REJECTED_COLOUR,
    SHARE_RANGE,
    axis_label,
    maximised,
    progress_table,
)
from tvnsearch.inspect.hypervolume import Reference, describe_reference, reference_for
from tvnsearch.inspect.pareto import candidates, pareto_front
from tvnsearch.inspect.plots_html import pareto_html, progress_html

if TYPE_CHECKING:
    from matplotlib.axes import Axes

SUFFIXES = (".png", ".html")
MAX_LABELS = 40  # front points named in a PNG; more would overlap into a smudge


def write_pareto_plot(frame: pd.DataFrame, objectives: Sequence[str], path: str | Path) -> Path:
    """Plot every trained candidate over 2 or 3 objectives (x, y, colour) with the front
    highlighted; a ``.png`` or a self-contained ``.html`` by the suffix of ``path``."""
    writer = _pareto_png if _suffix(path) == ".png" else pareto_html
    rows, on_front, title = pareto_inputs(frame, objectives)
    writer(rows, on_front, tuple(objectives), Path(path), title)
    return Path(path)


def pareto_inputs(
    frame: pd.DataFrame, objectives: Sequence[str]
) -> tuple[pd.DataFrame, np.ndarray, str]:
    """What a Pareto plot draws (in a page, a PNG or the run's report): the trained rows with
    every objective, which of them are on the front, and the title."""
    rows = candidates(frame, objectives).reset_index(drop=True)
    front_ids = set(pareto_front(frame, objectives)["candidate_id"].tolist())
    on_front = rows["candidate_id"].isin(front_ids).to_numpy(dtype=bool)
    return rows, on_front, _title(frame, rows, on_front, objectives)


def write_progress_plot(
    frame: pd.DataFrame, path: str | Path, reference: Reference | None = None
) -> Path:
    """Plot the best fitness so far and the share rejected so far against candidates told, and
    below them the hypervolume of the front so far (``progress_table``)."""
    writer = _progress_png if _suffix(path) == ".png" else progress_html
    progress, title, fitness, volume = progress_inputs(frame, reference)
    writer(progress, Path(path), title, fitness, volume)
    return Path(path)


def progress_inputs(
    frame: pd.DataFrame, reference: Reference | None = None
) -> tuple[pd.DataFrame, str, str, str]:
    """What a progress plot draws: the ``progress_table`` over ``reference`` (default:
    ``reference_for(frame)``), the title, the fitness axis's title and the hypervolume's."""
    reference = reference or reference_for(frame)
    title = f"{_run_name(frame)}: progress of the search"
    volume = f"hypervolume over {describe_reference(reference)}"
    return progress_table(frame, reference), title, axis_label("fitness", frame), volume


def _suffix(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(str(path), f"a plot must end in .png or .html, but got {suffix!r}")
    return suffix


def _run_name(frame: pd.DataFrame) -> str:
    names = frame["run_id"].dropna().unique() if "run_id" in frame else []
    return str(names[0]) if len(names) == 1 else "run"


def _title(
    frame: pd.DataFrame, rows: pd.DataFrame, on_front: np.ndarray, objectives: Sequence[str]
) -> str:
    num_front, num_rows = int(on_front.sum()), len(rows)
    title = f"{_run_name(frame)}: {num_rows:,} trained candidates, {num_front:,} non-dominated"
    for name in objectives:
        if name in DEVICE_COLUMNS:
            devices = rows[DEVICE_COLUMNS[name]].dropna().unique()
            where = devices[0] if len(devices) == 1 else f"{len(devices)} different devices"
            title += f"\n{name} measured on {where}"
    return title


def _write_png(path: Path, fig: Any) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def _figure() -> Any:
    # The Agg canvas directly: no pyplot state, no display needed, safe in any thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _pareto_png(
    rows: pd.DataFrame, on_front: np.ndarray, objectives: tuple[str, ...], path: Path, title: str
) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    x, y = (rows[n].to_numpy(dtype=np.float64) for n in objectives[:2])
    if len(objectives) == 3:
        _colour_by(fig, ax, rows, on_front, objectives)
    else:
        ax.scatter(x[~on_front], y[~on_front], s=22, c=OTHER_COLOUR, label="dominated")
        order = np.argsort(x[on_front], kind="stable")
        where = "pre" if maximised(objectives[0]) else "post"
        fx, fy = x[on_front][order], y[on_front][order]
        ax.step(fx, fy, where=where, color=FRONT_COLOUR, linewidth=1.5, zorder=2)
        dots = ax.scatter(fx, fy, s=55, c=FRONT_COLOUR, label="non-dominated", zorder=3)
        dots.set(edgecolors="black")
    labelled = on_front if on_front.sum() <= MAX_LABELS else np.zeros_like(on_front)
    for ident, px, py in zip(rows["candidate_id"][labelled], x[labelled], y[labelled], strict=True):
        ax.annotate(f"#{ident}", (px, py), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel(axis_label(objectives[0], rows))
    ax.set_ylabel(axis_label(objectives[1], rows))
    ax.set_xscale("log" if objectives[0] in LOG_SCALE else "linear")
    ax.set_yscale("log" if objectives[1] in LOG_SCALE else "linear")
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=11)
    ax.legend(loc="best")
    _write_png(path, fig)


def _colour_by(
    fig: Any, ax: Axes, rows: pd.DataFrame, on_front: np.ndarray, objectives: tuple[str, ...]
) -> None:
    from matplotlib.colors import LogNorm, Normalize

    x, y, z = (rows[n].to_numpy(dtype=np.float64) for n in objectives)
    norm = (LogNorm if objectives[2] in LOG_SCALE else Normalize)(z.min(), z.max())
    style = {"cmap": "viridis", "norm": norm}
    ax.scatter(x[~on_front], y[~on_front], c=z[~on_front], s=22, label="dominated", **style)
    dots = ax.scatter(x[on_front], y[on_front], c=z[on_front], s=70, marker="D", **style)
    dots.set(edgecolors="black", linewidths=1.2, zorder=3, label="non-dominated")
    fig.colorbar(dots, ax=ax, label=axis_label(objectives[2], rows))


def _progress_png(
    progress: pd.DataFrame, path: Path, title: str, fitness: str, volume: str
) -> None:
    fig = _figure()
    ax, below = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    told = progress["told"].to_numpy()
    ax.scatter(told, progress["fitness"], s=14, c=OTHER_COLOUR, label="fitness of each trained")
    ax.step(told, progress["best_fitness"], where="post", color=FRONT_COLOUR, label="best so far")
    ax.set_ylabel(fitness)
    ax.grid(True, alpha=0.3)
    share = ax.twinx()
    rejected = progress["rejected_share"] * 100
    style = {"color": REJECTED_COLOUR, "alpha": 0.6, "linewidth": 1}
    share.plot(told, rejected, label="share rejected", **style)
    share.set_ylabel("share rejected so far (%)", color=REJECTED_COLOUR)
    share.set_ylim(*SHARE_RANGE)  # the best fitness gets headroom too, below
    share.set_yticks(range(0, 101, 20))
    ax.margins(y=0.08)
    handles = ax.get_legend_handles_labels()
    more = share.get_legend_handles_labels()
    # Below the axes: inside, it would hide points of one axis or the other.
    fig.legend(handles[0] + more[0], handles[1] + more[1], loc="outside lower center", ncols=3)
    ax.set_title(title, fontsize=11)
    below.step(told, progress["hypervolume"], where="post", color=HYPERVOLUME_COLOUR)
    below.set_title(volume, fontsize=9)
    below.set_ylabel("hypervolume so far")
    below.set_ylim(bottom=0)
    below.set_xlabel("candidates evaluated (in the order told)")
    below.grid(True, alpha=0.3)
    _write_png(path, fig)
