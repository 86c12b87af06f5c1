"""What both kinds of plot show: axis titles with units, colours, hover text, the progress table."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from tvnsearch.genome.genes import describe_block, genome_from_dict
from tvnsearch.inspect.hypervolume import (
    Reference,
    hypervolume_by_told,
    in_told_order,
    reference_for,
)
from tvnsearch.inspect.pareto import MAXIMISE, OBJECTIVES
from tvnsearch.measure.device import runtime_of
from tvnsearch.status import Status

LABELS = {
    "fitness": "fitness (top-1 + top-5)",
    "top1": "top-1 accuracy",
    "top5": "top-5 accuracy",
    "mean_ap": "mean average precision",
    "cpu_ms": "CPU runtime per clip (ms)",
    "gpu_ms": "GPU runtime per clip (ms)",
    "frame_ms": "runtime per frame (ms)",
    "frames_per_second": "frames per second",
    "params": "parameters",
    "flops": "FLOPs per clip",
    "memory_mb": "peak memory per clip (MiB)",
}
LOG_SCALE = {"params", "flops"}  # counts that span decades across a search space
DEVICE_COLUMNS = {"cpu_ms": "cpu_device", "gpu_ms": "gpu_device"}
FRONT_COLOUR = "#d62728"
OTHER_COLOUR = "#9e9e9e"
REJECTED_COLOUR = "#1f77b4"
HYPERVOLUME_COLOUR = "#2ca02c"
# The axis of the share rejected, in %: room beyond 0 and 100, where a line on the frame's
# border would not be seen (a search's first candidates are often all rejected).
SHARE_RANGE = (-4.0, 106.0)


def axis_label(name: str, frame: pd.DataFrame) -> str:
    """The axis title of an objective, with its unit."""
    if name == "fitness" and frame["mean_ap"].notna().any():
        return "fitness (mean average precision)"  # multi-label data is scored by mAP
    if name in DEVICE_COLUMNS:  # a runtime means something only in the runtime that ran it
        runtimes = sorted({runtime_of(d) for d in frame[DEVICE_COLUMNS[name]].dropna()})
        if runtimes:
            return f"{LABELS[name]}, {' / '.join(runtimes)}"
    return LABELS.get(name, name)


def progress_table(frame: pd.DataFrame, reference: Reference | None = None) -> pd.DataFrame:
    """One row per candidate in the order told: ``told`` (1, 2, ...), its ``fitness`` (NaN unless
    trained), ``best_fitness`` so far, ``rejected_share`` so far and the ``hypervolume`` of the
    front so far (over ``reference``; default: ``reference_for(frame)``)."""
    told = in_told_order(frame)
    status = told["status"].to_numpy(dtype=object, na_value="")
    fitness = told["fitness"].to_numpy(dtype=np.float64, na_value=np.nan)
    fitness = np.where(status == str(Status.TRAINED), fitness, np.nan)
    count = np.arange(1, len(told) + 1)
    return pd.DataFrame(
        {
            "told": count,
            "candidate_id": told["candidate_id"].to_numpy(),
            "fitness": fitness,
            "best_fitness": pd.Series(fitness).cummax().ffill().to_numpy(),
            "rejected_share": np.cumsum(status == str(Status.REJECTED)) / count,
            "hypervolume": hypervolume_by_told(told, reference or reference_for(frame)),
        }
    )


def hover_text(row: pd.Series) -> str:
    """What hovering a candidate shows: id, genome, measurements; lines joined by ``<br>``."""
    genome = genome_from_dict(
        json.loads(row["genome_json"]), source=f"candidate {row['candidate_id']}"
    )
    lines = [
        f"<b>candidate {row['candidate_id']}</b> (genome {row['genome_id']})",
        f"{genome.resolution}x{genome.resolution} px, {genome.num_frames} frames, "
        f"frame stride {genome.frame_stride}, pipelining depth {genome.pipeline_depth}",
        *(f"block {i}: {describe_block(b)}" for i, b in enumerate(genome.blocks)),
        f"fitness {number(row['fitness'], '.4f')} (top-1 {number(row['top1'], '.4f')}, "
        f"top-5 {number(row['top5'], '.4f')})",
    ]
    lines += [] if pd.isna(row["mean_ap"]) else [f"mAP {row['mean_ap']:.4f}"]
    for column, device in DEVICE_COLUMNS.items():
        if not pd.isna(row[column]):
            lines.append(f"{column} {row[column]:.3f} on {row[device]}")
    lines.append(
        f"params {number(row['params'], ',')}, FLOPs {number(row['flops'], ',')}, "
        f"memory {number(row['memory_mb'], '.2f')} MiB"
    )
    return "<br>".join(lines)


def number(value: Any, spec: str) -> str:
    return "-" if pd.isna(value) else format(value, spec)


def maximised(name: str) -> bool:
    return OBJECTIVES[name] == MAXIMISE
