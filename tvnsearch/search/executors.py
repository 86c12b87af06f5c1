"""Ray, and only here: the dedicated profiler actor, and the training tasks of a search.

The actor reserves its CPUs in Ray's accounting (so Ray schedules no training there), pins its
process to the matching cores (so the operating system does not either) and fixes torch's thread
count to them. A Ray actor runs one call at a time, which makes it the single place where a
device is measured; it owns the cache. Training workers pin themselves to the other cores with
``tvnsearch.measure.affinity.pin_process``. With ``device="cuda"`` it reserves the GPU instead.

Training runs as Ray tasks (one per candidate; about a millisecond of overhead each), on an
embedded local Ray or a cluster; ``RayExecutor`` hands results back in the order they finish.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray

from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Genome
from tvnsearch.measure.affinity import pin_process, split_cores, usable_cores
from tvnsearch.measure.device import DeviceSignature, check_device
from tvnsearch.measure.profile import DEFAULT_SETTINGS, Profile, Settings
from tvnsearch.measure.profiler import ProfileCache, Profiler
from tvnsearch.search.worker import Evaluation, Evaluator, failed, lost, worker_node
from tvnsearch.status import Status


class _ProfilerActor:
    def __init__(self, settings: Settings, cores: tuple[int, ...], cache_path: str | None):
        import torch  # in the actor's process: the driver that starts it needs no torch

        self.pinned = pin_process(cores)
        torch.set_num_threads(settings.threads)
        self.profiler = Profiler(settings, cache=ProfileCache(cache_path))

    def signature(self) -> DeviceSignature:
        return self.profiler.signature

    def measure(
        self, genome: Genome, num_classes: int, stop_above_ms: float | None, again: bool
    ) -> Profile:
        return self.profiler.measure(genome, num_classes, stop_above_ms=stop_above_ms, again=again)

    def stats(self) -> dict[str, Any]:
        import torch

        return {
            "num_measurements": self.profiler.num_measurements,
            "cached": len(self.profiler.cache),
            "cores": sorted(os.sched_getaffinity(0)) if self.pinned else None,
            "threads": torch.get_num_threads(),
            "pid": os.getpid(),
        }

    def save_cache(self) -> None:
        self.profiler.cache.save()


class RemoteProfiler:
    """A profiler in its own Ray actor; ``measure`` blocks until the measurement is done."""

    def __init__(self, actor: Any, cores: tuple[int, ...]) -> None:
        self.actor = actor
        self.cores = cores
        self.signature: DeviceSignature = ray.get(actor.signature.remote())

    def measure(
        self,
        genome: Genome,
        num_classes: int,
        *,
        stop_above_ms: float | None = None,
        again: bool = False,
    ) -> Profile:
        """The actor's profile; if its process died (a crash, the OS out-of-memory killer), a
        ``FAILED`` record saying so, since the candidate may well be what killed it."""
        try:
            return ray.get(self.actor.measure.remote(genome, num_classes, stop_above_ms, again))
        except ray.exceptions.RayActorError as exc:
            cost = count_cost(genome, num_classes)
            reason = f"the profiler process died: {type(exc).__name__}"
            log = f"{reason}\n\n{exc}\n"
            return Profile(
                genome.id,
                num_classes,
                self.signature,
                Status.FAILED,
                cost.params,
                cost.flops,
                reason=reason,
                log=log,
            )

    def stats(self) -> dict[str, Any]:
        return ray.get(self.actor.stats.remote())

    def save_cache(self) -> None:
        ray.get(self.actor.save_cache.remote())

    def close(self) -> None:
        ray.kill(self.actor)


def start_profiler(
    settings: Settings = DEFAULT_SETTINGS,
    *,
    cores: tuple[int, ...] | None = None,
    cache_path: str | Path | None = None,
) -> RemoteProfiler:
    """Start the profiler actor on ``cores`` (default: the last ``settings.threads`` cores).

    Ray must be initialised. The actor holds ``len(cores)`` of Ray's CPUs, and the GPU for CUDA.
    """
    check_device(settings.device, threads=settings.threads, source="profiler")
    if cores is None:
        cores, _ = split_cores(settings.threads)
    options = {
        "num_cpus": len(cores),
        "num_gpus": 1 if settings.device == "cuda" else 0,
        "max_concurrency": 1,  # one measurement at a time on this device
        "max_restarts": 1,  # a crashed profiler comes back; the call it died in is a record
    }
    actor_class = ray.remote(_ProfilerActor)
    actor = actor_class.options(**options).remote(
        settings, tuple(cores), None if cache_path is None else str(cache_path)
    )
    return RemoteProfiler(actor, tuple(cores))


# Training: embedded or cluster Ray, training tasks in flight, results in completion order.


def start_ray(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connect to the cluster at ``address``, or start an embedded local Ray with ``num_cpus``
    (default: every usable core). False when Ray was running already (the caller keeps it)."""
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=num_cpus or len(usable_cores()), **quiet)
    return True


def stop_ray() -> None:
    ray.shutdown()


def node_of(profiler: RemoteProfiler) -> str:
    """The Ray node the profiler actor runs on."""
    return ray.get(profiler.actor.__ray_call__.remote(lambda _: _node_id()))


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


@dataclass(frozen=True)
class Placement:
    """Where training may run: never on the profiler's cores of the profiler's node."""

    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    profiler_node: str | None = None
    profiler_cores: tuple[int, ...] = ()


def _train(evaluator: Evaluator, genome: Genome, task: Any, placement: Placement) -> Evaluation:
    if placement.profiler_node == _node_id():
        pin_process(set(usable_cores()) - set(placement.profiler_cores))
    try:
        import torch

        torch.set_num_threads(max(1, int(placement.cpus_per_worker)))
        evaluation = evaluator(genome, task)
    except Exception as exc:  # an evaluator that raises must not end the search
        evaluation = failed(exc)
    # Several Ray nodes can share a host (and a host name): the node id tells them apart.
    where = evaluation.worker_node or worker_node()
    return replace(evaluation, worker_node=f"{where} node {_node_id()[:8]}")


class RayExecutor:
    """Training tasks on Ray; a worker process that dies is retried ``max_retries`` times by Ray,
    then its candidate is a ``FAILED`` evaluation saying so: never lost."""

    def __init__(
        self,
        evaluator: Evaluator,
        task: Any,
        placement: Placement | None = None,
        *,
        max_retries: int = 1,
    ) -> None:
        self.evaluator = evaluator
        self.task_ref = ray.put(task)  # sent once, not once per candidate
        self.placement = placement = placement or Placement()
        self.max_retries = max_retries
        self._remote = ray.remote(_train).options(
            num_cpus=placement.cpus_per_worker,
            num_gpus=placement.gpus_per_worker,
            max_retries=max_retries,
            retry_exceptions=False,  # an exception is the candidate's; only lost workers retry
        )
        self._running: dict[ray.ObjectRef, int] = {}

    @property
    def num_running(self) -> int:
        return len(self._running)

    def submit(self, key: int, genome: Genome) -> None:
        ref = self._remote.remote(self.evaluator, genome, self.task_ref, self.placement)
        self._running[ref] = key

    def wait(self, timeout: float) -> list[tuple[int, Evaluation]]:
        """The evaluations finished within ``timeout`` seconds (at least one if any is), in
        the order they finished."""
        if not self._running:
            return []
        refs = list(self._running)
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return [(self._running.pop(ref), self._result(ref)) for ref in ready]

    def _result(self, ref: ray.ObjectRef) -> Evaluation:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            return lost(1 + self.max_retries, exc)
