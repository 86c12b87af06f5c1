"""Frame-by-frame runtime of a streaming network, recorded with the device it was measured on.

A *run* is a fixed sequence of frames (a whole number of the head's output periods, at least
``MIN_FRAMES_PER_RUN``) fed one at a time, batch 1, at steady state: the pipeline is full and every
stage has run many times before. As in ``tvnsearch.measure.profile``: a cold run, a probe, the rest
of the warm-up, then at least ``Settings.runs`` timed runs and ``Settings.min_seconds`` of them; the
figure is the median over runs of the milliseconds per frame.

Modes, on ``Settings.threads`` cores:

- ``one_after_another``: the stages in order on the calling thread, ``threads`` intra-op threads;
  with pipelining depth 0 this is the sequential causal network, frame by frame;
- ``concurrent``: the stages at once, on ``min(threads, stages)`` workers of one intra-op thread
  each (CPU), or on one CUDA stream per stage. Stages are given to workers so that the busiest
  worker has the least measured work (``tvnsearch.models.pipeline.assign_stages``).

``bound`` is the pipelining ideal, the sum of the stage times over the slowest stage's;
``worker_bound`` what the assignment allows on its workers (the sum over the busiest worker's).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from tvnsearch.genome.genes import Genome
from tvnsearch.measure.device import DeviceSignature, device_signature
from tvnsearch.measure.profile import DEFAULT_SETTINGS, Settings
from tvnsearch.measure.timing import fixed_threads, keep_freed_memory, schedule_runs, without_gc
from tvnsearch.models.pipeline import (
    Assignment,
    OneAfterAnother,
    StreamPipeline,
    ThreadedPipeline,
    assign_stages,
    worker_loads,
)
from tvnsearch.models.stream_script import script_stream
from tvnsearch.models.streaming import StreamingTVN, build_streaming_model

Mode = Literal["one_after_another", "concurrent"]
MIN_FRAMES_PER_RUN = 8  # a barrier or a timer per run costs little beside eight frames


@dataclass(frozen=True)
class StreamTiming:
    """One measurement; ``frame_ms`` and ``frames_per_second`` come from ``runs_ms``."""

    genome_id: str
    mode: str
    pipeline_depth: int
    num_workers: int  # threads (CPU) or streams (CUDA) that ran stages at once
    latency_frames: int  # the output at frame t reflects input frames up to t - latency_frames
    runs_ms: tuple[float, ...]  # milliseconds per frame, one entry per timed run
    stage_ms: tuple[float, ...]  # every stage alone, milliseconds per frame
    assignment: Assignment  # the stages of every worker
    device: DeviceSignature
    stopped_early: bool = False  # the probe alone was over ``stop_above_ms``: runs_ms is it

    @property
    def frame_ms(self) -> float:
        """Milliseconds between two frames at steady state (the median run)."""
        return statistics.median(self.runs_ms)

    @property
    def frames_per_second(self) -> float:
        return 1000.0 / self.frame_ms

    @property
    def num_stages(self) -> int:
        return len(self.stage_ms)

    @property
    def bound(self) -> float:
        return sum(self.stage_ms) / max(self.stage_ms)

    @property
    def worker_bound(self) -> float:
        return sum(self.stage_ms) / max(worker_loads(self.stage_ms, self.assignment))

    def to_dict(self) -> dict[str, Any]:
        derived = ("frame_ms", "frames_per_second", "num_stages", "bound", "worker_bound")
        data = {name: getattr(self, name) for name in derived}
        return {**asdict(self), **data, "device": self.device.to_dict()}


def stream_timing_from_dict(data: dict[str, Any]) -> StreamTiming:
    """The inverse of ``StreamTiming.to_dict`` (derived figures are recomputed, not read)."""
    return StreamTiming(
        genome_id=data["genome_id"],
        mode=data["mode"],
        pipeline_depth=data["pipeline_depth"],
        num_workers=data["num_workers"],
        latency_frames=data["latency_frames"],
        runs_ms=tuple(data["runs_ms"]),
        stage_ms=tuple(data["stage_ms"]),
        assignment=tuple(tuple(stages) for stages in data["assignment"]),
        device=DeviceSignature(**data["device"]),
        stopped_early=data["stopped_early"],
    )


def measure_stream(
    genome: Genome,
    num_classes: int,
    settings: Settings = DEFAULT_SETTINGS,
    *,
    mode: Mode = "concurrent",
    temporal_skips: bool = False,
    compiled: bool = False,
    stop_above_ms: float | None = None,
) -> StreamTiming:
    """Steady-state frame time of ``genome``'s streaming network (``compiled``: TorchScript);
    stops after the probe when even its fastest run is over ``stop_above_ms`` per frame."""
    keep_freed_memory()
    model = _prepare(genome, num_classes, settings, temporal_skips)
    runner_model = script_stream(model).model if compiled else model
    frames = _frames(genome, model.output_rate, settings)
    workers = _num_workers(mode, settings, model.num_stages)
    with fixed_threads(1 if mode == "concurrent" else settings.threads):
        stage_ms = time_stages(runner_model, frames, settings)
        assignment = assign_stages(stage_ms, workers)
        with _runner(runner_model, mode, assignment, settings.device) as runner:
            runs_ms, stopped = _time_runs(
                runner.run, model.initial_state(1), frames, settings, stop_above_ms
            )
    return StreamTiming(
        genome_id=genome.id,
        mode=mode,
        pipeline_depth=genome.pipeline_depth,
        num_workers=workers,
        latency_frames=model.layout.latency_frames,
        runs_ms=runs_ms,
        stage_ms=tuple(stage_ms),
        assignment=assignment,
        device=device_signature(settings.device, settings.threads),
        stopped_early=stopped,
    )


def time_stages(model: Any, frames: list[Tensor], settings: Settings) -> list[float]:
    """Milliseconds per frame of every stage alone (median over runs of ``frames``)."""
    state = model.initial_state(1)
    runs: list[list[float]] = []
    with torch.inference_mode(), without_gc():
        for _ in range(max(settings.warmup, 2) + settings.runs):
            totals = [0.0] * model.num_stages
            for frame in frames:
                parts = []
                for stage in range(model.num_stages):
                    start = _now(frame)
                    parts.append(model.run_stage(stage, frame, state))
                    totals[stage] += _now(frame) - start
                _, state = model.assemble(state, parts)
            runs.append([total * 1000 / len(frames) for total in totals])
    timed = runs[max(settings.warmup, 2) :]
    return [statistics.median(run[stage] for run in timed) for stage in range(model.num_stages)]


def _prepare(
    genome: Genome, num_classes: int, settings: Settings, temporal_skips: bool
) -> StreamingTVN:
    with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG left as it was
        torch.manual_seed(settings.seed)
        model = build_streaming_model(genome, num_classes, temporal_skips=temporal_skips)
    return model.eval().to(settings.device)


def _num_workers(mode: Mode, settings: Settings, num_stages: int) -> int:
    if mode == "one_after_another":
        return 1
    return num_stages if settings.device == "cuda" else min(settings.threads, num_stages)


def _frames(genome: Genome, output_rate: int, settings: Settings) -> list[Tensor]:
    count = output_rate * math.ceil(MIN_FRAMES_PER_RUN / output_rate)
    generator = torch.Generator().manual_seed(settings.seed)
    shape = (count, 1, 3, genome.resolution, genome.resolution)
    return list(torch.randn(shape, generator=generator).to(settings.device).unbind(0))


@contextlib.contextmanager
def _runner(model: Any, mode: Mode, assignment: Assignment, device: str) -> Iterator[Any]:
    if mode == "one_after_another":
        yield OneAfterAnother(model)
    elif device == "cuda":
        yield StreamPipeline(model)
    else:
        with ThreadedPipeline(model, assignment) as pipeline:
            yield pipeline


RunFrames = Callable[[list[Tensor], list[Tensor]], tuple[list[Tensor], list[Tensor]]]


def _time_runs(
    run: RunFrames,
    state: list[Tensor],
    frames: list[Tensor],
    settings: Settings,
    stop_above_ms: float | None,
) -> tuple[tuple[float, ...], bool]:
    """Milliseconds per frame, one entry per run of ``frames``; the schedule is the profiler's
    (``tvnsearch.measure.timing.schedule_runs``), in whole runs of ``frames``."""

    def timed(num_runs: int) -> tuple[float, ...]:  # milliseconds per run of all the frames
        nonlocal state
        times = []
        for _ in range(num_runs):
            start = _now(frames[0])
            _, state = run(frames, state)
            times.append((_now(frames[0]) - start) * 1000)
        return tuple(times)

    per_run = None if stop_above_ms is None else stop_above_ms * len(frames)
    with torch.inference_mode(), without_gc():
        runs_ms, stopped = schedule_runs(timed, settings, per_run)
    return tuple(ms / len(frames) for ms in runs_ms), stopped


def _now(like: Tensor) -> float:
    # A stream of frames is timed as it is seen: the GPU's work done before the clock reads.
    if like.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter()
