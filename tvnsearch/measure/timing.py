"""Timing a genome on the CPU or a CUDA GPU, in the process that measures (torch lives here).

CPU: ``time.perf_counter_ns`` around each forward pass, on a fixed number of intra-op threads.
CUDA: a pair of events recorded on the stream around each forward pass, read after one final
synchronisation, so that the kernels are timed, not the speed at which Python launches them.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import math
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tvnsearch.errors import describe_error
from tvnsearch.genome.cost import Cost
from tvnsearch.genome.genes import Genome
from tvnsearch.measure.file_timing import time_elsewhere
from tvnsearch.measure.memory import available_bytes, is_out_of_memory, peak_memory_bytes
from tvnsearch.measure.profile import PROBE_RUNS, Settings
from tvnsearch.measure.runtimes import RUNTIMES, Forward, prepare
from tvnsearch.models.builder import TVN, build_model
from tvnsearch.models.layers import NonLocal
from tvnsearch.status import Status

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
# A cold run pays for allocations and kernel selection: only this far over the probe's threshold
# does it alone prove a network too slow.
COLD_FACTOR = 4.0
# From this many parameters on, a network to be timed gets tiled weights (``tile_weights``): below
# it the usual initialisation is the quicker (about 10 M parameters: 0.1 s either way).
TILED_WEIGHTS_PARAMS = 10_000_000
_TILE = 1_048_573  # a prime: no two rows of a weight get the same numbers (see tile_weights)


def time_genome(
    genome: Genome, num_classes: int, settings: Settings, cost: Cost, stop_above_ms: float | None
) -> dict[str, Any]:
    """The measured fields of a ``Profile``: status, timed runs and peak memory."""
    free = available_bytes(settings.device)
    if cost.min_memory_bytes > free:  # building it could bring the out-of-memory killer
        return {
            "status": Status.REJECTED,
            "reason": f"needs at least {cost.min_memory_bytes / 2**20:,.0f} MiB, "
            f"{free / 2**20:,.0f} MiB free on {settings.device}",
        }
    model, clip = _prepare(genome, num_classes, settings, cost)
    elsewhere = {}
    with tempfile.TemporaryDirectory(prefix="tvnsearch-runtime-") as folder:
        runtime = RUNTIMES[settings.runtime]
        forward, _ = prepare(runtime, model, clip, Path(folder), settings.threads)
        if settings.command:  # the file just written and checked, timed on the other device
            path, shape = Path(folder) / str(runtime.file_name), tuple(clip.shape[1:])
            timed = time_elsewhere(settings.command, path, shape, settings)
            runs_ms = timed.runs_ms
            stopped = stop_above_ms is not None and min(runs_ms) > stop_above_ms
            elsewhere = {"elsewhere": timed}
        else:
            runs_ms, stopped = _time_runs(forward, clip, settings, stop_above_ms)
        del forward  # a session may hold its file open
    if stopped:
        return {"status": Status.REJECTED, "stopped_early": True, "runs_ms": runs_ms, **elsewhere}
    peak = peak_memory_bytes(model, clip)
    measured = {"status": Status.ADMITTED, "runs_ms": runs_ms, "peak_memory_mb": peak / 2**20}
    return measured | elsewhere


def _prepare(
    genome: Genome, num_classes: int, settings: Settings, cost: Cost
) -> tuple[nn.Module, torch.Tensor]:
    if cost.params >= TILED_WEIGHTS_PARAMS:
        with torch.device("meta"):  # shapes only: nothing allocated or drawn yet
            model = build_model(genome, num_classes)
        model = model.to_empty(device=settings.device).eval()
        tile_weights(model, settings.seed)
    else:
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG left as it was
            torch.manual_seed(settings.seed)
            model = build_model(genome, num_classes).eval().to(settings.device)
    generator = torch.Generator().manual_seed(settings.seed)
    shape = (1, 3, genome.num_frames, genome.resolution, genome.resolution)
    return model, torch.randn(shape, generator=generator).to(settings.device)


@torch.no_grad()
def tile_weights(model: nn.Module, seed: int) -> None:
    """Give a model built on the meta device weights to be timed with, at the speed of a copy.

    Drawing a network's initial weights costs far more than running it once it is large: 15-40 s
    for the 2 billion parameters that some ``tvn.toml`` genomes have, against a budget of 100 ms.
    Speed does not depend on the values (dense kernels take no data-dependent branches), so every
    convolution and linear layer gets one seeded block of normal numbers, repeated and scaled as
    ``tvnsearch.models.instances.init_weights`` draws them (Kaiming, fan out; the head 0.01), and
    every batch norm starts as new, a non-local block's last one at zero as its own ``__init__``
    sets it. Timed runs agreed with those of the usual initialisation within 2 % (225-555 M
    parameters), built 2.5-5x faster. The scales matter to a runtime's check (``runtimes``): a
    network whose activations grow without bound (they reached 1e9 in a 155 M-parameter one with
    fan-in scales and live non-local blocks) turns float32 rounding into O(1) differences.
    """
    pattern = torch.randn(_TILE, generator=torch.Generator().manual_seed(seed))
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d | nn.Linear):
            _fill(m.weight, pattern, _init_std(m, model))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm3d):
            m.reset_parameters()
    for m in model.modules():
        if isinstance(m, NonLocal):
            m.norm.weight.zero_()


def _init_std(m: nn.Module, model: nn.Module) -> float:
    head = getattr(model, "head", None)  # a clip network's, or a streaming one's
    if head is not None and m is head.fc:
        return 0.01
    _, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
    return math.sqrt(2.0 / max(1, fan_out))


def _fill(weight: torch.Tensor, pattern: torch.Tensor, std: float) -> None:
    flat = weight.view(-1)
    piece = pattern.to(flat.device) * std
    for start in range(0, flat.numel(), _TILE):
        end = min(start + _TILE, flat.numel())
        flat[start:end].copy_(piece[: end - start])


@functools.cache
def keep_freed_memory() -> None:
    """Keep freed memory in this process's heap (glibc only; elsewhere nothing changes).

    By default glibc hands blocks over 32 MiB back to the OS when they are freed, so every
    forward pass of a network with large activations page-faults them in anew: up to half its
    runtime on this project's machines, and the part that varied most between measurements (a
    15 ms network: CV 10 % across five measurements, 1.5 % with this). A long-running inference
    process, or a caching allocator, reuses that memory: the steady state is what is timed.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def _time_runs(
    model: Forward, clip: torch.Tensor, settings: Settings, stop_above_ms: float | None
) -> tuple[tuple[float, ...], bool]:
    keep_freed_memory()
    if not clip.is_cuda:
        timer = partial(_time_cpu, model, clip)
    elif isinstance(model, nn.Module):  # eager, TorchScript
        timer = _CudaTimer(model, clip)
    else:  # a runtime with streams of its own, outside PyTorch's
        timer = partial(_time_cuda_wall, model, clip)
    cold = partial(_cold_prefix, model, clip) if isinstance(model, TVN) else None
    with torch.inference_mode(), without_gc():
        return schedule_runs(timer, settings, stop_above_ms, cold)


def schedule_runs(
    timer: Callable[[int], tuple[float, ...]],
    settings: Settings,
    stop_above_ms: float | None,
    cold: Callable[[float | None], tuple[float, bool]] | None = None,
) -> tuple[tuple[float, ...], bool]:
    """The timed runs of ``timer(n)`` (which times n runs, in ms each): a cold run, the probe,
    the rest of the warm-up, then at least ``settings.runs`` runs and ``settings.min_seconds``.

    With ``stop_above_ms`` it stops early, returning ``(runs so far, True)``: when the cold run
    (``cold(limit)`` times it and may stop part-way, once over ``limit``) is ``COLD_FACTOR``
    times over, or when even the probe's fastest run is over. So no rejection costs more than a
    few times the budget, however slow the network.
    """
    limit = None if stop_above_ms is None else COLD_FACTOR * stop_above_ms
    cold_ms, complete = cold(limit) if cold is not None else (timer(1)[0], True)
    if limit is not None and (not complete or cold_ms > limit):
        return (cold_ms,), True
    probe = timer(PROBE_RUNS)
    if stop_above_ms is not None and min(probe) > stop_above_ms:
        return probe, True
    timer(max(settings.warmup - 1 - PROBE_RUNS, 0))
    runs = timer(_num_runs(settings.min_seconds * 1000, probe, settings.runs))
    # A probe slowed by a passing load plans too few runs: top up to min_seconds.
    while (missing_ms := settings.min_seconds * 1000 - sum(runs)) > 0:
        runs += timer(_num_runs(missing_ms, runs, 1))
    return runs, False


def _cold_prefix(model: TVN, clip: torch.Tensor, limit_ms: float | None) -> tuple[float, bool]:
    """The cold run, one block instance at a time: its milliseconds so far, and whether it ran
    to the end (it stops once over ``limit_ms``: the network cannot be faster than its prefix)."""
    clock = _clock(clip)
    start, x = clock(), clip
    for instance in (i for block in model.blocks for i in block):
        x = instance(x)
        if clip.is_cuda:
            torch.cuda.synchronize()
        elapsed = (clock() - start) / 1e6
        if limit_ms is not None and elapsed > limit_ms:
            return elapsed, False
    model.head(x)
    if clip.is_cuda:
        torch.cuda.synchronize()
    return (clock() - start) / 1e6, True


def _clock(clip: torch.Tensor) -> Callable[[], int]:
    # On one intra-op thread every kernel runs in this thread: its CPU time is the network's
    # work, and the time it spent descheduled (another process, a hypervisor's steal) is left out.
    one_thread = not clip.is_cuda and torch.get_num_threads() == 1
    return time.thread_time_ns if one_thread else time.perf_counter_ns


def _num_runs(total_ms: float, seen: tuple[float, ...], at_least: int) -> int:
    per_run_ms = max(statistics.median(seen), 1e-3)
    return max(at_least, math.ceil(total_ms / per_run_ms))


def _time_cuda_wall(model: Forward, clip: torch.Tensor, num_runs: int) -> tuple[float, ...]:
    """Wall time from a synchronised start to a synchronised end, run by run."""
    times = []
    for _ in range(num_runs):
        torch.cuda.synchronize()
        start = time.perf_counter_ns()
        model(clip)
        torch.cuda.synchronize()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return tuple(times)


def _time_cpu(model: Forward, clip: torch.Tensor, num_runs: int) -> tuple[float, ...]:
    clock = _clock(clip)
    times = []
    for _ in range(num_runs):
        start = clock()
        model(clip)
        times.append((clock() - start) / 1e6)
    return tuple(times)


class _CudaTimer:
    """Times forward passes on the GPU as one CUDA graph each, once the cold run has warmed it.

    Events on the stream time what runs between them, and a tiny network's kernels are short:
    launched one by one, the GPU waits on the CPU between them, and the figure is the launching
    thread's speed (on an H200, up to 2x slower with training on the CPU's other cores). A graph
    replays the whole forward pass in one launch: the figure is the network's work on the GPU. A
    network that cannot be captured is timed kernel launch by kernel launch, as before.
    """

    def __init__(self, model: nn.Module, clip: torch.Tensor) -> None:
        self.model, self.clip = model, clip
        self.forward: Callable[[], object] | None = None

    def __call__(self, num_runs: int) -> tuple[float, ...]:
        if self.forward is None:
            self.forward = _captured(self.model, self.clip)
        pairs = []
        torch.cuda.synchronize()
        for _ in range(num_runs):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            self.forward()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize()
        return tuple(start.elapsed_time(end) for start, end in pairs)


def _captured(model: nn.Module, clip: torch.Tensor) -> Callable[[], object]:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # as torch.cuda.graphs asks: warm up off the default stream
        model(clip)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            model(clip)
    except RuntimeError:  # an op that cannot be captured: launch by launch
        torch.cuda.synchronize()
        return lambda: model(clip)
    return graph.replay


def failure(exc: BaseException, device: str) -> dict[str, Any]:
    """The fields of a ``Profile`` for a candidate that raised ``exc`` while being measured."""
    if device == "cuda":
        torch.cuda.empty_cache()
    status = Status.REJECTED if is_out_of_memory(exc) else Status.FAILED
    return {"status": status, "reason": describe_error(exc), "log": traceback.format_exc()}


@contextlib.contextmanager
def without_gc() -> Iterator[None]:
    # As timeit does: a garbage collection inside a timed run is noise, not the network's cost.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def fixed_threads(num_threads: int) -> Iterator[None]:
    """Run the body on ``num_threads`` intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
