"""The facts of a run's summary, in one place for the terminal and the HTML report.

``summarize`` reads them from a lineage frame and the run's recipe: what was told, by final
status; the fittest genomes; the front over the hypervolume's default objectives under the run's
constraints; where the time went. The gate's and training's seconds leave duplicates out: their
measurements are copies of the first evaluation's, and cost nothing again. ``summary_table`` is
what a terminal prints when a search ends; the report (``tvnsearch.inspect.report``) shows the
same ``facts`` and ``best_table``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tvnsearch.inspect.figures import number
from tvnsearch.inspect.hypervolume import RUNTIMES, Reference, config_reference
from tvnsearch.inspect.pareto import pareto_front
from tvnsearch.search.lineage import best
from tvnsearch.search.progress import counts_line
from tvnsearch.search.recipe import RunConfig
from tvnsearch.search.runs import pace, tally_of
from tvnsearch.status import FINAL, Status

MAX_WIDTH = 100  # columns of a terminal's summary; a long mutation is cut to fit


@dataclass(frozen=True)
class RunSummary:
    """What a run's summary says, each fact once."""

    run: str
    strategy: str
    budget: int
    num_trained: int | None  # trained candidates wanted; None: the whole budget
    counts: dict[str, int]  # candidates told by final status, every one of ``FINAL``
    complete: bool
    # ``lineage.best``: the fittest genomes, fittest first
    best: pd.DataFrame = field(compare=False)
    # The front's objectives and the hypervolume's reference point, as ``tvnsearch status``
    # measures them (``tvnsearch.inspect.hypervolume.config_reference``).
    reference: Reference
    front_size: int
    measure_seconds: float  # in the gate (``profile_seconds``), duplicates left out
    train_seconds: float  # in training, duplicates left out
    wall_seconds: float  # from the first ask to the last tell
    per_hour: float | None  # candidates told per hour of that; None: too short to say

    @property
    def told(self) -> int:
        return sum(self.counts.values())

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.reference.objectives

    @property
    def runtime(self) -> str | None:
        """The runtime column the table shows: the front's, else the first the best have."""
        measured = [c for c in RUNTIMES if c in self.objectives or self.best[c].notna().any()]
        return measured[0] if measured else None


def summarize(frame: pd.DataFrame, config: RunConfig, *, top: int = 5) -> RunSummary:
    """The summary of a lineage frame of the run ``config`` describes; ``top`` best genomes."""
    tally = tally_of(frame, config.search)
    reference = config_reference(config, frame)  # the front `tvnsearch status` measures
    copies = frame["status"].eq(str(Status.DUPLICATE)).fillna(False).to_numpy(dtype=bool)
    wall, per_hour = pace(frame)
    return RunSummary(
        run=_run_name(frame, config),
        strategy=config.search.strategy,
        budget=config.search.budget,
        num_trained=config.search.num_trained,
        counts={str(s): tally.counts[s] for s in FINAL},
        complete=tally.finished,
        best=best(frame, top),
        reference=reference,
        front_size=len(pareto_front(frame, reference.objectives)),
        measure_seconds=_total(frame.loc[~copies, "profile_seconds"]),
        train_seconds=_total(frame.loc[~copies, "train_seconds"]),
        wall_seconds=wall,
        per_hour=per_hour,
    )


def _run_name(frame: pd.DataFrame, config: RunConfig) -> str:
    names = frame["run_id"].dropna().unique()
    return str(names[0]) if len(names) == 1 else config.search.name


def _total(seconds: pd.Series) -> float:
    return float(seconds.to_numpy(dtype=np.float64, na_value=0.0).sum())


def headline(summary: RunSummary) -> str:
    """E.g. ``run-1: evolution, 13 of 20 candidates told (8 of 8 trained wanted)``."""
    wanted, trained = summary.num_trained, summary.counts[Status.TRAINED]
    goal = "" if wanted is None else f" ({trained} of {wanted} trained wanted)"
    told = f"{summary.told:,} of {summary.budget:,} candidates told"
    return f"{summary.run}: {summary.strategy}, {told}{goal}"


def facts(summary: RunSummary) -> list[tuple[str, str]]:
    """(label, text) of the summary's figures: the best, the front, the gate's costs, the pace."""
    lines = []
    if len(summary.best):
        top = summary.best.iloc[0]
        found = f"candidate {top['candidate_id']} (genome {top['genome_id']})"
        lines.append(("best", f"{top['fitness']:.4f}: {found}"))
    else:
        lines.append(("best", "- (nothing trained yet)"))
    over = " x ".join(summary.objectives)
    lines.append(("front", f"{summary.front_size:,} non-dominated over {over}"))
    lines.append(("gate", gate_share(summary.measure_seconds, summary.train_seconds)))
    rate = "-" if summary.per_hour is None else f"{summary.per_hour:,.1f} candidates/h"
    lines.append(("pace", f"{rate} ({duration(summary.wall_seconds)} from first ask to last tell)"))
    return lines


def gate_share(measure_seconds: float, train_seconds: float) -> str:
    """E.g. ``measuring 2m 03s vs training 40m 10s (5 % measuring)``."""
    spent = measure_seconds + train_seconds
    percent = 100 * measure_seconds / spent if spent > 0 else 0.0
    share = "-" if spent <= 0 else f"{percent:.{0 if percent >= 10 else 1}f} %"
    return (
        f"measuring {duration(measure_seconds)} vs training {duration(train_seconds)} "
        f"({share} measuring)"
    )


def duration(seconds: float) -> str:
    """``12.3s``, ``4m 05s``, ``2h 07m``: as precise as a person reads it."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def best_table(summary: RunSummary) -> pd.DataFrame:
    """The best candidates as text, one column per figure, "-" where missing: the runtime column
    only where one was measured, the iterations only where they differ (multi-fidelity)."""
    rows = summary.best
    table = {
        "id": rows["candidate_id"].map(str),
        "fitness": rows["fitness"].map(lambda v: number(v, ".4f")),
        "top-1": rows["top1"].map(lambda v: number(v, ".4f")),
        "top-5": rows["top5"].map(lambda v: number(v, ".4f")),
    }
    if summary.runtime is not None:
        table[summary.runtime] = rows[summary.runtime].map(lambda v: number(v, ".2f"))
    if rows["iterations"].nunique() > 1:
        table["iterations"] = rows["iterations"].map(lambda v: number(v, ","))
    table["params"] = rows["params"].map(lambda v: number(v, ","))
    table["FLOPs"] = rows["flops"].map(_flops)
    table["parent"] = rows["parent_id"].map(lambda v: "-" if pd.isna(v) else f"#{v}")
    table["mutation"] = rows["mutation"].map(str)
    return pd.DataFrame(table, columns=list(table))


def _flops(value: Any) -> str:
    return "-" if pd.isna(value) else f"{float(value) / 1e6:,.1f}M"


def summary_table(summary: RunSummary) -> str:
    """What a terminal prints when a search ends: the headline and the counts, the best
    candidates in fixed columns, and the ``facts``."""
    lines = [headline(summary), f"  {'told':<6} {counts_line(summary.counts)}"]
    table = best_table(summary)
    if len(table):
        lines += ["", *_fixed_width(table), ""]
    lines += [f"  {label:<6} {text}" for label, text in facts(summary)]
    return "\n".join(lines)


def _fixed_width(table: pd.DataFrame) -> list[str]:
    """The table's lines, right-aligned but for the last column, cut at ``MAX_WIDTH``."""
    widths = [max(len(name), *table[name].map(len)) for name in table.columns]
    heads = [f"{name:>{w}}" for name, w in zip(table.columns[:-1], widths, strict=False)]
    lines = ["  " + "  ".join([*heads, table.columns[-1]])]
    for _, row in table.iterrows():
        cells = [f"{v:>{w}}" for v, w in zip(row.iloc[:-1], widths, strict=False)]
        lines.append("  " + "  ".join([*cells, row.iloc[-1]]))
    return [line if len(line) <= MAX_WIDTH else line[: MAX_WIDTH - 1] + "…" for line in lines]
