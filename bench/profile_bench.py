"""Profiler benchmark: repeatability, isolation under load, rejection cost, predictor accuracy.

(1) Repeatability: several genomes of 5-200 ms, each measured fully 5 times (a fresh model every
    time): the coefficient of variation of the 5 medians. Target <= 3 % on an idle machine.
(2) Under load: one genome measured idle, then while a real training loop runs in another
    process pinned to the other core(s): by the profiler actor (its own reserved core, one
    thread) and naively in the worker (no pinning, torch's default threads). Target: the
    profiler within 10 % of its idle figure.
(3) Rejection cost: genomes 2x over a CPU budget, rejected by the gate's early exit, against a
    full measurement of the same genome. Target: median <= 20 %.
(4) Predictors: the feature regression and the kernel lookup table, fitted on measured random
    genomes, tested on held-out random genomes and on one-gene mutations of the measured ones
    (what a search asks), beside the noise ceiling: how often two measurements of the same genome
    agree within 10 %. Also what the table costs: kernels timed, and seconds, per set of genomes,
    against the seconds that measuring those networks took.

Sections 1, 3 and 4 run in this process, pinned to the profiler's core with one thread, as the
profiler actor runs. Timings mean something only on an idle machine: the load average is recorded
before and after every section.

    .venv/bin/python bench/profile_bench.py [--quick] [--sections 1 2 3 4] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from tvnsearch import published_genome
from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Genome
from tvnsearch.genome.mutation import mutate
from tvnsearch.genome.space import SearchSpace, load_space
from tvnsearch.measure.affinity import pin_process, split_cores, usable_cores
from tvnsearch.measure.constraints import Constraints
from tvnsearch.measure.device import cpu_model
from tvnsearch.measure.gate import Gate
from tvnsearch.measure.lookup_predictor import KernelTable, LookupPredictor
from tvnsearch.measure.measurement import measure
from tvnsearch.measure.predictor import Accuracy, LatencyPredictor, Predictor, accuracy
from tvnsearch.measure.profile import Profile, Settings
from tvnsearch.measure.profiler import Profiler
from tvnsearch.models.builder import build_model
from tvnsearch.search.executors import start_profiler
from tvnsearch.search.ray_session import start_ray, stop_ray
from tvnsearch.status import Status

RESULTS = Path(__file__).parent / "results" / "profile_bench.json"
SPACES = Path(__file__).parents[1] / "search_spaces"
NUM_CLASSES = 400
FULL = Settings()  # what the profiler uses: 5 warm-up runs, 25 timed, one thread
QUICK = Settings(warmup=3, runs=9)  # the predictor's data: many genomes, a few seconds each
FLOP_TARGETS = (1e8, 3e8, 1e9, 3e9)  # roughly 5 to 100 ms on one core of a current CPU


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer genomes: a smoke run")
    parser.add_argument("--sections", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if len(usable_cores()) < 2:
        raise SystemExit("profile_bench needs two usable cores: one to profile, one to train")
    default_threads = torch.get_num_threads()
    reserved, training = split_cores(1)
    genomes = [*pick_genomes(FLOP_TARGETS, seed=0), published_genome("tvn_mobile_2")]
    genomes = genomes[:3] if args.quick else genomes
    sizes = (20, 12, 12, 8) if args.quick else (60, 40, 40, 20)
    sections = {
        1: ("repeatability", lambda: repeatability(genomes)),
        2: ("under_load", lambda: under_load(genomes[1], reserved, training, default_threads)),
        3: ("rejection_cost", lambda: rejection_cost(genomes)),
        4: ("predictor", lambda: predictor_accuracy(*sizes)),
    }
    report: dict[str, Any] = {"environment": _environment(reserved, training, default_threads)}
    for number in args.sections:
        name, run = sections[number]
        pin_process(reserved)  # as the profiler actor runs; section 2 pins its own
        report[name] = _section(f"({number}) {name.replace('_', ' ')}", run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def _environment(reserved: tuple[int, ...], training: tuple[int, ...], threads: int) -> dict:
    return {
        "cpu": cpu_model(),
        "usable_cores": list(usable_cores()),
        "profiler_cores": list(reserved),
        "training_cores": list(training),
        "torch": torch.__version__,
        "torch_default_threads": threads,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _section(title: str, run: Callable[[], dict]) -> dict:
    print(f"\n{title}", flush=True)
    load_before, start = os.getloadavg()[0], time.perf_counter()
    result = run()
    return {
        **result,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "seconds": round(time.perf_counter() - start, 1),
    }


def pick_genomes(flop_targets: tuple[float, ...], *, seed: int) -> list[Genome]:
    """For each target, the first sampled genome within 25 % of it (tiny and tvn spaces)."""
    rng = random.Random(seed)
    spaces = [load_space(SPACES / "tiny.toml"), load_space(SPACES / "tvn.toml")]
    picked = []
    for i, target in enumerate(flop_targets):
        space = spaces[i % 2]
        while True:
            g = space.sample(rng)
            cost = count_cost(g, NUM_CLASSES)
            if 0.8 * target <= cost.flops <= 1.25 * target and cost.min_memory_bytes < 2**29:
                picked.append(g)
                break
    return picked


def repeatability(genomes: list[Genome], repeats: int = 5) -> dict:
    rows = []
    for g in genomes:
        medians = [measure(g, NUM_CLASSES, FULL).median_ms for _ in range(repeats)]
        cv = statistics.stdev(medians) / statistics.mean(medians)
        rows.append({"genome": g.id, "medians_ms": medians, "cv_percent": 100 * cv})
        print(f"  {g.id}  {statistics.mean(medians):>8.2f} ms   CV {100 * cv:5.2f} %", flush=True)
    worst = max(r["cv_percent"] for r in rows)
    print(f"  worst CV {worst:.2f} %  (target <= 3 % on an idle machine)")
    return {"settings": FULL.__dict__, "genomes": rows, "worst_cv_percent": worst}


def under_load(
    genome: Genome, reserved: tuple[int, ...], training: tuple[int, ...], default_threads: int
) -> dict:
    naive = Settings(threads=default_threads)
    pin_process(usable_cores())  # a naive worker is pinned to nothing
    start_ray(num_cpus=len(usable_cores()))
    try:
        idle = {"profiler": _actor_median(genome, reserved), "naive": _naive_median(genome, naive)}
        with training_load(training):
            load = {
                "profiler": _actor_median(genome, reserved),
                "naive": _naive_median(genome, naive),
            }
    finally:
        stop_ray()
    rows = {k: {"idle_ms": idle[k], "load_ms": load[k], "ratio": load[k] / idle[k]} for k in idle}
    for name, row in rows.items():
        print(
            f"  {name:<9} idle {row['idle_ms']:8.2f} ms   under load {row['load_ms']:8.2f} ms"
            f"   x{row['ratio']:.3f}",
            flush=True,
        )
    print("  target: profiler within 10 % of idle")
    return {"genome": genome.id, "naive_threads": default_threads, **rows}


def _actor_median(genome: Genome, cores: tuple[int, ...]) -> float:
    profiler = start_profiler(FULL, cores=cores)  # a fresh actor: a fresh cache
    try:
        return profiler.measure(genome, NUM_CLASSES).median_ms
    finally:
        profiler.close()


def _naive_median(genome: Genome, settings: Settings) -> float:
    return measure(genome, NUM_CLASSES, settings).median_ms


@contextlib.contextmanager
def training_load(cores: tuple[int, ...]) -> Iterator[None]:
    """A real training loop (a small TVN, SGD, random clips) in a process pinned to ``cores``."""
    context = multiprocessing.get_context("spawn")
    stop, ready = context.Event(), context.Event()
    process = context.Process(target=_train, args=(cores, stop, ready))
    process.start()
    try:
        if not ready.wait(timeout=120):
            raise RuntimeError("the training process did not start")
        yield
    finally:
        stop.set()
        process.join(timeout=30)


def _train(cores: tuple[int, ...], stop: Any, ready: Any) -> None:
    pin_process(cores)
    torch.set_num_threads(len(cores))
    genome = pick_genomes((3e8,), seed=1)[0]
    model = build_model(genome, 10).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    shape = (4, 3, genome.num_frames, genome.resolution, genome.resolution)
    for step in range(10**9):
        clips, labels = torch.randn(shape, generator=generator), torch.randint(10, (4,))
        loss = torch.nn.functional.cross_entropy(model(clips), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 2:
            ready.set()
        if stop.is_set():
            return


def rejection_cost(genomes: list[Genome]) -> dict:
    rows = []
    for g in genomes:
        full = Profiler(FULL).measure(g, NUM_CLASSES)
        gate = Gate(
            Constraints(max_cpu_ms=full.median_ms / 2),
            num_classes=NUM_CLASSES,
            profilers={"cpu": Profiler(FULL)},
            predictor_margin=None,  # the early exit alone
        )
        verdict = gate.check(g)
        ratio = verdict.seconds / full.seconds
        rows.append(
            {
                "genome": g.id,
                "median_ms": full.median_ms,
                "full_seconds": full.seconds,
                "reject_seconds": verdict.seconds,
                "stage": verdict.stage,
                "ratio": ratio,
            }
        )
        print(
            f"  {g.id}  {full.median_ms:8.2f} ms  full {full.seconds:6.3f} s  rejected at "
            f"{verdict.stage} in {verdict.seconds:6.3f} s  ({100 * ratio:4.1f} %)",
            flush=True,
        )
    median = statistics.median(r["ratio"] for r in rows)
    print(f"  median rejection cost {100 * median:.1f} % of a full measurement (target <= 20 %)")
    return {"genomes": rows, "median_ratio": median}


def predictor_accuracy(num_train: int, num_test: int, num_children: int, num_repeat: int) -> dict:
    rng = random.Random(2)
    spaces = {n: load_space(SPACES / f"{n}.toml") for n in ("tiny", "tvn", "tvn_mobile")}
    train, test = _sample(spaces, num_train, rng), _sample(spaces, num_test, rng)
    children = {_child(g, spaces, rng): g for g in train[:num_children]}
    again = [("again", g) for g in test[:num_repeat]]
    profiles = _measure_shuffled([*train, *test, *children, *again], rng)
    ms = {job: _median_in_range(p) for job, p in profiles.items()}
    sets = {
        "train": [(g, ms[g]) for g in train if ms[g] is not None],
        # Children before random genomes: the table's cost for them is what a search pays.
        "children": [(c, ms[c]) for c, parent in children.items() if ms[parent] and ms[c]],
        "random": [(g, ms[g]) for g in test if ms[g] is not None],
    }
    table = KernelTable(QUICK)
    predictors = {"regression": LatencyPredictor(min_fit_size=1), "lookup": LookupPredictor(table)}
    results, cost = _evaluate(predictors, sets, table, profiles)
    repeated = [g for g in test[:num_repeat] if None not in (ms[g], ms["again", g])]
    ceiling = accuracy([ms["again", g] for g in repeated], [ms[g] for g in repeated])
    _print_predictor_results(results, ceiling, cost)
    return {
        "num_train": len(sets["train"]),
        **{name: {k: a.__dict__ for k, a in r.items()} for name, r in results.items()},
        "noise_ceiling": ceiling.__dict__,
        "lookup_table_cost": cost,
    }


def _measure_shuffled(jobs: list, rng: random.Random) -> dict:
    # One shuffled queue: a drift in the machine's load touches every set alike.
    queue = list(jobs)
    rng.shuffle(queue)
    return {j: measure(j[1] if isinstance(j, tuple) else j, NUM_CLASSES, QUICK) for j in queue}


def _evaluate(
    predictors: dict[str, Predictor],
    sets: dict[str, list[tuple[Genome, float]]],
    table: KernelTable,
    profiles: dict,
) -> tuple[dict[str, dict[str, Accuracy]], dict[str, dict]]:
    """Every predictor learns "train" and predicts the other sets, in order; the table's cost
    is counted per set."""
    results: dict[str, dict[str, Accuracy]] = {name: {} for name in predictors}
    cost = {}
    for set_name, measured in sets.items():
        before = (table.num_measurements, table.seconds)
        for name, predictor in predictors.items():
            if set_name == "train":
                for g, runtime in measured:
                    predictor.learn(g, NUM_CLASSES, runtime, None)
            else:
                results[name][set_name] = _accuracy_of(predictor, measured)
        cost[set_name] = _table_cost(table, before, [profiles[g] for g, _ in measured])
    return results, cost


def _table_cost(table: KernelTable, before: tuple[int, float], profiles: list[Profile]) -> dict:
    return {
        "genomes": len(profiles),
        "kernels_timed": table.num_measurements - before[0],
        "kernel_seconds": round(table.seconds - before[1], 2),
        "network_seconds": round(sum(p.seconds for p in profiles), 2),
    }


def _print_predictor_results(results: dict, ceiling: Accuracy, cost: dict) -> None:
    rows = [(f"{name} {set_name}", a) for name, r in results.items() for set_name, a in r.items()]
    for label, a in [*rows, ("noise ceiling", ceiling)]:
        print(
            f"  {label:<20} {a.num_samples:>3} genomes   within 10 %: "
            f"{100 * a.within_tolerance:5.1f} %   median error {100 * a.median_error:5.1f} %"
            f"   worst predicted/measured x{a.worst_ratio:.2f}",
            flush=True,
        )
    for set_name, c in cost.items():
        print(
            f"  lookup table, {set_name:<8} {c['genomes']:>3} genomes: {c['kernels_timed']:>4} "
            f"kernels timed in {c['kernel_seconds']:6.2f} s "
            f"(measuring the networks: {c['network_seconds']:6.2f} s)",
            flush=True,
        )
    print("  5-200 ms genomes; target >= 90 % within 10 %")


def _sample(spaces: dict[str, SearchSpace], num: int, rng: random.Random) -> list[Genome]:
    genomes = []
    while len(genomes) < num:
        g = spaces[rng.choice(sorted(spaces))].sample(rng)
        cost = count_cost(g, NUM_CLASSES)
        if 3e7 <= cost.flops <= 3e9 and cost.min_memory_bytes < 2**30:
            genomes.append(g)
    return genomes


def _child(parent: Genome, spaces: dict[str, SearchSpace], rng: random.Random) -> Genome:
    space = next(s for s in spaces.values() if s.validate(parent).valid)
    return mutate(parent, space, rng).child


def _median_in_range(profile: Profile) -> float | None:
    """The median runtime, if within 5-200 ms: the range the targets are stated for."""
    ok = profile.status == Status.ADMITTED and 5 <= profile.median_ms <= 200
    return profile.median_ms if ok else None


def _accuracy_of(predictor: Predictor, measured: list[tuple[Genome, float]]) -> Any:
    pairs = [(predictor.predict(g, NUM_CLASSES), ms) for g, ms in measured]
    known = [(p, ms) for p, ms in pairs if p is not None]  # a kernel that failed: no prediction
    return accuracy([p for p, _ in known], [ms for _, ms in known])


if __name__ == "__main__":
    raise SystemExit(main())
