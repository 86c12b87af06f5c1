"""Gate benchmark: repeatable verdicts, cheap rejections at paper scale, budgets, a driver that
keeps up with a large cluster.

(repeat)  Genomes of the tiny space, each measured by the gate in two separate processes pinned
          to the profiler's core: one on an idle machine, one while a training loop runs on the
          other core. The share of runtimes within +-5 % of each other (goal >= 95 %) and of
          identical gate decisions at a budget near their median (goal >= 98 %); beside them the
          same figures for the median of the same runs, the statistic the gate judged before.
(cost)    ``tvn.toml`` genomes against ``paper.toml``'s budget (100 ms per clip, one thread): the
          gate's checks in order (counts, the roofline bound, the bounded probe, a measurement),
          timed: candidates screened per hour, the slowest rejection, rejections by stage. False
          rejections of the bound: every bound-rejected genome whose bound is within 3x of the
          budget is measured in full (a bound above 3x is above the budget at the device's raw
          peak, which the bound divides by 3); on tiny genomes, measured / raw-peak bound >= 1.
(paper)   The paper's evolution (200 random, tournaments of 50) on ``tvn.toml`` with the real gate
          on this machine: the candidate at which the first tournament child is told, as a share
          of the recipe's cap on all candidates. Training is replaced by an instant stand-in
          fitness: this section measures sampling and gating, not training.
(cluster) A simulated cluster of 1,000 workers whose candidates train for seconds to hours
          (log-normal): the real engine, strategy and lineage writer on a virtual clock that also
          counts the driver's own time. The share of worker time idle, and the driver's memory.

    .venv/bin/python bench/gate_bench.py [--sections repeat cost paper cluster] [--quick]
        [--device cpu|cuda] [--out FILE] [--no-pause] [--no-bound-check]
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import io
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import torch

from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Genome, genome_from_dict
from tvnsearch.genome.space import load_space
from tvnsearch.measure.affinity import pin_process, usable_cores
from tvnsearch.measure.constraints import Constraints
from tvnsearch.measure.device import device_signature
from tvnsearch.measure.gate import Gate
from tvnsearch.measure.neighbours import Neighbours
from tvnsearch.measure.profile import Settings
from tvnsearch.measure.profiler import Profiler
from tvnsearch.measure.roofline import SAFETY, device_roofline
from tvnsearch.models.builder import build_model
from tvnsearch.search.engine import Engine
from tvnsearch.search.evolution import Evolution
from tvnsearch.search.lineage import LineageWriter, read_lineage
from tvnsearch.search.progress import Progress, Tally
from tvnsearch.search.worker import Evaluation, Job
from tvnsearch.status import Status

ROOT = Path(__file__).parents[1]
SPACES = ROOT / "search_spaces"
RESULTS = Path(__file__).parent / "results"
NUM_CLASSES = 400  # Kinetics-400's head: what the paper's budget was judged with
PAPER_BUDGET_MS = 100.0  # runners/paper.toml
MEMORY_CAP_BYTES = 12 * 2**30  # of this machine's 24 GiB


def tiny_genomes(n: int, seed: int = 0) -> list[Genome]:
    space, rng = load_space(SPACES / "tiny.toml"), random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


# (repeat) -----------------------------------------------------------------------------------


def repeat(args: argparse.Namespace) -> dict[str, Any]:
    genomes = tiny_genomes(20 if args.quick else 40)
    budget = _median_runtime(genomes, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "genomes.json"
        listing.write_text(json.dumps([g.to_dict() for g in genomes]))
        # Where the training neighbour registers, to be paused while the profiler measures (as
        # a search's workers do); "" with --no-pause.
        folder = "" if args.no_pause else str(Path(tmp) / "neighbours")
        idle = _measure_in_process(listing, budget, args.device, Path(tmp) / "idle.json", folder)
        neighbour = _training_neighbour(folder)
        try:
            out = Path(tmp) / "loaded.json"
            loaded = _measure_in_process(listing, budget, args.device, out, folder)
        finally:
            neighbour.kill()
    setup = {"device": args.device, "genomes": len(genomes), "paused": not args.no_pause}
    return _agreement(idle, loaded, budget) | setup


def _median_runtime(genomes: list[Genome], device: str) -> float:
    """A budget near the genomes' median runtime, from a quick pass in this process."""
    profiler = Profiler(Settings(device=device, runs=5, min_seconds=0.1))
    return statistics.median(profiler.measure(g, 10).runtime_ms for g in genomes)


def _measure_in_process(
    listing: Path, budget: float, device: str, out: Path, folder: str
) -> list[dict]:
    command = [sys.executable, __file__, "_measure", str(listing), str(budget), device, str(out)]
    command.append(folder)
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def _measure_child(listing: str, budget: str, device: str, out: str, folder: str) -> None:
    """In a fresh process on the profiler's core (the last one), as the profiler actor runs."""
    pin_process({usable_cores()[-1]})
    constraints = Constraints(**{"max_cpu_ms" if device == "cpu" else "max_gpu_ms": float(budget)})
    neighbours = Neighbours(folder) if folder else None
    profiler = Profiler(Settings(device=device), neighbours=neighbours)
    gate = Gate(constraints, num_classes=10, profilers={device: profiler}, predictor_margin=None)
    rows = []
    for data in json.loads(Path(listing).read_text()):
        genome = genome_from_dict(data)
        profile = profiler.measure(genome, 10)  # in full: the figures compared between runs
        verdict = gate.check(genome)  # the same profile, measured again if near the budget
        rows.append(
            {
                "admitted": verdict.admitted,
                "runtime_ms": profile.runtime_ms,
                "median_ms": profile.median_ms,
                "measured_twice": verdict.profiles[-1].runs > profile.runs,
            }
        )
    Path(out).write_text(json.dumps(rows))


def _training_neighbour(folder: str) -> subprocess.Popen:
    neighbour = subprocess.Popen([sys.executable, __file__, "_train", folder])
    time.sleep(3.0)  # its model built and its loop warm
    return neighbour


def _train_child(folder: str) -> None:
    """A real training loop (a tiny-space network on random clips) on every core but the
    profiler's, until killed; registered in ``folder`` to be paused, as a search's workers are."""
    with Neighbours(folder).registered() if folder else contextlib.nullcontext():
        _train_forever()


def _train_forever() -> None:
    pin_process(set(usable_cores()[:-1]) or set(usable_cores()))
    torch.set_num_threads(max(1, len(usable_cores()) - 1))
    genome = tiny_genomes(1, seed=7)[0]
    model = build_model(genome, 10)
    optimizer = torch.optim.AdamW(model.parameters())
    clips = torch.randn(8, 3, genome.num_frames, genome.resolution, genome.resolution)
    labels = torch.randint(0, 10, (8,))
    while True:
        loss = torch.nn.functional.cross_entropy(model(clips), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _agreement(idle: list[dict], loaded: list[dict], budget: float) -> dict[str, Any]:
    def within(key: str) -> float:
        pairs = [(a[key], b[key]) for a, b in zip(idle, loaded, strict=True) if a[key] and b[key]]
        return sum(abs(b / a - 1) <= 0.05 for a, b in pairs) / len(pairs)

    def same(decide) -> float:
        return sum(decide(a) == decide(b) for a, b in zip(idle, loaded, strict=True)) / len(idle)

    return {
        "budget_ms": budget,
        "within_5pct": within("runtime_ms"),
        "same_decisions": same(lambda r: r["admitted"]),
        "median_within_5pct": within("median_ms"),
        "median_same_decisions": same(lambda r: (r["median_ms"] or math.inf) <= budget),
        "remeasured": sum(r["measured_twice"] for r in idle + loaded),
        "idle": idle,
        "loaded": loaded,
    }


# (cost) --------------------------------------------------------------------------------------


def _cap_memory() -> None:
    """An address-space limit on this process, as a profiler's machine has its memory: a network
    too large for it fails to allocate (an out-of-memory verdict) instead of bringing the
    kernel's out-of-memory killer."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = MEMORY_CAP_BYTES if hard == resource.RLIM_INFINITY else min(MEMORY_CAP_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def cost(args: argparse.Namespace) -> dict[str, Any]:
    pin_process({usable_cores()[-1]})
    _cap_memory()
    settings = Settings(device=args.device)
    profiler = Profiler(settings)
    roofline = device_roofline(settings)
    gate = Gate(
        Constraints(max_cpu_ms=PAPER_BUDGET_MS),
        num_classes=NUM_CLASSES,
        profilers={"cpu": profiler},
        rooflines={"cpu": roofline},
    )
    space, rng = load_space(SPACES / "tvn.toml"), random.Random(0)
    rows = []
    for i in range(200 if args.quick else 1000):
        rows.append(_timed_check(gate, space.sample(rng)))
        if i % 100 == 99:
            print(f"  cost: {i + 1} screened, {sum(r['seconds'] for r in rows):.0f} s", flush=True)
    false, checked = (None, None) if args.no_bound_check else _false_rejections(rows, profiler)
    rejections = sorted((r for r in rows if r["status"] == "rejected"), key=lambda r: r["seconds"])
    return {
        "genomes": len(rows),
        "screened_per_hour": 3600 * len(rows) / sum(r["seconds"] for r in rows),
        "slowest_rejection_s": rejections[-1]["seconds"],
        "slowest_rejections": [_described(r) for r in rejections[-5:]],
        "by_stage": _count(f"{r['status']}:{r['stage']}" for r in rows),
        "bound_false_rejections": false,
        "bound_rejections_checked": checked,
        "tiny_measured_over_raw_bound": _raw_bound_ratio(profiler, roofline),
        "roofline": roofline.to_dict(),
    }


def _timed_check(gate: Gate, genome: Genome) -> dict[str, Any]:
    start = time.perf_counter()
    verdict = gate.check(genome)
    return {
        "genome": genome,
        "status": str(verdict.status),
        "stage": verdict.stage,
        "value": verdict.value,
        "seconds": time.perf_counter() - start,
    }


def _described(row: dict) -> dict[str, Any]:
    cost = count_cost(row["genome"], NUM_CLASSES)
    return {
        "seconds": row["seconds"],
        "stage": row["stage"],
        "value": row["value"],
        "params": cost.params,
        "gflops": cost.flops / 1e9,
    }


def _false_rejections(rows: list[dict], profiler: Profiler) -> tuple[int, int]:
    """Bound-rejected genomes that run within the budget after all. Each is probed as the gate
    probes: over the budget when its cold run is 4x over or its fastest warm probe run is over
    (or it does not fit in memory); measured in full otherwise."""
    near = [r for r in rows if r["stage"] == "bound" and r["value"] <= SAFETY * PAPER_BUDGET_MS]
    probe = Profiler(Settings(runs=5, min_seconds=0.0))
    false = 0
    for row in near:
        profile = probe.measure(row["genome"], NUM_CLASSES, stop_above_ms=PAPER_BUDGET_MS)
        ran = profile.status == Status.ADMITTED  # not stopped early, out of memory or failed
        false += ran and profile.runtime_ms <= PAPER_BUDGET_MS
    return false, len(near)


def _raw_bound_ratio(profiler: Profiler, roofline) -> float:
    """The smallest measured runtime over the bound at the raw peak (without ``SAFETY``)."""
    ratios = []
    for genome in tiny_genomes(20, seed=3):
        runtime = profiler.measure(genome, NUM_CLASSES).runtime_ms
        raw = roofline.min_runtime_ms(count_cost(genome, NUM_CLASSES)) * SAFETY
        ratios.append(runtime / raw)
    return min(ratios)


def _count(keys) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


# (paper) -------------------------------------------------------------------------------------


def paper(args: argparse.Namespace) -> dict[str, Any]:
    pin_process({usable_cores()[-1]})
    _cap_memory()
    settings = Settings(device="cpu", runs=5, min_seconds=0.2)  # sampling, not precision
    profiler = Profiler(settings)
    gate = Gate(
        Constraints(max_cpu_ms=PAPER_BUDGET_MS),
        num_classes=NUM_CLASSES,
        profilers={"cpu": profiler},
        rooflines={"cpu": device_roofline(settings)},
    )
    initial = 50 if args.quick else 200
    strategy = Evolution(
        load_space(SPACES / "tvn.toml"), seed=0, initial_size=initial, tournament_size=50
    )
    strategy.feasible = gate.passes_bounds
    cap, wanted = 5000, initial + 20
    with tempfile.TemporaryDirectory() as tmp:
        tally = Tally(cap, num_trained=wanted)
        with LineageWriter(tmp) as writer:
            Engine(
                strategy,
                gate,
                _Instant(),
                writer,
                run_id="paper",
                tally=tally,
                progress=Progress(tally, stream=io.StringIO()),
            ).run()
        frame = read_lineage(tmp)
    first_child = frame[frame["parent_id"].notna()]["num_asked_at_tell"].min()
    return {
        "initial_size": initial,
        "cap": cap,
        "told": len(frame),
        "by_status": _count(frame["status"]),
        "first_tournament_at": int(first_child),
        "first_tournament_share_of_cap": first_child / cap,
    }


class _Instant:
    """An executor whose 'training' is an instant fitness drawn from the genome id."""

    def __init__(self) -> None:
        self._done: list[tuple[int, Evaluation]] = []

    @property
    def num_running(self) -> int:
        return len(self._done)

    def submit(self, key: int, job: Job) -> None:
        self._done.append((key, Evaluation("trained", fitness=int(job.genome.id[:6], 16) / 2**24)))

    def wait(self, timeout: float) -> list[tuple[int, Evaluation]]:
        done, self._done = self._done, []
        return done


# (cluster) -----------------------------------------------------------------------------------


class SimulatedCluster:
    """``num_workers`` workers on a virtual clock: each candidate trains for a log-normal time
    (median 20 minutes; 1 % under 1 minute, 1 % over 6 hours). The clock also advances by the
    driver's own time between calls, so a slow driver leaves workers idle, as it would."""

    def __init__(self, num_workers: int, seed: int = 0) -> None:
        self.num_workers = num_workers
        self.now = 0.0
        self.tasks: list[tuple[float, float]] = []  # (start, end) of every task, virtual time
        self._rng = random.Random(seed)
        self._heap: list[tuple[float, int]] = []
        self._real = time.perf_counter()

    def clock(self) -> float:
        self._catch_up()
        return self.now

    @property
    def num_running(self) -> int:
        return len(self._heap)

    def submit(self, key: int, job: Job) -> None:
        self._catch_up()
        seconds = math.exp(self._rng.gauss(math.log(1200.0), 1.45))
        self.tasks.append((self.now, self.now + seconds))
        heapq.heappush(self._heap, (self.now + seconds, key))

    def idle_share(self) -> float:
        """Worker time idle while there was still work to give (up to the last submission:
        after it, workers drain and idle through no fault of the driver)."""
        end = max(start for start, _ in self.tasks)
        busy = sum(min(stop, end) - start for start, stop in self.tasks)
        return 1 - busy / (self.num_workers * end)

    def wait(self, timeout: float) -> list[tuple[int, Evaluation]]:
        self._catch_up()
        if timeout > 0 and self._heap and self._heap[0][0] > self.now:
            self.now = min(self._heap[0][0], self.now + timeout)
        done = []
        while self._heap and self._heap[0][0] <= self.now:
            _, key = heapq.heappop(self._heap)
            done.append((key, Evaluation("trained", fitness=self._rng.random())))
        self._real = time.perf_counter()
        return done

    def _catch_up(self) -> None:
        real = time.perf_counter()
        self.now += real - self._real
        self._real = real


def cluster(args: argparse.Namespace) -> dict[str, Any]:
    workers, budget = 1000, 4000 if args.quick else 20_000
    sim = SimulatedCluster(workers)
    strategy = Evolution(
        load_space(SPACES / "tiny.toml"), seed=0, initial_size=200, tournament_size=50
    )
    gate = Gate(Constraints(max_params=200_000), num_classes=10)
    memory: list[dict[str, float]] = []
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        tally = Tally(budget)
        progress = _MemoryProbe(tally, memory, budget)
        with LineageWriter(tmp) as writer:
            engine = Engine(
                strategy,
                gate,
                sim,
                writer,
                run_id="sim",
                tally=tally,
                num_workers=workers,
                progress=progress,
                clock=sim.clock,
                poll_seconds=60.0,
            )
            started = time.perf_counter()
            engine.run()
            driver_seconds = time.perf_counter() - started
    tracemalloc.stop()
    makespan = sim.now
    return {
        "workers": workers,
        "candidates": budget,
        "virtual_hours": makespan / 3600,
        "idle_share": sim.idle_share(),
        "driver_seconds": driver_seconds,
        "driver_ms_per_candidate": 1000 * driver_seconds / budget,
        "memory": memory,
    }


class _MemoryProbe(Progress):
    """Records the driver's traced memory at every quarter of the budget."""

    def __init__(self, tally: Tally, memory: list, budget: int) -> None:
        super().__init__(tally, stream=io.StringIO())
        self.memory, self.marks = memory, [budget * q // 4 for q in (1, 2, 3, 4)]

    def update(self, *, force: bool = False) -> None:
        if self.marks and self.tally.done >= self.marks[0]:
            current, _ = tracemalloc.get_traced_memory()
            self.memory.append({"told": self.tally.done, "traced_mb": current / 2**20})
            self.marks.pop(0)


# ---------------------------------------------------------------------------------------------


SECTIONS = {"repeat": repeat, "cluster": cluster, "paper": paper, "cost": cost}


def _repeat_lines(r: dict) -> list[str]:
    return [
        f"repeat ({r['device']}, {r['genomes']} genomes, budget {r['budget_ms']:.3f} ms)",
        f"  fastest run: within 5 % {r['within_5pct']:.1%}, "
        f"same decisions {r['same_decisions']:.1%} ({r['remeasured']} measured twice)",
        f"  median:      within 5 % {r['median_within_5pct']:.1%}, "
        f"same decisions {r['median_same_decisions']:.1%}",
    ]


def _cost_lines(c: dict) -> list[str]:
    return [
        f"cost ({c['genomes']} tvn.toml genomes, {PAPER_BUDGET_MS:g} ms budget)",
        f"  {c['screened_per_hour']:,.0f} screened per hour; "
        f"slowest rejection {c['slowest_rejection_s']:.2f} s",
        f"  by stage: {c['by_stage']}",
        f"  bound: {_checked(c)}; tiny genomes measured / raw-peak bound >= "
        f"{c['tiny_measured_over_raw_bound']:.2f}",
        "  slowest rejections: "
        + "; ".join(
            f"{r['seconds']:.2f} s ({r['stage']}, {r['params'] / 1e6:,.0f} M params)"
            for r in reversed(c["slowest_rejections"])
        ),
    ]


def _checked(c: dict) -> str:
    if c["bound_rejections_checked"] is None:
        return "its rejections not checked (--no-bound-check)"
    return f"{c['bound_false_rejections']} false of {c['bound_rejections_checked']} checked"


def _paper_lines(p: dict) -> list[str]:
    return [
        f"paper (initial {p['initial_size']}, cap {p['cap']}): first tournament child at "
        f"candidate {p['first_tournament_at']} ({p['first_tournament_share_of_cap']:.1%} of "
        f"the cap); {p['by_status']}"
    ]


def _cluster_lines(c: dict) -> list[str]:
    memory = ", ".join(f"{m['told']:,}: {m['traced_mb']:.1f} MiB" for m in c["memory"])
    return [
        f"cluster ({c['workers']} workers, {c['candidates']:,} candidates, "
        f"{c['virtual_hours']:.0f} h): idle {c['idle_share']:.2%}, "
        f"driver {c['driver_ms_per_candidate']:.2f} ms per candidate",
        f"  traced memory at told: {memory}",
    ]


LINES = {"repeat": _repeat_lines, "cost": _cost_lines, "paper": _paper_lines}
LINES["cluster"] = _cluster_lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        return _measure_child(*sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_train":
        return _train_child(*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="fewer genomes and candidates")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--no-pause", action="store_true", help="repeat: the profiler does not pause the neighbour"
    )
    parser.add_argument(
        "--no-bound-check",
        action="store_true",
        help="cost: skip probing the bound's rejections for false ones (the longest part)",
    )
    args = parser.parse_args()
    out = args.out or RESULTS / f"gate_bench{'-cuda' if args.device == 'cuda' else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}  # others kept
    results |= {"device": device_signature(args.device, 1).key, "load_before": os.getloadavg()}
    for name in args.sections:  # each written as soon as it is done
        results[name] = SECTIONS[name](args)
        results["load_after"] = os.getloadavg()
        print("\n".join(LINES[name](results[name])), flush=True)
        out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
