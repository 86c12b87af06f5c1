"""The worker function: a genome and a task in, an ``Evaluation`` out; it never raises.

A worker process prepares the dataset once (the frame cache decodes each video once per machine)
and keeps it for every later candidate of the same task. Whatever goes wrong with a candidate,
or with the data on this node, is a ``FAILED`` evaluation with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvnsearch.errors import describe_error
from tvnsearch.genome.genes import Genome
from tvnsearch.search.progress import progress_bar
from tvnsearch.status import Status
from tvnsearch.train.fidelity import Cuts, rungs_to_json

if TYPE_CHECKING:
    from torch.nn import Module

    from tvnsearch.data.clips import ClipSpec
    from tvnsearch.search.recipe import DataSection, RunConfig
    from tvnsearch.train.config import TrainConfig
    from tvnsearch.train.training import TrainData

Evaluator = Callable[["Job", Any], "Evaluation"]  # ``evaluate``, or a stand-in for tests
MAX_LOG_BYTES = 1 << 20  # of what a worker prints per candidate: the end, where errors are


@dataclass(frozen=True)
class Task:
    """What every candidate of a search is trained on; the same for all of them."""

    data: DataSection
    train: TrainConfig
    keep_weights: bool = True  # return the trained weights, for the driver to keep
    # Videos the driver found unreadable while caching: every worker leaves them out, so that
    # every node trains on the same videos, and none tries them again.
    leave_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    """One candidate to train, and how: what differs from one candidate to the next."""

    genome: Genome
    # Multi-fidelity: the fitness needed at each rung to go on (``tvnsearch.train.fidelity``);
    # (): train in full.
    cuts: Cuts = ()
    # The parent's trained weights (safetensors), to start from where shapes allow
    # (``search.inherit_weights``); None: from scratch.
    parent_weights: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Evaluation:
    status: Status  # trained or failed
    reason: str | None = None
    fitness: float | None = None
    # Standard error of fitness over the validation videos (``TrainResult.fitness_noise``).
    fitness_noise: float | None = None
    top1: float | None = None
    top5: float | None = None
    mean_ap: float | None = None
    train_seconds: float | None = None
    iterations: int | None = None  # trained: the full budget, or the rung where it stopped
    rungs: str | None = None  # JSON [[iterations, fitness], ...] at each rung scored
    # With inherited weights: the share of the network's parameters that started from the
    # parent's (``tvnsearch.train.weights.inherit``).
    inherited: float | None = None
    worker_node: str | None = None  # host name and process id that trained it
    # A safetensors file (``tvnsearch.train.weights``): tiny networks, so a few hundred KB at most.
    weights: bytes | None = field(default=None, repr=False)
    # The whole story for the run folder's log: a traceback, what the worker printed.
    log: str | None = field(default=None, repr=False)

    def measurements(self) -> dict[str, float | str | None]:
        """The lineage columns this evaluation fills."""
        fields = dataclasses.asdict(self)
        del fields["status"], fields["fitness"], fields["weights"], fields["log"]
        return fields


def worker_node() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def failed(exc: BaseException, **fields: float | str | None) -> Evaluation:
    """The evaluation of a candidate whose evaluation raised ``exc`` (call it where it is caught:
    the log keeps its traceback)."""
    return Evaluation(
        Status.FAILED,
        reason=describe_error(exc),
        worker_node=worker_node(),
        log=traceback.format_exc(),
        **fields,
    )


def lost(attempts: int, exc: BaseException) -> Evaluation:
    """The evaluation of a candidate whose worker process died ``attempts`` times (a crash, the
    out-of-memory killer, a node gone): recorded as failed, never lost."""
    reason = f"worker lost after {attempts} attempt(s): {type(exc).__name__}"
    return Evaluation(Status.FAILED, reason=reason, log=f"{reason}\n\n{exc}\n")


def evaluate(job: Job, task: Task) -> Evaluation:
    """Train the job's genome on ``task`` and score it, stopping at a rung where it falls below
    the job's cuts, starting from its parent's weights where given (see
    ``tvnsearch.train.training.train_genome``);
    what the worker prints meanwhile, on Python's streams or its file descriptors, goes into the
    evaluation's log."""
    with _captured_output() as output:
        evaluation = _evaluate(job, task)
    if not output.text.strip():
        return evaluation
    story = [evaluation.log, f"--- printed while evaluating ---\n{output.text}"]
    return dataclasses.replace(evaluation, log="\n".join(s for s in story if s))


def _evaluate(job: Job, task: Task) -> Evaluation:
    started, genome = time.perf_counter(), job.genome
    try:
        from tvnsearch.train.training import train_model

        data = prepared_data(task)
        result, model = train_model(
            genome, data, task.train, job.cuts, parent_weights=job.parent_weights
        )
        keep = task.keep_weights and model is not None
        weights = _weights(genome, result.clip, model, data) if keep else None
    except Exception as exc:  # the data, or a bug: a result for this candidate, not a crash
        return failed(exc, train_seconds=time.perf_counter() - started)
    return Evaluation(
        status=result.status,
        reason=result.reason,
        fitness=result.fitness,
        fitness_noise=result.fitness_noise,
        top1=result.top1,
        top5=result.top5,
        mean_ap=result.mean_ap,
        train_seconds=result.train_seconds,
        iterations=result.iterations if result.rungs else None,
        rungs=rungs_to_json(result.rungs) if result.rungs else None,
        inherited=result.inherited if job.parent_weights is not None else None,
        worker_node=worker_node(),
        weights=weights,
        log=result.traceback,
    )


@dataclass
class _Output:
    text: str = ""  # what was printed (its last ``MAX_LOG_BYTES``), once the block has ended


@contextlib.contextmanager
def _captured_output() -> Iterator[_Output]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, and Python's streams) to
    a temporary file while the block runs: a worker's output then reaches the candidate's log."""
    output = _Output()
    with tempfile.TemporaryFile() as file:
        streams = sys.stdout, sys.stderr
        saved = []
        for fd, stream in zip((1, 2), streams, strict=True):
            stream.flush()
            saved.append(os.dup(fd))
            os.dup2(file.fileno(), fd)
        text = open(file.fileno(), "w", closefd=False, errors="replace")  # noqa: SIM115
        sys.stdout = sys.stderr = text
        try:
            yield output
        finally:
            text.close()  # flushes; the descriptor stays open (closefd=False)
            sys.stdout, sys.stderr = streams
            for fd, old in zip((1, 2), saved, strict=True):
                os.dup2(old, fd)
                os.close(old)
            file.seek(max(0, file.seek(0, os.SEEK_END) - MAX_LOG_BYTES))
            output.text = file.read().decode(errors="replace")


def _weights(genome: Genome, clip: ClipSpec, model: Module, data: TrainData) -> bytes:
    from tvnsearch.train.weights import ModelInfo, weights_bytes

    ds = data.dataset
    return weights_bytes(model, ModelInfo(genome, clip, ds.classes, ds.multi_label))


def prepared_data(task: Task, *, show_progress: bool = False, threads: int = 1) -> TrainData:
    """The dataset of ``task``, prepared once per process (the frame cache decodes each video
    once). ``show_progress``: a bar while the videos are looked at (or decoded), on ``threads``
    threads (the driver's; a worker, pinned to its cores, uses one and stays silent)."""
    key = (task.data, task.leave_out)
    if key not in _PREPARED:  # once per worker process and dataset
        _PREPARED[key] = _prepare(task, show_progress=show_progress, threads=threads)
    return _PREPARED[key]


_PREPARED: dict[tuple[DataSection, tuple[str, ...]], TrainData] = {}


def _prepare(task: Task, *, show_progress: bool, threads: int) -> TrainData:
    from tvnsearch.train.training import prepare_data

    d = task.data
    bar = progress_bar("decoding videos", unit="video") if show_progress else None
    with bar or contextlib.nullcontext() as report:
        return prepare_data(
            d.path,
            d.frame_cache(),
            val_fraction=d.val_fraction,
            split_seed=d.split_seed,
            num_workers=threads,
            on_video=report,
            leave_out=frozenset(map(Path, task.leave_out)),
        )


def task_of(config: RunConfig, leave_out: tuple[str, ...] = ()) -> Task:
    return Task(
        data=config.data,
        train=config.train,
        keep_weights=config.search.keep_weights,
        leave_out=leave_out,
    )
