"""A run folder: making it, reading its recipe back, and a summary of where its search stands.

``create_run`` makes ``results/<name>-<timestamp>/`` with frozen copies of the recipe (overrides
applied, paths absolute) and of the search space; ``tvnsearch.search.launch.run_search`` then runs
it, and runs it again after an interruption: the strategy is rebuilt from the lineage alone
(``Strategy.replay``), the candidates in flight at the crash are asked and run again, and nothing
is told twice. A run folder holds all a resume needs: ``recipe.toml``, ``space.toml``,
``lineage/``, and the profiles measured so far (``profiles-cpu.jsonl``), which spare a resume the
measurements. It also keeps the weights of every trained candidate,
``weights/candidate-<id>.safetensors`` (unless ``search.keep_weights`` is false), which
``tvnsearch export`` reads, and ``logs/candidate-<id>.log``, the whole story of a candidate that
failed (its traceback and what its worker printed). While a driver searches it, ``lease.json``
names that driver (``tvnsearch.search.lease``); ``quarantine/`` keeps what ``resume`` found in
``lineage/`` that is no part of it (``tvnsearch.search.lineage.scan_lineage``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tvnsearch.errors import InputError, Problem
from tvnsearch.files import atomic_write_text, check_writable, read_toml
from tvnsearch.genome.space import SearchSpace, load_space
from tvnsearch.measure.affinity import usable_cores
from tvnsearch.measure.constraints import TIME_LIMITS
from tvnsearch.search.lease import is_stale, read_holder
from tvnsearch.search.lineage import best, read_lineage
from tvnsearch.search.progress import MIN_RATE_SECONDS, Tally, counts_line
from tvnsearch.search.recipe import RunConfig, SearchSection, load_recipe, recipe_toml
from tvnsearch.search.strategies import STRATEGIES, Strategy, make_strategy, strategy_class
from tvnsearch.status import FINAL, Status

LOGS_DIR = "logs"
RECIPE_FILE = "recipe.toml"
SPACE_FILE = "space.toml"
FLUSH_SECONDS = 5.0  # what a kill -9 of the driver can lose, at most; those run again on resume


def create_run(
    recipe: str | Path,
    overrides: Sequence[str] = (),
    *,
    address: str | None = None,
    name: str | None = None,
    results_dir: str | Path = "results",
) -> Path:
    """A new run folder for ``recipe``; the recipe, the space, the data's list and where it
    writes are checked before it is made."""
    from tvnsearch.data.datasets import load_dataset  # video readers: not for ``status``
    from tvnsearch.data.frame_cache import cache_dir as frames_dir

    extra = [f"resources.address={json.dumps(address)}"] if address else []
    extra += [f"search.name={json.dumps(name)}"] if name is not None else []
    config = load_recipe(recipe, [*overrides, *extra])
    space = load_space(config.search.space)
    config = sized(config, space)
    strategy = new_strategy(config, space, source=str(recipe))
    check_cache_size(config, space, source=str(recipe))
    if config.resources.address is None:
        check_cores(config, profiled_devices(config, strategy), source=str(recipe))
    if not Path(config.data.path).exists():
        why = f"no such file or folder: {config.data.path}"
        raise InputError(str(recipe), [Problem("data.path", why)])
    d = config.data
    load_dataset(d.path, val_fraction=d.val_fraction, seed=d.split_seed)  # the list, not decoded
    check_writable(frames_dir(d.cache_dir), folder=True)
    check_writable(results_dir, folder=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(results_dir) / f"{config.search.name}-{stamp}"
    for n in range(2, 100):
        if not run_dir.exists():
            break
        run_dir = Path(results_dir) / f"{config.search.name}-{stamp}-{n}"
    run_dir.mkdir(parents=True)
    atomic_write_text(run_dir / SPACE_FILE, Path(config.search.space).read_text())
    atomic_write_text(run_dir / RECIPE_FILE, recipe_toml(config, space=SPACE_FILE))
    return run_dir


def check_cores(config: RunConfig, devices: list[str], *, source: str) -> None:
    """Refuse, naming the field, workers and a profiler that do not fit this machine's cores."""
    r = config.resources
    cores = r.num_cpus or len(usable_cores())
    profiler = r.num_profilers * r.profiler_threads if "cpu" in devices else 0
    need = r.num_workers * r.cpus_per_worker + profiler
    if need > cores:
        why = (
            f"{r.num_workers} worker(s) of {r.cpus_per_worker:g} CPU(s)"
            + (f" beside profilers of {profiler} core(s)" if profiler else "")
            + f" need {need:g} cores, but embedded Ray has {cores}"
        )
        raise InputError(source, [Problem("resources.num_workers", why)])


def discard_untold(run_dir: str | Path) -> bool:
    """Remove a run folder whose search never told a candidate (it failed or was stopped while
    starting: there is nothing to resume); True if removed."""
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE_FILE).is_file() or any((run_dir / "lineage").glob("part-*")):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


def sized(config: RunConfig, space: SearchSpace) -> RunConfig:
    """``config`` with a frame cache of the space's largest clip resolution, unless it names one:
    the frames a search's clips need, and no more."""
    largest = space.genome["resolution"].largest()
    return dataclasses.replace(config, data=config.data.sized(largest))


def check_cache_size(config: RunConfig, space: SearchSpace, *, source: str) -> None:
    """Refuse a frame cache smaller than the space's largest clip: its frames would be upsampled,
    so resolution genes above it would cost runtime and add nothing."""
    largest = space.genome["resolution"].largest()
    if config.data.cache_size is not None and config.data.cache_size < largest:
        why = (
            f"{config.data.cache_size} px is below the largest clip resolution of the space "
            f"{space.name!r}, {largest} px: set data.cache_size to at least {largest}"
        )
        raise InputError(source, [Problem("data.cache_size", why)])


def save_run_log(run_dir: str | Path, candidate_id: int, story: str) -> str:
    """Write a candidate's log into the run folder; its path there, for the lineage."""
    relative = f"{LOGS_DIR}/candidate-{candidate_id}.log"
    atomic_write_text(Path(run_dir) / relative, story)
    return relative


def load_run(run_dir: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """The run's frozen recipe. A run recorded before the frame cache compressed its frames
    (its recipe names no ``data.cache_codec``) goes on with the frames it began with: raw, at
    every frame of the video."""
    recipe = Path(run_dir) / RECIPE_FILE
    if not recipe.is_file():
        raise InputError(str(run_dir), f"not a run folder: no {RECIPE_FILE}")
    config = load_recipe(recipe, overrides)
    if "cache_codec" not in read_toml(recipe).get("data", {}):
        former = dataclasses.replace(config.data, cache_codec="raw", cache_fps=None)
        config = dataclasses.replace(config, data=former)
    return config


def new_strategy(config: RunConfig, space: SearchSpace, *, source: str) -> Strategy:
    s = config.search
    if s.strategy not in STRATEGIES:
        why = f"must be one of {list(STRATEGIES)}, but got {s.strategy!r}"
        raise InputError(source, [Problem("search.strategy", why)])
    accepted = _options_of(strategy_class(s.strategy))
    unknown = [k for k in s.options if k not in accepted]
    if unknown:
        why = f"is not an option of strategy {s.strategy!r}, which takes {sorted(accepted)}"
        raise InputError(source, [Problem(f"search.options.{k}", why) for k in unknown])
    try:
        strategy = make_strategy(s.strategy, space, seed=s.seed, **s.options)
    except (TypeError, ValueError) as exc:
        raise InputError(source, [Problem("search.options", str(exc))]) from None
    if config.train.rungs > 1 and not strategy.multi_fidelity:
        supported = [n for n in STRATEGIES if strategy_class(n).multi_fidelity]
        why = (
            f"multi-fidelity training (rungs > 1) needs a strategy that compares candidates "
            f"trained for different lengths, one of {supported}, but search.strategy is "
            f"{s.strategy!r}"
        )
        raise InputError(source, [Problem("train.rungs", why)])
    return strategy


def _options_of(cls: type) -> set[str]:
    """The keyword options a strategy's constructor takes (besides the space and the seed)."""
    parameters = inspect.signature(cls.__init__).parameters
    return {n for n, p in parameters.items() if p.kind == p.KEYWORD_ONLY and n != "seed"}


def profiled_devices(config: RunConfig, strategy: Strategy) -> list[str]:
    """The devices the gate measures on: a time budget, a memory or frame budget (measured on
    the CPU unless a GPU is timed), or a runtime the strategy reads (NSGA-II's ``cpu_ms``)."""
    c = config.constraints
    wanted = set(strategy.metric_names)
    devices = [
        kind
        for kind, limit in TIME_LIMITS.items()
        if getattr(c, limit) is not None or limit.removeprefix("max_") in wanted
    ]
    measured = ("max_memory_mb", "max_frame_ms", "min_frames_per_second")
    if not devices and (any(getattr(c, n) is not None for n in measured) or "memory_mb" in wanted):
        devices = ["cpu"]
    return devices


def tally_of(frame: pd.DataFrame, search: SearchSection) -> Tally:
    counts = Counter({str(k): int(v) for k, v in frame["status"].value_counts().items()})
    tally = Tally(search.budget, counts, num_trained=search.num_trained)
    top = best(frame, 1)
    if len(top):
        tally.best_fitness = float(top.at[0, "fitness"])
        tally.best_id = int(top.at[0, "candidate_id"])
        iterations = top.at[0, "iterations"]
        tally.best_iterations = None if pd.isna(iterations) else int(iterations)
    return tally


def pace(frame: pd.DataFrame) -> tuple[float, float | None]:
    """The seconds from a lineage's first ask to its last tell, and candidates told per hour of
    them (None within ``MIN_RATE_SECONDS``: the first rejections come in milliseconds)."""
    if frame.empty:
        return 0.0, None
    seconds = max((frame["finished_at"].max() - frame["asked_at"].min()).total_seconds(), 0.0)
    return seconds, 3600.0 * len(frame) / seconds if seconds >= MIN_RATE_SECONDS else None


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """Where a run stands: counts by status, the best so far, its pace."""
    config = load_run(run_dir)
    frame = read_lineage(run_dir)
    tally = tally_of(frame, config.search)
    status: dict[str, Any] = {
        "run": str(run_dir),
        "strategy": config.search.strategy,
        "budget": tally.budget,
        "done": tally.done,
        "num_trained": tally.num_trained,
        "evolved": int(frame["parent_id"].notna().sum()),
        "complete": tally.finished,
        **{str(s): tally.counts[s] for s in FINAL},
        "best": None,
        "candidates_per_hour": None,
        "driver": _driver(run_dir),
    }
    if tally.best_id is not None:
        row = frame[frame["candidate_id"] == tally.best_id].iloc[0]
        status["best"] = {
            "candidate_id": tally.best_id,
            "genome_id": str(row["genome_id"]),
            "fitness": tally.best_fitness,
        }
    status["candidates_per_hour"] = pace(frame)[1]
    if config.train.rungs > 1:  # multi-fidelity: how far the trained candidates went
        trained = frame[frame["status"] == str(Status.TRAINED)]["iterations"].dropna()
        reached = trained.astype(int).value_counts().sort_index()
        status["iterations_reached"] = {str(k): int(v) for k, v in reached.items()}
    return status


def _driver(run_dir: str | Path) -> str | None:
    """Who is searching the run now (its lease's live holder), if anyone."""
    holder, now = read_holder(run_dir), time.time()
    return None if holder is None or is_stale(holder, now) else holder.describe(now)


def describe_status(status: dict[str, Any]) -> str:
    best_ = status["best"]
    rate = status["candidates_per_hour"]
    state = "complete" if status["complete"] else "unfinished (resume it to go on)"
    if status.get("driver") and not status["complete"]:
        state = f"running in {status['driver']}"
    wanted = status["num_trained"]
    goal = "" if wanted is None else f" ({status['trained']} of {wanted} trained wanted)"
    lines = [
        f"{status['run']}: {status['strategy']}, {status['done']} of {status['budget']} "
        f"candidates{goal}, {state}",
        f"  {counts_line(status)}; {status['evolved']} evolved from a parent",
        "  best     -"
        if best_ is None
        else f"  best     {best_['fitness']:.4f}: candidate {best_['candidate_id']} "
        f"(genome {best_['genome_id']})",
    ]
    if status.get("iterations_reached"):
        steps = ", ".join(f"{n} at {i}" for i, n in status["iterations_reached"].items())
        lines.append(f"  rungs    trained candidates by the iterations they reached: {steps}")
    if rate is not None:
        lines.append(f"  pace     {rate:,.1f} candidates/h (first ask to last tell)")
    return "\n".join(lines)
