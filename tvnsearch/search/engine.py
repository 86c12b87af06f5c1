"""The search loop: ask, screen, train in parallel, tell in completion order, write the lineage.

::

    strategy.ask() ─▶ seen before? ── yes ─▶ tell a duplicate (its measurements copied)
                           │ no
                           ▼
                      gate.check ── rejected / failed ─▶ tell (never reaches a worker)
                           │ admitted
                           ▼
                      ready ─▶ executor (num_workers in flight) ─▶ tell, in completion order

Every tell appends one lineage row, with ``num_asked_at_tell``, in the order told: the lineage alone
rebuilds the strategy (``Strategy.replay``). The budget counts candidates told, whatever became of
them: a run of budget N asks exactly ids 0..N-1 and tells each once (a run that wants
``num_trained`` trained candidates ends once it has them, asking no more than it may still need).
Admitted candidates are screened while others train (at most ``num_workers`` wait ready), so that a
worker that finishes starts again at once; a genome asked while the same network trains waits for
that result and becomes a duplicate, instead of training twice. The driver flushes the lineage every
``flush_seconds``: a crash loses at most those rows, and a resume asks and runs them again.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from tvnsearch.genome.genes import Genome, genome_from_dict
from tvnsearch.genome.plan import network_id
from tvnsearch.interrupts import raise_if_signalled
from tvnsearch.measure.gate import Gate, Verdict
from tvnsearch.measure.profile import Profile
from tvnsearch.search.lineage import MEASUREMENTS, LineageRecord, LineageWriter
from tvnsearch.search.progress import Progress, Tally
from tvnsearch.search.strategies import Candidate, Result, Strategy
from tvnsearch.search.worker import Evaluation, Job
from tvnsearch.status import Status
from tvnsearch.train.fidelity import RungHistory, history_of, rungs_from_json, rungs_of

if TYPE_CHECKING:
    from tvnsearch.train.config import TrainConfig

VERDICT_POLL_SECONDS = 0.02  # while measurements run: how soon a verdict is acted on


class Executor(Protocol):
    """Runs evaluations, handing back each (key, evaluation) once, in the order they finish:
    ``tvnsearch.search.executors.RayExecutor``, or ``tvnsearch.search.inline.InlineExecutor``."""

    @property
    def num_running(self) -> int: ...

    def submit(self, key: int, job: Job) -> None: ...

    def wait(self, timeout: float) -> list[tuple[int, Evaluation]]: ...


@dataclass(frozen=True)
class Pending:
    candidate: Candidate
    asked_at: datetime
    measurements: dict[str, Any]  # the gate's, so far


@dataclass(frozen=True)
class Known:
    """The first evaluation of a network, which a duplicate (under any genes) copies."""

    candidate_id: int
    measurements: dict[str, Any]


@dataclass
class Engine:
    strategy: Strategy
    gate: Gate
    executor: Executor
    writer: LineageWriter
    run_id: str
    tally: Tally  # counts so far (a resumed run starts from the lineage's)
    num_workers: int = 1
    # Gate checks that may run at once on threads of their own (one per profiler): the driver
    # then never waits on a measurement. 0: each check runs in the driver's loop.
    num_measurers: int = 0
    known: dict[str, Known] = field(default_factory=dict)  # by network id
    # Multi-fidelity: the fitness at each rung of every candidate trained so far (a resumed run
    # starts from the lineage's), from which each candidate submitted gets its cuts. None: off.
    rung_history: RungHistory | None = None
    progress: Progress | None = None
    flush_seconds: float = 5.0
    poll_seconds: float = 1.0
    clock: Callable[[], float] = time.monotonic
    # Keeps a trained candidate's weights (candidate id, safetensors bytes); None drops them.
    save_weights: Callable[[int, bytes], None] | None = None
    # The weights kept for a candidate id (None if none were): set, each mutated child starts
    # from its parent's weights where shapes allow (``search.inherit_weights``); None: off.
    load_weights: Callable[[int], bytes | None] | None = None
    # Keeps a candidate's whole story (candidate id, text) and says where, for the lineage's
    # ``log`` column; None drops it.
    save_log: Callable[[int, str], str] | None = None
    # Keeps the gate's measurements as they arrive (the run's profile logs); None drops them.
    save_profiles: Callable[[tuple[Profile, ...]], object] | None = None
    _ready: deque[Pending] = field(default_factory=deque, init=False)
    _running: dict[int, Pending] = field(default_factory=dict, init=False)
    _admitted: dict[str, int] = field(default_factory=dict, init=False)  # network id: candidate
    _waiting: dict[str, list[tuple[Candidate, datetime]]] = field(default_factory=dict, init=False)
    _measuring: dict[Future, tuple[Candidate, datetime]] = field(default_factory=dict, init=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False)

    def run(self) -> Tally:
        """Go on until the search is finished; the lineage is flushed however this ends."""
        flushed_at = self.clock()
        if self.num_measurers and self.gate.profilers:
            self._pool = ThreadPoolExecutor(self.num_measurers, thread_name_prefix="gate")
        try:
            while not self.tally.finished:
                raise_if_signalled()  # Ctrl-C or SIGTERM whose interrupt some code swallowed
                self._collect_verdicts()
                self._submit_ready()
                screening = self._may_ask() and self._screens_more()
                if screening:
                    self._screen(self.strategy.ask())
                timeout = self.poll_seconds if not self._measuring else VERDICT_POLL_SECONDS
                for key, evaluation in self.executor.wait(0.0 if screening else timeout):
                    self._finish(self._running.pop(key), evaluation)
                if self.clock() - flushed_at >= self.flush_seconds:
                    self.writer.flush()
                    flushed_at = self.clock()
                if self.progress:
                    self.progress.update()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self.writer.flush()
            if self.progress:
                self.progress.close()
        return self.tally

    def _screens_more(self) -> bool:
        """Keep every worker and every measurer busy: a few admitted candidates wait ready."""
        return len(self._ready) + len(self._measuring) < self.num_workers + self.num_measurers

    def _collect_verdicts(self) -> None:
        for future in [f for f in self._measuring if f.done()]:
            candidate, asked_at = self._measuring.pop(future)
            self._judged(candidate, asked_at, future.result())  # a SearchStopped ends the run

    def _may_ask(self) -> bool:
        waiting = sum(map(len, self._waiting.values()))
        outstanding = len(self._ready) + len(self._running) + len(self._measuring) + waiting
        if self.tally.done + outstanding >= self.tally.budget:
            return False
        # Enough are trained or training for what the search wants: wait for them.
        wanted = self.tally.num_trained
        return wanted is None or self.tally.trained + len(self._ready) + len(self._running) < wanted

    def _submit_ready(self) -> None:
        while self._ready and self.executor.num_running < self.num_workers:
            pending = self._ready.popleft()
            self._running[pending.candidate.candidate_id] = pending
            self.executor.submit(pending.candidate.candidate_id, self._job(pending.candidate))

    def _job(self, candidate: Candidate) -> Job:
        cuts = self.rung_history.cuts() if self.rung_history is not None else ()
        parent, load = candidate.parent_id, self.load_weights
        weights = load(parent) if load is not None and parent is not None else None
        return Job(candidate.genome, cuts, weights)

    def _screen(self, candidate: Candidate, asked_at: datetime | None = None) -> None:
        asked_at = asked_at or datetime.now(UTC)
        network = network_id(candidate.genome)
        if network in self._admitted:  # the same network is measured or trained: wait for it
            self._waiting.setdefault(network, []).append((candidate, asked_at))
            return
        found = self.strategy.lookup(candidate.genome.id)
        if found is not None:
            first = self.known.get(network)
            measurements = dict(first.measurements) if first else {}
            if first:
                why = measurements.get("reason")
                same = f"same network as candidate {first.candidate_id}"
                measurements["reason"] = f"{same}: {why}" if why else same
            self._tell(candidate, found.reused(), asked_at, measurements)
            return
        self._admitted[network] = candidate.candidate_id
        if self._pool is None:
            self._judged(candidate, asked_at, self.gate.check(candidate.genome))
        else:
            future = self._pool.submit(self.gate.check, candidate.genome)
            self._measuring[future] = (candidate, asked_at)

    def _judged(self, candidate: Candidate, asked_at: datetime, verdict: Verdict) -> None:
        if self.save_profiles is not None and verdict.profiles:
            self.save_profiles(verdict.profiles)
        measurements = gate_measurements(verdict)
        if verdict.status == Status.ADMITTED:
            self._ready.append(Pending(candidate, asked_at, measurements))
            return
        measurements["reason"] = verdict.reason
        story = next((p.log for p in verdict.profiles if p.log), None)
        self._keep_log(candidate.candidate_id, story, measurements)
        result = self._result(verdict.status, None, measurements)
        self._tell(candidate, result, asked_at, measurements)
        self._release(candidate.genome)

    def _finish(self, pending: Pending, evaluation: Evaluation) -> None:
        measurements = {**pending.measurements, **evaluation.measurements()}
        complete = evaluation.status == Status.TRAINED and evaluation.fitness is not None
        if not complete:
            measurements["reason"] = evaluation.reason or "evaluated, but without a fitness"
        status = Status.TRAINED if complete else Status.FAILED
        self._keep_log(pending.candidate.candidate_id, evaluation.log, measurements)
        fitness = evaluation.fitness if complete else None
        result = self._result(status, fitness, measurements)
        if complete and evaluation.weights is not None and self.save_weights is not None:
            # Before the row: a lineage row of a trained candidate never lacks its weights.
            self.save_weights(pending.candidate.candidate_id, evaluation.weights)
        self._tell(pending.candidate, result, pending.asked_at, measurements)
        if complete and self.rung_history is not None and evaluation.rungs:
            self.rung_history.record(rungs_from_json(evaluation.rungs))
        self._release(pending.candidate.genome)

    def _release(self, genome: Genome) -> None:
        """The network's first candidate is told: its twins that waited are screened now."""
        network = network_id(genome)
        del self._admitted[network]
        for candidate, asked_at in self._waiting.pop(network, []):
            self._screen(candidate, asked_at)  # a duplicate now; run itself if that failed

    def _keep_log(self, candidate_id: int, story: str | None, measurements: dict) -> None:
        if story and self.save_log is not None:
            measurements["log"] = self.save_log(candidate_id, story)

    def _result(self, status: Status, fitness: float | None, values: Mapping[str, Any]) -> Result:
        names = self.strategy.metric_names
        metrics = {n: values[n] for n in names if values.get(n) is not None}
        noise = values.get("fitness_noise") if fitness is not None else None
        return Result(status, fitness, metrics, noise)

    def _tell(
        self, candidate: Candidate, result: Result, asked_at: datetime, measurements: dict
    ) -> None:
        self.strategy.tell(candidate, result)
        record = LineageRecord.told(
            candidate,
            result,
            run_id=self.run_id,
            seed=self.strategy.seed,
            num_asked_at_tell=self.strategy.num_asked,
            asked_at=asked_at,
            finished_at=datetime.now(UTC),
            **measurements,
        )
        self.writer.append(record)
        if result.status in (Status.TRAINED, Status.REJECTED):
            first = Known(candidate.candidate_id, measurements)
            self.known.setdefault(network_id(candidate.genome), first)
        iterations = measurements.get("iterations")
        self.tally.add(candidate.candidate_id, result.status, result.fitness, iterations)


def gate_measurements(verdict: Verdict) -> dict[str, Any]:
    """The lineage columns a gate verdict fills: counts, runtimes with their devices, memory."""
    values: dict[str, Any] = {
        "params": verdict.params,
        "flops": verdict.flops,
        "profile_seconds": verdict.seconds,
    }
    if verdict.profiles and verdict.profiles[0].frame_ms is not None:
        first = verdict.profiles[0]  # where the gate judges frame budgets
        values["frame_ms"] = first.frame_ms
        values["frames_per_second"] = first.frames_per_second
        values["latency_frames"] = first.latency_frames
    for profile in verdict.profiles:
        prefix = "cpu" if profile.device.kind == "cpu" else "gpu"
        values[f"{prefix}_ms"] = profile.runtime_ms
        values[f"{prefix}_noise_ms"] = profile.noise_ms
        values[f"{prefix}_device"] = profile.device.label
        if profile.peak_memory_mb is not None:
            values["memory_mb"] = profile.peak_memory_mb
    return values


def rung_history_of(train: TrainConfig, records: Iterable[LineageRecord]) -> RungHistory | None:
    """The rung history of a (resumed) run's lineage, for multi-fidelity training; None when
    every candidate trains in full."""
    if train.rungs == 1:
        return None
    rungs = rungs_of(train.iterations, train.rungs, train.reduction_factor)
    return history_of(rungs, (r.rungs for r in records if r.status == Status.TRAINED))


def known_of(records: Iterable[LineageRecord]) -> dict[str, Known]:
    """The first trained or rejected evaluation of each genome in ``records`` (a resumed run's
    lineage), for duplicates to copy, as the engine keeps them while it runs."""
    known: dict[str, Known] = {}
    for record in records:
        if record.status in (Status.TRAINED, Status.REJECTED):
            values = {n: getattr(record, n) for n in MEASUREMENTS}
            genome = genome_from_dict(json.loads(record.genome_json), source="lineage")
            known.setdefault(network_id(genome), Known(record.candidate_id, values))
    return known
