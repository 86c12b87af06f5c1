"""Sets a search up on Ray and runs it: data checked, profilers, gate, training tasks, lineage.

Cores: a profiler reserves ``profiler_threads`` CPUs in Ray and pins itself to those cores; the
training tasks pin themselves to the other cores of that node, so nothing is timed beside
training. On embedded Ray the workers and the profiler must fit the machine's cores; on a
two-core laptop with a time budget that is one worker beside the profiler. A recipe without a
runtime or memory budget needs no profiler (its constraints are counted), and every core trains.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import TextIO

from tvnsearch.data.datasets import load_dataset
from tvnsearch.errors import InputError
from tvnsearch.genome.space import load_space
from tvnsearch.measure.affinity import split_cores, usable_cores
from tvnsearch.measure.gate import Gate
from tvnsearch.measure.neighbours import Neighbours
from tvnsearch.measure.profile import Profile, Settings
from tvnsearch.measure.profiler import ProfileLog, ProfilerPool
from tvnsearch.measure.roofline import Roofline, keep_roofline, read_roofline
from tvnsearch.measure.runtimes import check_runtime
from tvnsearch.search.engine import Engine, known_of, rung_history_of
from tvnsearch.search.executors import (
    Placement,
    RayExecutor,
    RemoteProfiler,
    Slot,
    cache_videos,
    check_placeable,
    driver_cores,
    start_profiler,
)
from tvnsearch.search.lease import Lease
from tvnsearch.search.lineage import (
    QUARANTINE_DIR,
    Damaged,
    LineageDamage,
    LineageRecord,
    LineageWriter,
    quarantine,
    records_from_frame,
    scan_lineage,
)
from tvnsearch.search.progress import Progress, Tally, progress_bar
from tvnsearch.search.ray_session import start_ray, stop_ray
from tvnsearch.search.recipe import RunConfig
from tvnsearch.search.runs import (
    FLUSH_SECONDS,
    RECIPE_FILE,
    check_cores,
    load_run,
    new_strategy,
    profiled_devices,
    save_run_log,
    sized,
    tally_of,
)
from tvnsearch.search.strategies import Strategy
from tvnsearch.search.worker import Evaluator, Task, evaluate, prepared_data, task_of
from tvnsearch.train.weights import load_run_weights, save_run_weights

# What keeps a run's views while its search runs, from the lineage on disk (the command line's:
# ``tvnsearch.inspect.live.live_views``): called with the run folder, the cores it may use on
# the driver's node (None: any) and where it registers to be paused while a profiler measures.
Views = Callable[[Path, Sequence[int] | None, Path | None], AbstractContextManager[object]]


def _placement(
    config: RunConfig, profilers: dict[str, list[RemoteProfiler]], neighbours: Path
) -> Placement:
    r = config.resources
    reserved: dict[str, set[int]] = {}
    for profiler in (p for kind in profilers.values() for p in kind):
        reserved.setdefault(profiler.node, set()).update(profiler.cores)
    return Placement(
        cpus_per_worker=r.cpus_per_worker,
        gpus_per_worker=r.gpus_per_worker,
        profiler_cores={node: tuple(sorted(cores)) for node, cores in reserved.items()},
        neighbours=str(neighbours),
    )


def start_profilers(
    config: RunConfig, kind: str, log: ProfileLog, neighbours: Path
) -> list[RemoteProfiler]:
    """``resources.num_profilers`` profilers of ``kind``, each pinned to cores of its own, each
    pausing the training workers of its node while it measures; on a node with the custom
    resources of ``profiler.resources`` where the recipe names some."""
    r, placed = config.resources, config.profiler.resources
    p = config.profiler
    settings = Settings(kind, r.profiler_threads, runtime=p.runtime, command=p.command)
    options = {"known": log.read, "neighbours": str(neighbours), "resources": placed}
    if placed:  # cores chosen on the node that has the resources
        count = r.num_profilers
        return [start_profiler(settings, cores=Slot(i, count), **options) for i in range(count)]
    if kind != "cpu":
        return [start_profiler(settings, **options) for _ in range(r.num_profilers)]
    reserved, _ = split_cores(r.num_profilers * r.profiler_threads)
    t = r.profiler_threads
    chunks = [reserved[i * t : (i + 1) * t] for i in range(r.num_profilers)]
    return [start_profiler(settings, cores=cores, **options) for cores in chunks]


def run_search(
    run_dir: str | Path,
    *,
    address: str | None = None,
    evaluator: Evaluator = evaluate,
    stream: TextIO | None = None,
    source: str | None = None,
    views: Views | None = None,
) -> Tally:
    """Run (or resume) the search of ``run_dir`` until its budget is told or it has trained the
    candidates it wants; ``SearchStopped`` when a failure would repeat for every candidate,
    ``RunLeased`` when another driver holds the run. ``source``: what a bad setting's error
    names (the run's recipe; ``search`` names the user's). ``views``: what keeps the run's live
    views while it searches (none by default)."""
    run_dir = Path(run_dir)
    overrides = [f"resources.address={json.dumps(address)}"] if address else []
    config = load_run(run_dir, overrides)
    space = load_space(config.search.space)
    config = sized(config, space)  # a run folder written by hand may leave it to the space
    source = source or str(run_dir / RECIPE_FILE)
    strategy = new_strategy(config, space, source=source)
    with Lease(run_dir) as lease:
        frame, damaged = scan_lineage(run_dir)
        for damage in damaged:
            warnings.warn(str(damage), LineageDamage, stacklevel=2)
        tally = tally_of(frame, config.search)
        if tally.finished:
            _quarantine(run_dir, damaged)
            return tally
        records = records_from_frame(frame)
        return _search(
            config,
            strategy,
            run_dir,
            tally,
            records,
            lease,
            evaluator=evaluator,
            stream=stream,
            source=source,
            damaged=damaged,
            views=views,
        )


def _quarantine(run_dir: Path, damaged: list[Damaged]) -> None:
    """Move what cannot be part of the lineage into quarantine (said as a ``Notice``), once the
    search is sure to go on: the parts written from here on follow a clean folder."""
    moved = quarantine(run_dir, damaged)
    if moved:
        why = f"moved {len(moved)} file(s) left out to {run_dir / QUARANTINE_DIR}"
        warnings.warn(why, LineageDamage, stacklevel=3)


def _search(
    config: RunConfig,
    strategy: Strategy,
    run_dir: Path,
    tally: Tally,
    records: list[LineageRecord],
    lease: Lease,
    *,
    evaluator: Evaluator,
    stream: TextIO | None = None,
    source: str,
    damaged: list[Damaged],
    views: Views | None = None,
) -> Tally:
    d = config.data
    dataset = load_dataset(d.path, val_fraction=d.val_fraction, seed=d.split_seed)  # not decoded
    devices = profiled_devices(config, strategy)
    r = config.resources
    if r.address is None:
        check_cores(config, devices, source=source)
    if not config.profiler.resources:  # a placed profiler checks its node's runtime
        for kind in devices:
            check_runtime(config.profiler.runtime, kind, source=source, field="profiler.runtime")
    logs = {kind: ProfileLog(run_dir / f"profiles-{kind}.jsonl") for kind in devices}
    for log in logs.values():
        log.repair()
    started = start_ray(r.address, num_cpus=r.num_cpus, source=source)
    neighbours = Path(tempfile.gettempdir()) / f"tvnsearch-{run_dir.name}-{os.getpid()}-workers"
    profilers: dict[str, list[RemoteProfiler]] = {}
    try:
        task = _cached_task(config, [v.path for v in dataset.videos], source=source)
        num_classes = dataset.num_classes
        check_placeable(config.profiler.resources, source=source)
        for kind in devices:
            profilers[kind] = start_profilers(config, kind, logs[kind], neighbours)
        rooflines = {kind: run_roofline(run_dir, p[0]) for kind, p in profilers.items()}
        pools = {kind: ProfilerPool(p) for kind, p in profilers.items()}
        gate = Gate(
            config.constraints, num_classes=num_classes, profilers=pools, rooflines=rooflines
        )
        strategy.feasible = gate.passes_bounds  # before replay: it asks what the run asked
        _replay(strategy, records, source=str(run_dir / "lineage"))
        placement = _placement(config, profilers, neighbours)
        executor = RayExecutor(evaluator, task, placement, max_retries=r.max_retries)
        _quarantine(run_dir, damaged)  # the search goes on: the lineage is to be written
        cores, pause = driver_cores(placement)
        pause_folder = Path(pause) if pause else None
        watched = views(run_dir, cores, pause_folder) if views else nullcontext()
        with (
            watched,
            LineageWriter(
                run_dir, token=lease.token, guard=lease.check, flush_seconds=FLUSH_SECONDS
            ) as writer,
        ):
            engine = Engine(
                strategy,
                gate,
                executor,
                writer,
                run_id=run_dir.name,
                tally=tally,
                num_workers=r.num_workers,
                num_measurers=sum(map(len, profilers.values())),
                known=known_of(records),
                rung_history=rung_history_of(config.train, records),
                progress=Progress(tally, stream=stream),
                flush_seconds=FLUSH_SECONDS,
                save_weights=partial(save_run_weights, run_dir),
                load_weights=(
                    partial(load_run_weights, run_dir) if config.search.inherit_weights else None
                ),
                save_log=partial(save_run_log, run_dir),
                save_profiles=partial(_keep_profiles, logs),
            )
            return engine.run()
    finally:
        for profiler in (p for kind in profilers.values() for p in kind):
            profiler.close()
        Neighbours(neighbours).resume_all()  # none stays stopped by a profiler closed mid-way
        shutil.rmtree(neighbours, ignore_errors=True)
        if started:
            stop_ray()


def _cached_task(config: RunConfig, videos: list[Path], *, source: str) -> Task:
    """The search's task, once its ``videos`` are in the frame cache: decoded by Ray tasks on
    every CPU of the cluster (the videos already cached cost a stat each), then listed by the
    driver, which reports each unreadable video once; every worker leaves those out."""
    with progress_bar("decoding videos", unit="video") as report:
        cache_videos(config.data, videos, source=source, on_video=report)
    data = prepared_data(task_of(config), threads=len(usable_cores()))
    return task_of(config, leave_out=tuple(sorted(str(s.path) for s in data.skipped)))


def _keep_profiles(logs: dict[str, ProfileLog], profiles: tuple[Profile, ...]) -> None:
    """Append each profile of a verdict to its device kind's log."""
    for kind, log in logs.items():
        log.append(p for p in profiles if p.device.kind == kind)


def _replay(strategy: Strategy, records: list[LineageRecord], *, source: str) -> None:
    try:
        strategy.replay(records)
    except ValueError as exc:
        raise InputError(source, f"cannot be replayed: {exc}") from None


def run_roofline(run_dir: Path, profiler: RemoteProfiler) -> Roofline:
    """The roofline a run judges by: the one it kept, if measured on this device signature (a
    resumed search then rejects exactly what it rejected before), or this device's."""
    path = run_dir / f"roofline-{profiler.settings.device}.json"
    roofline = read_roofline(path, profiler.signature.hardware_key)
    if roofline is None:
        roofline = profiler.roofline()
        keep_roofline(path, roofline)
    return roofline
