"""Sets a search up on Ray and runs it: data checked, profilers, gate, training tasks, lineage.

Cores: a profiler reserves ``profiler_threads`` CPUs in Ray and pins itself to those cores; the
training tasks pin themselves to the other cores of that node, so nothing is timed beside
training. On embedded Ray the workers and the profiler must fit the machine's cores; on a
two-core laptop with a time budget that is one worker beside the profiler. A recipe without a
runtime or memory budget needs no profiler (its constraints are counted), and every core trains.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import TextIO

from tvnsearch.errors import InputError, Problem
from tvnsearch.genome.space import load_space
from tvnsearch.measure.affinity import usable_cores
from tvnsearch.measure.gate import Gate
from tvnsearch.measure.profile import Settings
from tvnsearch.search.engine import Engine, Known, known_of
from tvnsearch.search.executors import (
    Placement,
    RayExecutor,
    RemoteProfiler,
    node_of,
    start_profiler,
    start_ray,
    stop_ray,
)
from tvnsearch.search.lineage import LineageWriter, read_lineage, records_from_frame
from tvnsearch.search.progress import Progress, Tally
from tvnsearch.search.recipe import RunConfig
from tvnsearch.search.runs import (
    FLUSH_SECONDS,
    RECIPE_FILE,
    load_run,
    new_strategy,
    profiled_devices,
    save_run_log,
    tally_of,
)
from tvnsearch.search.strategies import Strategy
from tvnsearch.search.worker import Evaluator, evaluate, prepared_data, task_of
from tvnsearch.train.weights import save_run_weights


def check_cores(config: RunConfig, devices: list[str], *, source: str) -> None:
    """Refuse, naming the field, workers and a profiler that do not fit this machine's cores."""
    r = config.resources
    cores = r.num_cpus or len(usable_cores())
    profiler = r.profiler_threads if "cpu" in devices else 0
    need = r.num_workers * r.cpus_per_worker + profiler
    if need > cores:
        why = (
            f"{r.num_workers} worker(s) of {r.cpus_per_worker:g} CPU(s)"
            + (f" beside a profiler of {profiler}" if profiler else "")
            + f" need {need:g} cores, but embedded Ray has {cores}"
        )
        raise InputError(source, [Problem("resources.num_workers", why)])


def _placement(config: RunConfig, profilers: dict[str, RemoteProfiler]) -> Placement:
    r = config.resources
    cpu = profilers.get("cpu")
    return Placement(
        cpus_per_worker=r.cpus_per_worker,
        gpus_per_worker=r.gpus_per_worker,
        profiler_node=node_of(cpu) if cpu else None,
        profiler_cores=cpu.cores if cpu else (),
    )


def run_search(
    run_dir: str | Path,
    *,
    address: str | None = None,
    evaluator: Evaluator = evaluate,
    stream: TextIO | None = None,
) -> Tally:
    """Run (or resume) the search of ``run_dir`` until its budget is told."""
    run_dir = Path(run_dir)
    overrides = [f"resources.address={json.dumps(address)}"] if address else []
    config = load_run(run_dir, overrides)
    space = load_space(config.search.space)
    strategy = new_strategy(config, space, source=str(run_dir / RECIPE_FILE))
    frame = read_lineage(run_dir)
    records = records_from_frame(frame)
    try:
        strategy.replay(records)
    except ValueError as exc:
        raise InputError(str(run_dir / "lineage"), f"cannot be replayed: {exc}") from None
    tally = tally_of(frame, config.search.budget)
    if tally.done >= tally.budget:
        return tally
    known = known_of(records)
    return _search(config, strategy, run_dir, tally, known, evaluator=evaluator, stream=stream)


def _search(
    config: RunConfig,
    strategy: Strategy,
    run_dir: Path,
    tally: Tally,
    known: dict[str, Known],
    *,
    evaluator: Evaluator,
    stream: TextIO | None = None,
) -> Tally:
    num_classes = prepared_data(task_of(config)).dataset.num_classes
    devices = profiled_devices(config, strategy)
    r = config.resources
    if r.address is None:
        check_cores(config, devices, source=str(run_dir / RECIPE_FILE))
    started = start_ray(r.address, num_cpus=r.num_cpus)
    profilers: dict[str, RemoteProfiler] = {}
    try:
        for kind in devices:
            cache = run_dir / f"profiles-{kind}.json"
            settings = Settings(device=kind, threads=r.profiler_threads)
            profilers[kind] = start_profiler(settings, cache_path=cache)
        gate = Gate(config.constraints, num_classes=num_classes, profilers=profilers)
        executor = RayExecutor(
            evaluator, task_of(config), _placement(config, profilers), max_retries=r.max_retries
        )
        with LineageWriter(run_dir, flush_seconds=FLUSH_SECONDS) as writer:
            engine = Engine(
                strategy,
                gate,
                executor,
                writer,
                run_id=run_dir.name,
                tally=tally,
                num_workers=r.num_workers,
                known=known,
                progress=Progress(tally, stream=stream),
                flush_seconds=FLUSH_SECONDS,
                save_weights=partial(save_run_weights, run_dir),
                save_log=partial(save_run_log, run_dir),
            )
            return engine.run()
    finally:
        for profiler in profilers.values():
            profiler.save_cache()
            profiler.close()
        if started:
            stop_ray()
