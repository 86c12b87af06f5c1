"""Engine benchmark: loop overhead, parallel efficiency, two-node cluster, kill -9.

overhead  10,000 candidates with an evaluator that returns at once, through the real loop (strategy,
          gate, lookup, lineage writer, bookkeeping) in this process; ms per candidate and the
          driver's RSS at 1k and 10k. Then the same through Ray tasks that return at once.
parallel  real training on the synthetic benchmark, random search (same seed: the same candidates),
          1 worker then 2: trained candidates per hour. Counted constraints only (max_flops), so
          no profiler takes a core and nothing is timed. Target >= 1.8x on two cores.
cluster   `ray start --head --num-cpus=1` plus a second node (`ray start --address`, its own
          raylet and CPU) on this machine; a search across both; one training worker process is
          killed mid-training; no candidate may be lost and both nodes must have trained.
kill      `tvnsearch search` killed with SIGKILL mid-search, then `tvnsearch resume`: the lineage
          must hold each candidate id once, none missing, the budget complete.
views     the overhead run (10,000 candidates, in-process) without and with the run's live views
          (`tvnsearch.inspect.live`: the child that appends the Optuna journal and redraws the
          report as lineage parts land), alternated in fresh processes; the driver's ms per
          candidate side by side (target: < 5 % more), the child's CPU, and what the journal's
          appends cost per candidate where they run.
(Search quality, strategy against strategy at equal compute, is bench/search_quality.py's.)

The machine may be shared: the load average and the busiest other processes are recorded.

    .venv/bin/python bench/engine_bench.py [--section overhead ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tvnsearch.genome.space import load_space
from tvnsearch.measure.constraints import Constraints
from tvnsearch.measure.device import cpu_model
from tvnsearch.measure.gate import Gate
from tvnsearch.search.engine import Engine
from tvnsearch.search.evolution import Evolution
from tvnsearch.search.inline import InlineExecutor
from tvnsearch.search.launch import run_search
from tvnsearch.search.lineage import LineageWriter, read_lineage, records_from_frame
from tvnsearch.search.progress import Tally
from tvnsearch.search.runs import create_run
from tvnsearch.search.worker import Evaluation, Job

sys.path.insert(0, str(Path(__file__).parent))
from engine_runs import ROOT, TINY, WORK, cluster, kill, pace, quiet, recipe

RESULTS = ROOT / "bench" / "results" / "engine_bench.json"
SECTIONS = ("overhead", "parallel", "cluster", "kill", "views")
VIEWS_ROUNDS = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", action="append", choices=SECTIONS, help="(default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--iterations", type=int, default=60, help="training steps per candidate")
    args = parser.parse_args(argv)
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    WORK.mkdir(parents=True, exist_ok=True)
    for name in args.section or SECTIONS:
        before = conditions()
        result = SECTION_RUNS[name](args)
        report[name] = {**result, "conditions": {"before": before, "after": conditions()}}
        print(f"\n== {name} ==\n{table(result)}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def conditions() -> dict[str, Any]:
    me = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
    busy = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        if p.pid not in me:
            try:
                busy.append((p.cpu_percent(interval=None), p))
            except psutil.Error:
                continue
    time.sleep(0.5)
    usage = []
    for _, p in busy:
        try:
            usage.append((p.cpu_percent(interval=None), " ".join(p.info["cmdline"] or [])[:80]))
        except psutil.Error:
            continue
    usage.sort(reverse=True)
    return {
        "load_average": os.getloadavg(),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "busiest_other_processes": [(round(u), c) for u, c in usage[:3] if u >= 5],
    }


def table(result: dict[str, Any]) -> str:
    rows = result.get("rows", [])
    if not rows:
        return json.dumps(result, indent=1, default=str)
    keys = list(rows[0])
    lines = ["  ".join(f"{k:>14}" for k in keys)]
    lines += ["  ".join(f"{_fmt(r[k]):>14}" for k in keys) for r in rows]
    notes = [f"{k}: {v}" for k, v in result.items() if k not in ("rows",)]
    return "\n".join(lines + notes)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def instant(job: Job, task: object) -> Evaluation:
    return Evaluation("trained", fitness=int(job.genome.id[:6], 16) % 1000 / 1000)


# overhead ---------------------------------------------------------------------------------------


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    rows = [_fresh(_inline_overhead, {}), _fresh(_inline_overhead, AGING), _ray_overhead(2000)]
    return {"rows": rows, "target": "<= 20 ms per candidate; RSS flat from 1k to 10k"}


def _fresh(function: Callable, *args: Any) -> Any:
    """``function(*args)`` in a new process: its memory figures are its own."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


AGING = {"population_size": 100, "aging": True}  # regularized evolution: a bounded population


def _engine(
    run_dir: Path, executor: Any, budget: int, num_workers: int, options: dict | None = None
) -> tuple[Engine, Tally]:
    shutil.rmtree(run_dir, ignore_errors=True)
    space = load_space(TINY)
    strategy = Evolution(space, seed=0, initial_size=200, tournament_size=50, **(options or {}))
    gate = Gate(Constraints(max_params=100_000), num_classes=9)
    tally = Tally(budget)
    writer = LineageWriter(run_dir, flush_seconds=5.0)
    engine = Engine(
        strategy, gate, executor, writer, run_id="bench", tally=tally, num_workers=num_workers
    )
    return engine, tally


def _inline_overhead(options: dict) -> dict[str, Any]:
    executor = InlineExecutor(instant)
    engine, tally = _engine(WORK / "overhead-inline", executor, 1000, 1, options)
    rss = psutil.Process().memory_info
    start = time.perf_counter()
    engine.run()
    at_1k = time.perf_counter() - start, rss().rss / 2**20
    tally.budget = 10_000
    engine.run()
    total = time.perf_counter() - start
    rss_10k = rss().rss / 2**20  # before reading the lineage back, which costs memory itself
    rows = len(read_lineage(WORK / "overhead-inline"))
    return {
        "executor": "in-process" + (", aging" if options else ""),
        "candidates": rows,
        "ms_per_candidate": 1000 * total / rows,
        "ms_per_candidate_1k": at_1k[0],
        "rss_mb_at_1k": at_1k[1],
        "rss_mb_at_10k": rss_10k,
    }


def _ray_overhead(num: int) -> dict[str, Any]:
    from tvnsearch.search.executors import Placement, RayExecutor
    from tvnsearch.search.ray_session import start_ray, stop_ray

    start_ray(num_cpus=2)
    try:
        executor = RayExecutor(instant, None, Placement(cpus_per_worker=1))
        engine, _ = _engine(WORK / "overhead-ray", executor, num, 2)
        start = time.perf_counter()
        engine.run()
        total = time.perf_counter() - start
    finally:
        stop_ray()
    return {
        "executor": "ray tasks, 2 workers",
        "candidates": num,
        "ms_per_candidate": 1000 * total / num,
        "ms_per_candidate_1k": None,
        "rss_mb_at_1k": None,
        "rss_mb_at_10k": psutil.Process().memory_info().rss / 2**20,
    }


# views ------------------------------------------------------------------------------------------


def views(args: argparse.Namespace) -> dict[str, Any]:
    rows = [
        _fresh(_views_overhead, watched) for _ in range(VIEWS_ROUNDS) for watched in (False, True)
    ]
    without = [r["ms_per_candidate"] for r in rows if not r["views"]]
    with_views = [r["ms_per_candidate"] for r in rows if r["views"]]
    ratio = statistics.median(with_views) / statistics.median(without)
    return {
        "rows": rows,
        "driver_ms_per_candidate": {
            "without views": statistics.median(without),
            "with views": statistics.median(with_views),
        },
        "added_share": ratio - 1,
        "target": "< 5 % added to the driver's ms per candidate",
    }


def _views_overhead(watched: bool) -> dict[str, Any]:
    from tvnsearch.inspect.journal import JOURNAL_FILE, load_trials
    from tvnsearch.inspect.live import live_views

    run_dir = WORK / "views-overhead"
    engine, tally = _engine(run_dir, InlineExecutor(instant), 10_000, 1, {})
    options = {"initial_size": 200, "tournament_size": 50}
    recipe(run_dir / "recipe.toml", strategy="evolution", options=options, budget=10_000,
           iterations=1, num_workers=1)  # fmt: skip
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with live_views(run_dir) if watched else contextlib.nullcontext():
        engine.run()
        driver = time.perf_counter() - start
    total = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    journal = run_dir / JOURNAL_FILE
    row = {
        "views": watched,
        "candidates": tally.done,
        "ms_per_candidate": 1000 * driver / tally.done,
        "seconds_to_last_report": total - driver if watched else None,
        "child_cpu_ms_per_candidate": 1000 * child_cpu / tally.done if watched else None,
        "journal_trials": len(load_trials(journal)) if watched else None,
        "journal_append_ms_per_candidate": _journal_cost(run_dir) if watched else None,
    }
    return row


def _journal_cost(run_dir: Path) -> float:
    """What appending the run's candidates to a fresh journal costs per candidate, a lineage
    part (1,000 rows) at a time, as the views child appends them."""
    from tvnsearch.inspect.journal import Journal, run_study
    from tvnsearch.search.runs import load_run

    records = records_from_frame(read_lineage(run_dir))
    path = run_dir / "journal-cost.log"
    path.unlink(missing_ok=True)
    journal = Journal(path, run_study(run_dir, load_run(run_dir)))
    start = time.perf_counter()
    for first in range(0, len(records), 1000):
        journal.append(records[first : first + 1000])
    return 1000 * (time.perf_counter() - start) / len(records)


# parallel ---------------------------------------------------------------------------------------


def parallel(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for workers in (1, 2):
        path = recipe(
            WORK / f"parallel-{workers}.toml",
            budget=48,
            iterations=args.iterations,
            num_workers=workers,
        )
        run_dir = create_run(path, results_dir=WORK / "results")
        with quiet() as stream:
            run_search(run_dir, stream=stream)
        rows.append({"workers": workers, **pace(run_dir)})
    speedup = rows[1]["trained_per_hour"] / rows[0]["trained_per_hour"]
    same = rows[0]["trained"] == rows[1]["trained"]
    return {"rows": rows, "speedup": speedup, "same_candidates": same, "target": ">= 1.8x"}


SECTION_RUNS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "overhead": overhead,
    "views": views,
    "parallel": parallel,
    "cluster": cluster,
    "kill": kill,
}

if __name__ == "__main__":
    sys.exit(main())
