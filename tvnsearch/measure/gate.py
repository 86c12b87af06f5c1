"""The constraint gate: which candidates may be trained, decided cheapest check first.

1. Counted from the plan in well under a millisecond: parameters, FLOPs, and a lower bound on
   memory (weights plus the input and output of the largest step); and, where the device's
   roofline is known (``tvnsearch.measure.roofline``), a lower bound on runtime that needs no
   forward pass. These are ``passes_bounds``: deterministic, so a strategy may sample from them.
2. The latency predictor (a feature regression, ``tvnsearch.measure.predictor``, unless another is
   given per device kind, such as the kernel lookup table of
   ``tvnsearch.measure.lookup_predictor``), once checked: only a candidate predicted over a time
   budget by more than ``predictor_margin`` and more than its worst over-prediction so far is
   rejected unmeasured, so that its errors cost little.
3. An early-exit measurement: when the fastest of the first warm runs is already
   ``early_exit_factor`` times over the budget, the candidate is rejected there.
4. Otherwise a full measurement, whose fastest run and peak memory are judged against the budgets;
   a runtime within noise of its budget is measured twice and judged on the pooled runs.

A candidate that fails or runs out of memory while being measured gives a verdict, never a crash.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from tvnsearch.errors import InputError, Problem
from tvnsearch.genome.cost import Cost, count_cost
from tvnsearch.genome.genes import Genome
from tvnsearch.measure.constraints import FRAME_LIMITS, TIME_LIMITS, Constraints, check_feasible
from tvnsearch.measure.predictor import LatencyPredictor, Predictor
from tvnsearch.measure.profile import Profile
from tvnsearch.measure.roofline import Roofline
from tvnsearch.status import Status


class Measurer(Protocol):
    """A profiler: in this process (``tvnsearch.measure.profiler.Profiler``) or an actor."""

    def measure(
        self,
        genome: Genome,
        num_classes: int,
        *,
        stop_above_ms: float | None = None,
        again: bool = False,
    ) -> Profile: ...


@dataclass(frozen=True)
class Verdict:
    """The gate's answer; a rejection names the constraint, the value found and the limit."""

    genome_id: str
    status: Status  # admitted, rejected or failed
    stage: str  # where it was decided: "cost", "predictor", "probe" or "measurement"
    params: int
    flops: int
    constraint: str | None = None
    value: float | None = None  # measured, predicted or bounded, as ``stage`` says
    limit: float | None = None
    reason: str = ""
    profiles: tuple[Profile, ...] = ()
    seconds: float = 0.0

    @property
    def admitted(self) -> bool:
        return self.status == Status.ADMITTED


class Gate:
    """Judges candidates against ``constraints`` on the profilers given, one per device kind."""

    def __init__(
        self,
        constraints: Constraints,
        *,
        num_classes: int,
        profilers: Mapping[str, Measurer] | None = None,
        early_exit_factor: float = 1.5,
        predictor_margin: float | None = 2.0,
        min_fit_size: int = 20,
        predictors: Mapping[str, Predictor] | None = None,
        rooflines: Mapping[str, Roofline] | None = None,
    ) -> None:
        self.profilers = dict(profilers or {})
        _check_setup(constraints, num_classes, self.profilers, early_exit_factor, predictor_margin)
        _check_predictors(predictors or {}, self.profilers)
        self.constraints = constraints
        self.num_classes = num_classes
        self.early_exit_factor = early_exit_factor
        self.predictor_margin = predictor_margin
        # A kind without a predictor given gets the feature regression, fitted from min_fit_size.
        self.predictors: dict[str, Predictor] = {
            kind: LatencyPredictor(min_fit_size) for kind in self.profilers
        }
        self.predictors.update(predictors or {})
        self.rooflines = dict(rooflines or {})
        self._lock = threading.Lock()  # checks may run on several threads; predictors learn

    def check(self, genome: Genome) -> Verdict:
        start = time.perf_counter()
        cost = count_cost(genome, self.num_classes)
        verdict = self.check_bounds(genome, cost) or self._check_devices(genome, cost)
        return replace(verdict, seconds=time.perf_counter() - start)

    def passes_bounds(self, genome: Genome) -> bool:
        """Whether ``genome`` passes the checks that need no measurement (counts and rooflines):
        the same answer every time, in any process with the same rooflines."""
        return self.check_bounds(genome, count_cost(genome, self.num_classes)) is None

    def check_bounds(self, genome: Genome, cost: Cost) -> Verdict | None:
        """The rejection by counts or by a roofline's lower bound on runtime, if any."""
        return self._check_cost(genome, cost) or self._check_rooflines(genome, cost)

    def _check_rooflines(self, genome: Genome, cost: Cost) -> Verdict | None:
        for kind, roofline in self.rooflines.items():
            name = TIME_LIMITS[kind]
            budget = getattr(self.constraints, name)
            low = roofline.min_runtime_ms(cost)
            if budget is not None and low > budget:
                return _rejected(genome, cost, "bound", name, low, budget)
        return None

    def _check_cost(self, genome: Genome, cost: Cost) -> Verdict | None:
        bounds = {
            "max_params": cost.params,
            "max_flops": cost.flops,
            "max_memory_mb": cost.min_memory_bytes / 2**20,
        }
        for name, value in bounds.items():
            limit = getattr(self.constraints, name)
            if limit is not None and value > limit:
                return _rejected(genome, cost, "cost", name, value, limit)
        return None

    def _check_devices(self, genome: Genome, cost: Cost) -> Verdict:
        profiles: list[Profile] = []
        for kind, profiler in self.profilers.items():
            verdict, profile = self._check_device(genome, cost, kind, profiler)
            profiles += [profile] if profile is not None else []
            if verdict is not None:
                return replace(verdict, profiles=tuple(profiles))
        verdict = self._judge_stream(genome, cost, profiles[0]) if profiles else None
        if verdict is not None:
            return replace(verdict, profiles=tuple(profiles))
        return _verdict(genome, cost, Status.ADMITTED, "measurement", profiles=tuple(profiles))

    def _judge_stream(self, genome: Genome, cost: Cost, profile: Profile) -> Verdict | None:
        """Frame budgets, on the first device profiled (the CPU when it is profiled)."""
        c = self.constraints
        frame_ms, fps = profile.frame_ms, profile.frames_per_second
        if c.max_frame_ms is not None and frame_ms > c.max_frame_ms:
            return _rejected(genome, cost, "measurement", "max_frame_ms", frame_ms, c.max_frame_ms)
        if c.min_frames_per_second is not None and fps < c.min_frames_per_second:
            name = "min_frames_per_second"
            return _verdict(
                genome,
                cost,
                Status.REJECTED,
                "measurement",
                constraint=name,
                value=fps,
                limit=c.min_frames_per_second,
                reason=f"{name}: {fps:,.6g} (measured) < limit {c.min_frames_per_second:,.6g}",
            )
        return None

    def _check_device(
        self, genome: Genome, cost: Cost, kind: str, profiler: Measurer
    ) -> tuple[Verdict | None, Profile | None]:
        name = TIME_LIMITS[kind]
        budget = getattr(self.constraints, name)
        predictor = self.predictors[kind]
        with self._lock:
            predicted = predictor.predict(genome, self.num_classes)
            margin = (
                None
                if self.predictor_margin is None
                else predictor.skip_margin(self.predictor_margin)
            )
        if None not in (budget, predicted, margin) and predicted > margin * budget:
            return _rejected(genome, cost, "predictor", name, predicted, budget), None
        stop = None if budget is None else self.early_exit_factor * budget
        profile = profiler.measure(genome, self.num_classes, stop_above_ms=stop)
        near = budget is not None and near_limit(profile, budget)
        if near:  # a second measurement, pooled with the first, decides
            profile = profiler.measure(genome, self.num_classes, stop_above_ms=stop, again=True)
        if profile.status == Status.ADMITTED:
            with self._lock:
                predictor.learn(genome, self.num_classes, profile.runtime_ms, predicted)
        verdict = self._judge(genome, cost, profile, name, budget)
        if near and verdict is not None and verdict.stage == "measurement":
            verdict = _rejected(genome, cost, "remeasurement", name, profile.runtime_ms, budget)
        return verdict, profile

    def _judge(
        self, genome: Genome, cost: Cost, profile: Profile, name: str, budget: float | None
    ) -> Verdict | None:
        max_memory_mb = self.constraints.max_memory_mb
        if profile.status == Status.FAILED:
            return _verdict(genome, cost, Status.FAILED, "measurement", reason=profile.reason)
        if profile.out_of_memory:
            reason = f"out of memory on {profile.device.kind}: {profile.reason}"
            return _verdict(
                genome,
                cost,
                Status.REJECTED,
                "measurement",
                constraint="device_memory",
                reason=reason,
            )
        if profile.stopped_early:
            return _rejected(genome, cost, "probe", name, min(profile.runs_ms), budget)
        if budget is not None and profile.runtime_ms > budget:
            return _rejected(genome, cost, "measurement", name, profile.runtime_ms, budget)
        memory = profile.peak_memory_mb
        if max_memory_mb is not None and memory > max_memory_mb:
            return _rejected(genome, cost, "measurement", "max_memory_mb", memory, max_memory_mb)
        return None


def _verdict(genome: Genome, cost: Cost, status: Status, stage: str, **fields: Any) -> Verdict:
    return Verdict(genome.id, status, stage, cost.params, cost.flops, **fields)


_HOW = {
    "cost": "counted",
    "bound": "lower bound: counted FLOPs and bytes at this device's peak rates",
    "predictor": "predicted",
    "probe": "fastest probe run",
    "remeasurement": "measured twice: it was within noise of the limit",
}
NEAR_FRACTION = 0.05  # of a budget: closer than this (or the profile's noise) is measured twice


def near_limit(profile: Profile, budget: float) -> bool:
    """Whether a runtime is too close to ``budget`` for one measurement to decide."""
    if profile.status != Status.ADMITTED:
        return False
    band = max(profile.noise_ms, NEAR_FRACTION * budget)
    return abs(profile.runtime_ms - budget) <= band


def _rejected(
    genome: Genome, cost: Cost, stage: str, name: str, value: float, limit: float
) -> Verdict:
    how = "lower bound" if (stage, name) == ("cost", "max_memory_mb") else _HOW.get(stage)
    return _verdict(
        genome,
        cost,
        Status.REJECTED,
        stage,
        constraint=name,
        value=value,
        limit=limit,
        reason=f"{name}: {value:,.6g} ({how or 'measured'}) > limit {limit:,.6g}",
    )


def _check_setup(
    constraints: Constraints,
    num_classes: int,
    profilers: Mapping[str, Measurer],
    early_exit_factor: float,
    predictor_margin: float | None,
) -> None:
    check_feasible(constraints, num_classes, source="constraints")
    problems = [
        Problem(name, f"a {kind} budget is set, but the gate has no {kind} profiler")
        for kind, name in TIME_LIMITS.items()
        if getattr(constraints, name) is not None and kind not in profilers
    ]
    problems += [
        Problem(name, "is set, but the gate has no profiler")
        for name in ("max_memory_mb", *FRAME_LIMITS)
        if getattr(constraints, name) is not None and not profilers
    ]
    problems += [
        Problem("profilers", f"unknown device kind {k!r}")
        for k in profilers
        if k not in TIME_LIMITS
    ]
    if not early_exit_factor >= 1:
        problems.append(Problem("early_exit_factor", f"must be >= 1, but got {early_exit_factor}"))
    if predictor_margin is not None and not predictor_margin >= 1:
        problems.append(Problem("predictor_margin", f"must be >= 1, but got {predictor_margin}"))
    if problems:
        raise InputError("gate", problems)


def _check_predictors(
    predictors: Mapping[str, Predictor], profilers: Mapping[str, Measurer]
) -> None:
    problems = [
        Problem("predictors", f"a {kind} predictor is given, but the gate has no {kind} profiler")
        for kind in predictors
        if kind not in profilers
    ]
    if problems:
        raise InputError("gate", problems)
