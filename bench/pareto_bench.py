"""Pareto benchmark: ``pareto_front`` on lineages of 10,000 and 100,000 rows, 2 and 3 objectives.

Three kinds of lineage, all with the nullable dtypes ``read_lineage`` gives:
- ``search``: what a search leaves: 60 % trained, 35 % rejected (runtime, no fitness), 5 % failed;
  fitness in steps of 1/90 (a small validation split: many ties), rising with size and runtime;
- ``uniform``: every row trained, objectives uniform and independent;
- ``all-front``: every row trained and none dominated (fitness rises with runtime, parameters
  fall with it): a front as large as the lineage, the worst case of both algorithms.

Objectives: (fitness, cpu_ms) and (fitness, cpu_ms, params). The time is the median of 5 calls,
status filtering and sorting included.

    .venv/bin/python bench/pareto_bench.py [--sizes 10000 100000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tvnsearch.inspect.pareto import pareto_front
from tvnsearch.measure.device import cpu_model

RESULTS = Path(__file__).parent / "results" / "pareto_bench.json"
OBJECTIVES = (("fitness", "cpu_ms"), ("fitness", "cpu_ms", "params"))
REPEATS = 5


def search_like(n: int, rng: np.random.Generator) -> pd.DataFrame:
    size = rng.lognormal(10, 1.5, n)
    cpu_ms = size**0.3 * rng.lognormal(0, 0.3, n)
    status = rng.choice(["trained", "rejected", "failed"], n, p=[0.6, 0.35, 0.05])
    skill = np.clip(np.log(size) / 40 + rng.normal(0.4, 0.15, n), 0, 1)
    fitness = np.round(skill * 90) / 90 + 1.0
    return _frame(status, np.where(status == "trained", fitness, np.nan), cpu_ms, size)


def uniform(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return _frame(np.full(n, "trained"), rng.random(n), rng.random(n), rng.random(n) * 1e6)


def all_front(n: int, rng: np.random.Generator) -> pd.DataFrame:
    cpu_ms = rng.random(n)
    fitness = cpu_ms + 1.0  # no row both faster and fitter than another
    params = (2.0 - cpu_ms) * 1e9  # and the faster one always the larger
    return _frame(np.full(n, "trained"), fitness, cpu_ms, params)


KINDS: dict[str, Callable[[int, np.random.Generator], pd.DataFrame]] = {
    "search": search_like,
    "uniform": uniform,
    "all-front": all_front,
}


def _frame(
    status: np.ndarray, fitness: np.ndarray, cpu_ms: np.ndarray, params: np.ndarray
) -> pd.DataFrame:
    n = len(status)
    return pd.DataFrame(
        {
            "candidate_id": pd.array(np.arange(n), dtype="Int64"),
            "status": pd.array(status, dtype="string"),
            "fitness": pd.array(fitness, dtype="Float64"),
            "cpu_ms": pd.array(cpu_ms, dtype="Float64"),
            "params": pd.array(np.round(params).astype(np.int64), dtype="Int64"),
        }
    )


def measure(frame: pd.DataFrame, objectives: tuple[str, ...]) -> dict:
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        front = pareto_front(frame, objectives)
        seconds.append(time.perf_counter() - start)
    return {"front_size": len(front), "median_ms": round(statistics.median(seconds) * 1e3, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    print(f"{'rows':>8} {'objectives':<26} {'lineage':<10} {'front':>7} {'median ms':>10}")
    rows = []
    for n in args.sizes:
        for kind, make in KINDS.items():
            frame = make(n, np.random.default_rng(0))
            for objectives in OBJECTIVES:
                row = {"rows": n, "objectives": list(objectives), "lineage": kind}
                row |= measure(frame, objectives)
                rows.append(row)
                print(
                    f"{n:>8,} {','.join(objectives):<26} {kind:<10} {row['front_size']:>7,} "
                    f"{row['median_ms']:>10.1f}",
                    flush=True,
                )
    environment = {
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "load_average_after": os.getloadavg()[0],  # other work on the machine skews the times
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": environment, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
