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

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tvnsearch.data.frame_cache import Budget, CachedVideo, Found, Passing, listing_record
from tvnsearch.errors import InputError, Problem, SearchStopped
from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Genome
from tvnsearch.measure.affinity import pin_process, split_cores, usable_cores
from tvnsearch.measure.device import DeviceSignature, check_device
from tvnsearch.measure.neighbours import Neighbours
from tvnsearch.measure.profile import DEFAULT_SETTINGS, Profile, Settings
from tvnsearch.measure.profiler import ProfileCache, Profiler
from tvnsearch.measure.roofline import Roofline
from tvnsearch.search.worker import Evaluation, Evaluator, Job, failed, lost, worker_node
from tvnsearch.status import Status

if TYPE_CHECKING:
    from tvnsearch.search.recipe import DataSection

MIN_TIMEOUT_SECONDS = 60.0  # any measurement: building, a cold run, warm-up and timed runs
TIMEOUT_PER_BUDGET = 100  # and at most this many times its early-exit threshold


class _ProfilerActor:
    def __init__(
        self,
        settings: Settings,
        cores: tuple[int, ...] | Slot,
        known: list[Profile],
        neighbours: str | None,
    ):
        import torch  # in the actor's process: the driver that starts it needs no torch

        self.cores = cores if not isinstance(cores, Slot) else cores.on_this_node(settings.threads)
        self.pinned = pin_process(self.cores)
        _unniced()
        torch.set_num_threads(settings.threads)
        pause = Neighbours(neighbours) if neighbours else None
        node = f"{socket.gethostname()} node {_node_id()[:8]}"
        self.profiler = Profiler(settings, cache=ProfileCache(known), neighbours=pause, node=node)

    def signature(self) -> DeviceSignature:
        return self.profiler.signature

    def where(self) -> tuple[str, tuple[int, ...]]:
        """The Ray node this profiler runs on, and its cores there."""
        return _node_id(), tuple(self.cores)

    def roofline(self) -> Roofline:
        return self.profiler.roofline

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


@dataclass(frozen=True)
class Slot:
    """The ``index``-th of ``count`` profilers of a node that the driver does not see (a target
    device placed by a custom resource): its cores are chosen on that node."""

    index: int
    count: int

    def on_this_node(self, threads: int) -> tuple[int, ...]:
        cores = usable_cores()
        reserved = cores[-self.count * threads :]  # all of them on a device that only measures
        mine = reserved[self.index * threads : (self.index + 1) * threads]
        return mine or reserved[-threads:]


def _unniced() -> None:
    """Ray starts its workers at nice 15: any process at the default priority that lands on the
    profiler's core (the driver, Ray's own) would then take it over, and a measurement of 2 s
    took 66 s. The profiler asks for the default priority back (not allowed everywhere)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)


class RemoteProfiler:
    """A profiler in its own Ray actor, pinned to ``cores``; ``measure`` blocks until done.

    A measurement that outlasts ``timeout_seconds`` (``TIMEOUT_PER_BUDGET`` times the budget at
    least) is a failed record and the actor is replaced. An actor that dies (a crash, the
    out-of-memory killer) is replaced after a back-off of 1, 2, 4, ... seconds, its candidate
    failed (it may well be what killed it); after ``max_deaths`` deaths in a row the profiler
    is dead, and ``measure`` raises ``SearchStopped``: every later candidate would fail the same.
    A new actor starts with the profiles of ``known()``: nothing measured is measured again.
    """

    def __init__(
        self,
        settings: Settings,
        cores: tuple[int, ...] | Slot,
        *,
        resources: dict[str, float] | None = None,
        known: Callable[[], list[Profile]] = list,
        neighbours: str | None = None,
        timeout_seconds: float = 600.0,
        max_deaths: int = 3,
    ) -> None:
        self.settings, self.slot, self.known = settings, cores, known
        self.resources = dict(resources or {})  # custom resources: the node to run on
        self.neighbours = neighbours  # a folder where the node's training workers register
        self.timeout_seconds, self.max_deaths = timeout_seconds, max_deaths
        self.num_deaths = 0  # in a row
        self._start()

    def _start(self) -> None:
        options = {
            "num_cpus": self.settings.threads,
            "num_gpus": 1 if self.settings.device == "cuda" else 0,
            "resources": self.resources,
            "max_concurrency": 1,  # one measurement at a time on this device
            "max_restarts": 0,  # replaced here, with a back-off and a limit
        }
        actor_class = ray.remote(_ProfilerActor).options(**options)
        self.actor = actor_class.remote(self.settings, self.slot, self.known(), self.neighbours)
        try:
            self.signature: DeviceSignature = ray.get(self.actor.signature.remote())
        except ray.exceptions.RayActorError as exc:  # it could not start: no candidate would do
            raise SearchStopped(
                f"the {self.settings.device} profiler did not start: {exc}"
            ) from None
        self.node, self.cores = ray.get(self.actor.where.remote())

    def roofline(self) -> Roofline:
        return ray.get(self.actor.roofline.remote())

    def measure(
        self,
        genome: Genome,
        num_classes: int,
        *,
        stop_above_ms: float | None = None,
        again: bool = False,
    ) -> Profile:
        ref = self.actor.measure.remote(genome, num_classes, stop_above_ms, again)
        timeout = self.timeout_seconds
        if stop_above_ms is not None:
            timeout = min(
                timeout, max(MIN_TIMEOUT_SECONDS, TIMEOUT_PER_BUDGET * stop_above_ms / 1e3)
            )
        try:
            profile = ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            ray.kill(self.actor)
            self._start()
            return _failed(genome, num_classes, self.signature, f"no answer within {timeout:g} s")
        except ray.exceptions.RayActorError as exc:
            return self._died(genome, num_classes, exc)
        self.num_deaths = 0
        return profile

    def _died(self, genome: Genome, num_classes: int, exc: BaseException) -> Profile:
        self.num_deaths += 1
        reason = f"the profiler process died: {type(exc).__name__}"
        if self.num_deaths >= self.max_deaths:
            raise SearchStopped(
                f"the {self.settings.device} profiler died {self.num_deaths} times in a row "
                f"(last while measuring genome {genome.id}: {type(exc).__name__})"
            )
        time.sleep(2 ** (self.num_deaths - 1))
        self._start()
        return _failed(genome, num_classes, self.signature, reason, log=f"{reason}\n\n{exc}\n")

    def stats(self) -> dict[str, Any]:
        return ray.get(self.actor.stats.remote())

    def close(self) -> None:
        ray.kill(self.actor)


def _failed(
    genome: Genome, num_classes: int, device: DeviceSignature, reason: str, log: str = ""
) -> Profile:
    cost = count_cost(genome, num_classes)
    status = Status.FAILED
    return Profile(
        genome.id, num_classes, device, status, cost.params, cost.flops, reason=reason, log=log
    )


def start_profiler(
    settings: Settings = DEFAULT_SETTINGS,
    *,
    cores: tuple[int, ...] | Slot | None = None,
    resources: dict[str, float] | None = None,
    known: Callable[[], list[Profile]] = list,
    neighbours: str | None = None,
) -> RemoteProfiler:
    """Start a profiler actor on ``cores`` (default: the last ``settings.threads`` cores), on a
    node with ``resources`` where given (then ``cores`` is a ``Slot``: chosen on that node).

    Ray must be initialised. The actor holds ``settings.threads`` of Ray's CPUs, the GPU for
    CUDA, and ``resources``.
    """
    if not resources:  # this machine's device; a placed profiler checks its own
        check_device(settings.device, threads=settings.threads, source="profiler")
    if cores is None:
        cores = Slot(0, 1) if resources else split_cores(settings.threads)[0]
    cores = cores if isinstance(cores, Slot) else tuple(cores)
    return RemoteProfiler(settings, cores, resources=resources, known=known, neighbours=neighbours)


def check_placeable(resources: dict[str, float], *, source: str) -> None:
    """``InputError`` naming ``profiler.resources`` when no live node of the cluster has them."""
    if not resources:
        return
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if any(all(node.get(k, 0) >= v for k, v in resources.items()) for node in nodes):
        return
    custom = sorted({k for node in nodes for k in node if not _is_ray_own(k)})
    why = f"no node of the Ray cluster has {resources} (its custom resources: {custom or 'none'})"
    raise InputError(source, [Problem("profiler.resources", why)])


def _is_ray_own(resource: str) -> bool:
    return resource in ("CPU", "GPU", "memory", "object_store_memory") or resource.startswith(
        ("node:", "accelerator_type:")
    )


# Training: training tasks in flight, results in completion order.


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def driver_cores(placement: Placement) -> tuple[tuple[int, ...] | None, str | None]:
    """The cores the driver's helpers may use on its own node (None: any), and where they
    register to be paused while a profiler there measures (None: no profiler there)."""
    reserved = placement.profiler_cores.get(_node_id())
    if reserved is None:
        return None, None
    rest = tuple(sorted(set(usable_cores()) - set(reserved)))
    return rest or None, placement.neighbours


@dataclass(frozen=True)
class Placement:
    """Where training may run: never on a profiler's cores of that profiler's node."""

    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    # The Ray nodes that hold profilers, and the cores they are pinned to there.
    profiler_cores: dict[str, tuple[int, ...]] = field(default_factory=dict)
    neighbours: str | None = None  # where workers on a profiler's node register to be paused


def _train(evaluator: Evaluator, job: Job, task: Any, placement: Placement) -> Evaluation:
    reserved = placement.profiler_cores.get(_node_id())
    beside_profiler = reserved is not None
    if beside_profiler and (rest := set(usable_cores()) - set(reserved)):
        pin_process(rest)
    pausable = beside_profiler and placement.neighbours is not None
    try:
        import torch

        from tvnsearch.train.memory import keep_freed_memory

        keep_freed_memory()  # this process trains one network after another
        torch.set_num_threads(max(1, int(placement.cpus_per_worker)))
        with Neighbours(placement.neighbours).registered() if pausable else nullcontext():
            evaluation = evaluator(job, task)
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

    def submit(self, key: int, job: Job) -> None:
        ref = self._remote.remote(self.evaluator, job, self.task_ref, self.placement)
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


# The frame cache, built by Ray tasks over the cluster's CPUs before the search begins.

CHUNKS_PER_CPU = 4  # chunks of videos per CPU: small enough to balance, large enough to batch


def cache_videos(
    data: DataSection,
    paths: list[Path],
    *,
    source: str,
    on_video: Callable[[int, int], None] | None = None,
) -> dict[Path, str]:
    """Decode ``paths`` into the frame cache of ``data`` as Ray tasks, one CPU each, each video
    claimed by one task of each build: one build on the nodes that share the driver's cache
    folder, one more on each node that does not (its own cache, built in parallel with the
    rest). Returns why each video found unreadable cannot be read (a failure of the machine's,
    retried in vain, is not among them: it is tried again later). ``InputError`` (from
    ``source``) once the cache's budget is sure to be passed; the tasks left are cancelled."""
    todo = sorted({str(p) for p in paths})
    missing = sorted(map(str, data.frame_cache().missing(map(Path, todo))))  # the driver's
    builds, shared = _builds(data)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    size = max(1, min(64, len(todo) // (CHUNKS_PER_CPU * cpus) or 1))
    remote = ray.remote(_cache_chunk)
    running: dict[ray.ObjectRef, tuple[int, bool]] = {}  # videos, and in the driver's cache
    for build, nodes in enumerate(builds):
        drivers = build == 0 and shared
        videos = missing if drivers else todo  # another node's cache: the tasks look
        chunks = [videos[i : i + size] for i in range(0, len(videos), size)]
        for i, chunk in enumerate(chunks):
            where = _on(nodes[i % len(nodes)]) if nodes else {}
            ref = remote.options(num_cpus=1, max_retries=2, **where).remote(data, chunk)
            running[ref] = len(chunk), drivers
    budget = Budget(data.frame_cache(), len(missing), source)
    unreadable: dict[Path, str] = {}
    records: dict[str, dict] = {}  # what the driver's cache's listing keeps of each
    done, total = 0, sum(count for count, _ in running.values())
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            count, drivers = running.pop(ready[0])
            done += count
            found = ray.get(ready[0])
            bad = [(Path(p), why) for p, why, _, _ in found if why and not isinstance(why, Passing)]
            unreadable.update(bad)
            if drivers:
                budget.add_sizes(size for _, _, size, _ in found)
                records.update((p, record) for p, _, _, record in found if record is not None)
            if on_video is not None:
                on_video(done, total)
    finally:
        for ref in running:
            ray.cancel(ref)
    if records:  # opening the dataset next costs a stat per video, not a hash and an open
        data.frame_cache().add_to_listing(map(Path, todo), records)
    return unreadable


Chunk = list[tuple[str, str | None, int | None, dict | None]]


def _cache_chunk(data: DataSection, paths: list[str]) -> Chunk:
    """Cache ``paths`` into this node's frame cache of ``data``: for each, (path, why it is
    unreadable or None, the entry's bytes or None, what the dataset's listing keeps of it)."""
    cache = replace(data.frame_cache(), budget=None)  # the driver keeps the budget: of them all
    index = cache.index(map(Path, paths), on_skip=lambda _: None, listing=False)
    found: dict[Path, Found] = {**index.entries, **{s.path: s.reason for s in index.skipped}}
    out: Chunk = []
    for name in paths:
        path, result = Path(name), found[Path(name)]
        size = result.file.stat().st_size if isinstance(result, CachedVideo) else None
        record = listing_record(cache.root, result, _seen(path))
        out.append((name, None if isinstance(result, CachedVideo) else result, size, record))
    return out


def _seen(path: Path) -> list[int]:
    """The size and modification time a listing checks (empty: the video cannot be read)."""
    try:
        stat = path.stat()
    except OSError:
        return []
    return [stat.st_size, stat.st_mtime_ns]


def _builds(data: DataSection) -> tuple[list[list[str]], bool]:
    """The builds the cluster needs: the nodes sharing the driver's cache folder (``[]``: all of
    them, so Ray places each task where it likes), then each other node alone; and whether the
    first build is the driver's cache."""
    root = data.frame_cache().root
    root.mkdir(parents=True, exist_ok=True)
    probe = root / f".probe-{uuid.uuid4().hex}"
    probe.touch()
    try:
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]
        sees = ray.remote(_sees)
        looks = [sees.options(num_cpus=0, **_on(node)).remote(data, probe.name) for node in nodes]
        seen = ray.get(looks)
    finally:
        probe.unlink(missing_ok=True)
    sharing = [node for node, yes in zip(nodes, seen, strict=True) if yes]
    alone = [[node] for node, yes in zip(nodes, seen, strict=True) if not yes]
    if not sharing:
        return alone, False
    return [[] if not alone else sharing, *alone], True


def _sees(data: DataSection, probe: str) -> bool:
    return (data.frame_cache().root / probe).exists()


def _on(node: str) -> dict[str, Any]:
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}
