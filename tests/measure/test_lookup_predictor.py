from __future__ import annotations

import dataclasses
import math
import random
import statistics

import pytest
from conftest import SPACES_DIR
from genomes import small_genome
from test_gate import FAST, Scripted

from tvnsearch import load_space
from tvnsearch.errors import InputError
from tvnsearch.genome.genes import Genome
from tvnsearch.measure.constraints import Constraints
from tvnsearch.measure.gate import Gate
from tvnsearch.measure.lookup_predictor import (
    HeadPlan,
    Kernel,
    KernelTable,
    LookupPredictor,
    network_kernels,
)
from tvnsearch.measure.measurement import measure
from tvnsearch.measure.predictor import MIN_CHECKED
from tvnsearch.measure.profile import Settings


class Timer:
    """A kernel timer whose runtime is a made-up function of the input size; counts its calls."""

    def __init__(self) -> None:
        self.timed: list[Kernel] = []

    def __call__(self, kernel: Kernel, settings: Settings) -> float:
        self.timed.append(kernel)
        return 0.5 if isinstance(kernel, HeadPlan) else math.prod(kernel.in_shape) / 1e4


def exact_ms(genome: Genome, num_classes: int = 10) -> float:
    timer = Timer()
    return sum(n * timer(k, FAST) for k, n in network_kernels(genome, num_classes).items())


def with_last_block(genome: Genome, **genes: object) -> Genome:
    last = dataclasses.replace(genome.blocks[-1], **genes)
    return dataclasses.replace(genome, blocks=(*genome.blocks[:-1], last))


def test_repeated_instances_are_one_kernel_counted_as_often_as_they_run() -> None:
    g = small_genome()  # two repeats: the second has no stride and no temporal op
    one = dataclasses.replace(g, blocks=(dataclasses.replace(g.blocks[0], num_repeats=1),))
    assert sum(network_kernels(g, 10).values()) == 3
    assert set(network_kernels(one, 10)) < set(network_kernels(g, 10))


def test_the_table_times_each_kernel_once_per_device() -> None:
    timer = Timer()
    table = KernelTable(FAST, timer=timer)
    parent = small_genome()
    child = with_last_block(parent, num_repeats=4)  # repeat 2 is new; repeat 3 is repeat 1
    cousin = with_last_block(parent, act="relu")  # every instance differs, the head does not
    table.total_ms(network_kernels(parent, 10))
    assert table.num_measurements == len(network_kernels(parent, 10)) == 3
    assert table.total_ms(network_kernels(child, 10)) == exact_ms(child)
    assert table.num_measurements == 3 + 1
    table.total_ms(network_kernels(cousin, 10))
    assert table.num_measurements == 3 + 1 + 2 and len(timer.timed) == len(set(timer.timed))


def test_with_an_identity_fit_the_prediction_is_the_sum_of_the_kernels() -> None:
    rng = random.Random(0)
    space = load_space(SPACES_DIR / "tiny.toml")
    predictor = LookupPredictor(KernelTable(FAST, timer=Timer()))
    for g in (space.sample(rng) for _ in range(6)):
        predictor.learn(g, 10, exact_ms(g), None)
    assert predictor.coefficients == pytest.approx([1.0, 0.0], abs=1e-9)
    for g in (space.sample(rng) for _ in range(6)):
        assert predictor.predict(g, 10) == pytest.approx(exact_ms(g), rel=1e-9)


def test_the_fit_learns_a_scale_and_a_per_network_overhead() -> None:
    predictor = LookupPredictor(KernelTable(FAST, timer=Timer()))
    genomes = [small_genome(num_filters=n) for n in (8, 16, 24, 32)]
    for g in genomes[:3]:
        predictor.learn(g, 10, 1.2 * exact_ms(g) + 0.3, None)
    assert predictor.coefficients == pytest.approx([1.2, 0.3], rel=1e-6)
    assert predictor.predict(genomes[3], 10) == pytest.approx(1.2 * exact_ms(genomes[3]) + 0.3)


def test_a_kernel_that_cannot_run_gives_no_prediction() -> None:
    def failing(kernel: Kernel, settings: Settings) -> float:
        raise RuntimeError("out of memory")

    predictor = LookupPredictor(KernelTable(FAST, timer=failing))
    assert predictor.predict(small_genome(), 10) is None
    predictor.learn(small_genome(), 10, 1.0, None)
    assert predictor.num_samples == 0


def test_real_kernels_add_up_to_the_network_roughly() -> None:
    genomes = [small_genome(num_filters=n, resolution=r) for n in (8, 16, 32) for r in (32, 64)]
    table = KernelTable(FAST)
    sums = [table.total_ms(network_kernels(g, 10)) for g in genomes]
    measured = [measure(g, 10, FAST).runtime_ms for g in genomes]
    ratios = [m / s for m, s in zip(measured, sums, strict=True)]
    # Loose on purpose: a busy machine shifts single runs; a wrong table is off by far more.
    assert 0.5 < statistics.median(ratios) < 2.0, ratios
    assert table.num_measurements == len({k for g in genomes for k in network_kernels(g, 10)})


def test_the_gate_skips_obvious_violators_with_the_lookup_predictor() -> None:
    learned = [small_genome(num_filters=n) for n in (8, 12, 16, 20, 24, 28)]
    unseen = [small_genome(num_filters=n, resolution=128) for n in (96, 128)]
    runtime = {g.id: exact_ms(g) for g in learned + unseen}
    profiler = Scripted(runtime)
    budget = 1.1 * max(runtime[g.id] for g in learned)  # clear of each: measured once
    gate = Gate(
        Constraints(max_cpu_ms=budget),
        num_classes=10,
        profilers={"cpu": profiler},
        early_exit_factor=1e9,
        predictors={"cpu": LookupPredictor(KernelTable(FAST, timer=Timer()))},
    )
    assert all(gate.check(g).admitted for g in learned)
    assert gate.predictors["cpu"].accuracy().num_samples == len(learned) >= MIN_CHECKED
    assert all(runtime[g.id] > 2 * budget for g in unseen)
    for g in unseen:
        verdict = gate.check(g)
        assert verdict.stage == "predictor" and verdict.profiles == ()
    assert len(profiler.calls) == len(learned)


def test_a_predictor_for_a_device_without_a_profiler_is_refused() -> None:
    predictor = LookupPredictor(KernelTable(FAST, timer=Timer()))
    with pytest.raises(InputError, match="predictors: a cuda predictor is given"):
        Gate(
            Constraints(),
            num_classes=10,
            profilers={"cpu": Scripted({})},
            predictors={"cuda": predictor},
        )
