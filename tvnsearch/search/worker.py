"""The worker function: a genome and a task in, an ``Evaluation`` out; it never raises.

A worker process prepares the dataset once (the frame cache decodes each video once per machine)
and keeps it for every later candidate of the same task. Whatever goes wrong with a candidate,
or with the data on this node, is a ``FAILED`` evaluation with the reason.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tvnsearch.genome.genes import Genome
from tvnsearch.status import Status

if TYPE_CHECKING:
    from torch.nn import Module

    from tvnsearch.data.clips import ClipSpec
    from tvnsearch.search.recipe import RunConfig
    from tvnsearch.train.training import TrainConfig, TrainData

Evaluator = Callable[[Genome, Any], "Evaluation"]  # ``evaluate``, or a stand-in for tests


@dataclass(frozen=True)
class Task:
    """What every candidate of a search is trained on; the same for all of them."""

    data_path: str
    cache_dir: str | None
    cache_size: int
    val_fraction: float
    split_seed: int
    train: TrainConfig
    keep_weights: bool = True  # return the trained weights, for the driver to keep


@dataclass(frozen=True)
class Evaluation:
    status: Status  # trained or failed
    reason: str | None = None
    fitness: float | None = None
    top1: float | None = None
    top5: float | None = None
    mean_ap: float | None = None
    train_seconds: float | None = None
    worker_node: str | None = None  # host name and process id that trained it
    # A safetensors file (``tvnsearch.train.weights``): tiny networks, so a few hundred KB at most.
    weights: bytes | None = field(default=None, repr=False)

    def measurements(self) -> dict[str, float | str | None]:
        """The lineage columns this evaluation fills."""
        fields = dataclasses.asdict(self)
        del fields["status"], fields["fitness"], fields["weights"]
        return fields


def worker_node() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def failed(reason: str, **fields: float | str | None) -> Evaluation:
    return Evaluation(Status.FAILED, reason=reason, worker_node=worker_node(), **fields)


def evaluate(genome: Genome, task: Task) -> Evaluation:
    """Train ``genome`` on ``task`` and score it (see ``tvnsearch.train.training.train_genome``)."""
    started = time.perf_counter()
    try:
        from tvnsearch.train.training import train_model

        data = prepared_data(task)
        result, model = train_model(genome, data, task.train)
        keep = task.keep_weights and model is not None
        weights = _weights(genome, result.clip, model, data) if keep else None
    except Exception as exc:  # the data, or a bug: a result for this candidate, not a crash
        seconds = time.perf_counter() - started
        return failed(f"{type(exc).__name__}: {exc}".splitlines()[0], train_seconds=seconds)
    return Evaluation(
        status=result.status,
        reason=result.reason,
        fitness=result.fitness,
        top1=result.top1,
        top5=result.top5,
        mean_ap=result.mean_ap,
        train_seconds=result.train_seconds,
        worker_node=worker_node(),
        weights=weights,
    )


def _weights(genome: Genome, clip: ClipSpec, model: Module, data: TrainData) -> bytes:
    from tvnsearch.train.weights import ModelInfo, weights_bytes

    ds = data.dataset
    return weights_bytes(model, ModelInfo(genome, clip, ds.classes, ds.multi_label))


def prepared_data(task: Task) -> TrainData:
    """The dataset of ``task``, prepared once per process (the frame cache decodes it once)."""
    t = task
    return _prepare(t.data_path, t.cache_dir, t.cache_size, t.val_fraction, t.split_seed)


@functools.cache  # once per worker process and dataset
def _prepare(
    path: str, cache_dir: str | None, cache_size: int, val_fraction: float, split_seed: int
) -> TrainData:
    from tvnsearch.data.frame_cache import FrameCache
    from tvnsearch.data.frame_cache import cache_dir as default_cache_dir
    from tvnsearch.train.training import prepare_data

    cache = FrameCache(default_cache_dir(cache_dir), cache_size)
    return prepare_data(
        path, cache, val_fraction=val_fraction, split_seed=split_seed, num_workers=1
    )


def task_of(config: RunConfig) -> Task:
    data = config.data
    return Task(
        data_path=data.path,
        cache_dir=data.cache_dir,
        cache_size=data.cache_size,
        val_fraction=data.val_fraction,
        split_seed=data.split_seed,
        train=config.train,
        keep_weights=config.search.keep_weights,
    )
