"""Search-quality benchmark: does the default benchmark's fitness tell networks apart?

(snr)       Random genomes of ``search_spaces/tiny.toml`` (seeded), drawn until 50 pass
            ``runners/local.toml``'s gate (its constraints, measured on this machine, as the
            search does before it trains anything), each trained twice, with training seeds 0 and
            1, on the default synthetic benchmark (as ``tvnsearch data synth`` writes it) with
            local.toml's training settings; two trainings at a time, one thread each. The
            Spearman rank correlation of fitness between the seeds (goal >= 0.8), the median and
            90th-percentile absolute difference between them, the range of fitness across
            genomes, failures.
(reference) Hand-made genomes of the tiny space (one frame; small temporal; wider and deeper
            temporal), same settings and seeds: where random genomes stand between them.
(compare)   Best fitness found over training compute (iterations), at equal compute, one search
            per strategy and seed: random search, evolution, evolution with multi-fidelity
            training (ASHA, 3 rungs), evolution whose children inherit their parent's weights,
            Optuna's TPE; local.toml's recipe with a tighter runtime constraint
            (``COMPARE_MAX_CPU_MS``), ``quality_runs.COMPUTE_FULL`` full trainings' worth of
            iterations each (``bench/quality_runs.py`` says how trainings are shared). Per pair of
            strategies, seed by seed: wins and Wilcoxon's signed-rank test (exact, one-sided); the
            share of the compute at which multi-fidelity evolution has reached random search's
            final best (goal <= 30 %); the best architectures of evolution with and without
            inheritance trained again from scratch (an inheriting search's fitness includes its
            ancestors' training).
(front)     The same for the accuracy/latency front: hypervolume of fitness x cpu_ms (reference
            point: fitness 0, the runtime constraint) over compute, for Pareto evolution, Optuna's
            NSGA-II and random search.
Plots: bench/results/search_quality-compare.png, search_quality-front.png.

    nice -n 10 .venv/bin/python bench/search_quality.py [--sections snr reference compare front]
        [--quick] [--seeds 5] [--compute 20] [--reuse] [--data DIR] [--jobs 2] [--out FILE]

compare and front run together when both are asked (their searches share random search's); each
search's run folder stays in bench/out/search_quality/runs, and --reuse analyses them again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import random
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import quality_runs
import torch
from data_bench import block  # run from bench/: its plain block, genes set by name
from quality_runs import ARMS, MULTI, SINGLE

from tvnsearch.cli.main import main as tvnsearch_main
from tvnsearch.data.frame_cache import FrameCache
from tvnsearch.genome.genes import Genome
from tvnsearch.genome.space import load_space
from tvnsearch.inspect.hypervolume import Reference, hypervolume_by_told, in_told_order
from tvnsearch.measure.device import device_signature
from tvnsearch.measure.gate import Gate
from tvnsearch.measure.profile import Settings
from tvnsearch.measure.profiler import Profiler
from tvnsearch.search.lineage import read_lineage
from tvnsearch.search.recipe import RunConfig, load_recipe
from tvnsearch.train.training import TrainConfig, TrainData, prepare_data, train_genome

ROOT = Path(__file__).parents[1]
RECIPE = ROOT / "runners" / "local.toml"
RESULTS = Path(__file__).parent / "results" / "search_quality.json"
SEEDS = (0, 1)  # training seeds: weights, clip order, offsets, crops, flips
# compare and front: local.toml's 4 ms admits networks that take a minute to train here; this
# keeps dozens of searches within an hour, and is the same constraint for every strategy.
COMPARE_MAX_CPU_MS = 2.0
PLOTS = RESULTS.parent / "search_quality-{}.png"
WORK = ROOT / "bench" / "out" / "search_quality"  # compare, front: run folders, curves, the data


# All inside search_spaces/tiny.toml; (resolution, frames, stride, pipelining depth, blocks).
REFERENCE = {
    "one frame, 48 px, 2 blocks": Genome(48, 1, 1, 0, (block(), block(num_filters=32))),
    "temporal, 32 px, 4 frames": Genome(
        32, 4, 1, 0, (block(temporal_kernel=3), block(num_filters=32, temporal_kernel=3))
    ),
    "wider and deeper, 64 px, 8 frames": Genome(
        64,
        8,
        1,
        0,
        (
            block(num_filters=16, temporal_kernel=3),
            block(num_filters=32, temporal_kernel=3, skip=True),
            block(num_filters=32, temporal_kernel=3, spatial_stride=1, skip=True),
        ),
    ),
}


def snr(args: argparse.Namespace) -> dict[str, Any]:
    recipe = load_recipe(RECIPE)
    data = _data(args)
    cache = _frames(recipe, args.cache)
    num_classes = prepare_data(data, cache).dataset.num_classes  # decodes once, for every worker
    count = args.num_genomes or (12 if args.quick else 50)
    drawn = _admitted_genomes(recipe, num_classes, count, seed=0)
    genomes = [d["genome"] for d in drawn]
    runs = _train_all(genomes, recipe, data, args)
    rows = [{**d, "genome": d["genome"].to_dict(), **_pair(runs, i)} for i, d in enumerate(drawn)]
    return {
        "recipe": str(RECIPE.relative_to(ROOT)),
        "train": _train_settings(recipe),
        **_summary(rows),
        "genomes": rows,
    }


def reference(args: argparse.Namespace) -> dict[str, Any]:
    recipe = load_recipe(RECIPE)
    runs = _train_all(list(REFERENCE.values()), recipe, _data(args), args)
    rows = [
        {"name": name, "genome": g.to_dict(), **_pair(runs, i)}
        for i, (name, g) in enumerate(REFERENCE.items())
    ]
    return {
        "recipe": str(RECIPE.relative_to(ROOT)),
        "train": _train_settings(recipe),
        "genomes": rows,
    }


def _data(args: argparse.Namespace) -> Path:
    """The benchmark's folder: ``--data``, or the default benchmark written once per run."""
    if args.data is None:
        args.data = args.work / "synth"
        if tvnsearch_main(["data", "synth", "--out", str(args.data)]) != 0:
            raise SystemExit("could not write the default benchmark")
    return args.data


def _admitted_genomes(
    recipe: RunConfig, num_classes: int, count: int, *, seed: int
) -> list[dict[str, Any]]:
    """Random genomes of the recipe's space that its gate admits, measured on this machine."""
    settings = Settings(device="cpu", threads=recipe.resources.profiler_threads)
    gate = Gate(recipe.constraints, num_classes=num_classes, profilers={"cpu": Profiler(settings)})
    space, rng = load_space(recipe.search.space), random.Random(seed)
    admitted, num_drawn = [], 0
    while len(admitted) < count:
        genome, num_drawn = space.sample(rng), num_drawn + 1
        verdict = gate.check(genome)
        if verdict.admitted:
            cpu_ms = next((p.runtime_ms for p in verdict.profiles), None)
            admitted.append(
                {
                    "genome": genome,
                    "params": verdict.params,
                    "flops": verdict.flops,
                    "cpu_ms": cpu_ms,
                }
            )
    print(f"  {count} admitted of {num_drawn} drawn", flush=True)
    return admitted


def _train_all(
    genomes: list[Genome], recipe: RunConfig, data: Path, args: argparse.Namespace
) -> dict[tuple[int, int], dict[str, Any]]:
    """Every genome trained with every seed, ``args.jobs`` processes at once."""
    jobs = [
        (i, g, dataclasses.replace(recipe.train, seed=s))
        for s in SEEDS
        for i, g in enumerate(genomes)
    ]
    init = (str(data), str(args.cache), recipe.data.cache_size)
    # Fresh processes: the parent's torch has run (the gate's measurements), and forking it is
    # not safe.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        args.jobs, mp_context=spawn, initializer=_start_worker, initargs=init
    ) as pool:
        runs = {}
        for job, run in zip(jobs, pool.map(_train_one, jobs), strict=True):
            runs[job[0], job[2].seed] = run
            print(_run_line(job[0], job[2].seed, run), flush=True)
    return runs


def _frames(recipe: Any, cache: Path) -> FrameCache:
    return dataclasses.replace(recipe.data, cache_dir=str(cache)).frame_cache()


_WORKER_DATA: list[TrainData] = []  # the dataset, prepared once per worker process


def _start_worker(data: str, cache: str, cache_size: int) -> None:
    torch.set_num_threads(1)  # as a search's training worker on one core
    _WORKER_DATA.append(prepare_data(data, FrameCache(Path(cache), short_side=cache_size)))


def _train_one(job: tuple[int, Genome, TrainConfig]) -> dict[str, Any]:
    _, genome, config = job
    result = train_genome(genome, _WORKER_DATA[0], config)
    return {
        "status": str(result.status),
        "fitness": result.fitness,
        "top1": result.top1,
        "top5": result.top5,
        "train_seconds": round(result.train_seconds, 2),
        "reason": result.reason,
    }


def _pair(runs: dict[tuple[int, int], dict[str, Any]], index: int) -> dict[str, Any]:
    return {f"seed{s}": runs[index, s] for s in SEEDS}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Agreement of fitness between the two seeds, over genomes trained with both."""
    pairs = [
        (r["seed0"]["fitness"], r["seed1"]["fitness"])
        for r in rows
        if r["seed0"]["fitness"] is not None and r["seed1"]["fitness"] is not None
    ]
    a, b = np.array(pairs).T
    gaps = np.abs(a - b)
    means = (a + b) / 2
    return {
        "num_genomes": len(rows),
        "num_failed": len(rows) - len(pairs),
        "spearman": _spearman(a, b),
        "median_abs_diff": float(np.median(gaps)),
        "p90_abs_diff": float(np.percentile(gaps, 90)),
        "fitness_min": float(means.min()),
        "fitness_max": float(means.max()),
        "fitness_median": float(np.median(means)),
        "train_seconds_median": statistics.median(
            r[f"seed{s}"]["train_seconds"] for r in rows for s in SEEDS
        ),
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: Pearson's correlation of the ranks, ties given their mean rank."""
    ranks = [pd.Series(x).rank(method="average").to_numpy() for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def _train_settings(recipe: RunConfig) -> dict[str, Any]:
    t = recipe.train
    return {"iterations": t.iterations, "batch_size": t.batch_size, "seeds": list(SEEDS)}


def _run_line(index: int, seed: int, run: dict[str, Any]) -> str:
    if run["fitness"] is None:
        return f"  #{index:<3} seed {seed}  {run['status']}: {run['reason']}"
    return (
        f"  #{index:<3} seed {seed}  fitness {run['fitness']:.3f}  top-1 {run['top1']:.3f}  "
        f"top-5 {run['top5']:.3f}  ({run['train_seconds']:.0f} s)"
    )


def _snr_lines(r: dict[str, Any]) -> list[str]:
    return [
        f"snr ({r['num_genomes']} genomes, {r['num_failed']} failed; {r['train']['iterations']} "
        f"iterations of batch {r['train']['batch_size']}, seeds {r['train']['seeds']})",
        f"  Spearman rank correlation between seeds {r['spearman']:.3f} (goal >= 0.8)",
        f"  |fitness difference| median {r['median_abs_diff']:.3f}, 90th percentile "
        f"{r['p90_abs_diff']:.3f}",
        f"  fitness across genomes {r['fitness_min']:.3f} .. {r['fitness_max']:.3f} (median "
        f"{r['fitness_median']:.3f}); training {r['train_seconds_median']:.1f} s median",
    ]


def _reference_lines(r: dict[str, Any]) -> list[str]:
    lines = [f"reference ({r['train']['iterations']} iterations, seeds {r['train']['seeds']})"]
    for row in r["genomes"]:
        cells = "  ".join(
            f"{row[f'seed{s}']['fitness']:.3f} (top-1 {row[f'seed{s}']['top1']:.3f})"
            if row[f"seed{s}"]["fitness"] is not None
            else row[f"seed{s}"]["status"]
            for s in SEEDS
        )
        lines.append(f"  {row['name']:<36} {cells}")
    return lines


def compare(args: argparse.Namespace) -> dict[str, Any]:
    runs = _searches(args)
    full = load_recipe(RECIPE).train.iterations
    budget = args.compute * full
    grid = np.linspace(0, budget, 41)
    curves: dict[str, list[list[float]]] = {}
    finals: dict[str, dict[int, float]] = {}
    for run in runs:
        if run["arm"] not in SINGLE:
            continue
        told = quality_runs.spent_and_best(run["run_dir"], full)
        at = quality_runs.best_at(told, grid)
        curves.setdefault(run["arm"], []).append([_num(x) for x in at])
        finals.setdefault(run["arm"], {})[run["seed"]] = _num(at[-1])
    seeds = sorted(finals["random"])
    pairs = {f"{a} > {b}": _paired(finals, a, b, seeds) for a, b in PAIRS}
    # An inheriting search's fitnesses include the training its ancestors had: its best
    # architecture, trained from scratch, against evolution's (trained from scratch already).
    scratch = _from_scratch(runs, ("evolution+inherit", "evolution"), full, args)
    pairs["evolution+inherit > evolution, best retrained from scratch"] = _paired(
        scratch, "evolution+inherit", "evolution", seeds
    )
    paired = pairs["evolution > random"]["differences"]
    p_value, num_pairs = quality_runs.wilcoxon_greater(paired)
    reach = {
        s: _first_reach(grid, curves["evolution+asha"][i], finals["random"][s]) / budget
        for i, s in enumerate(seeds)
    }
    _plot(args.out.parent / PLOTS.name.format("compare"), grid / full, curves, "best fitness")
    return {
        "recipe": f"{RECIPE.relative_to(ROOT)}, max_cpu_ms {COMPARE_MAX_CPU_MS}",
        "compute_full_trainings": args.compute,
        "iterations_per_training": full,
        "arms": {a: dataclasses.asdict(ARMS[a]) for a in SINGLE},
        "seeds": seeds,
        "final_best": finals,
        "evolution_minus_random": paired,
        "evolution_wins": sum(d > 0 for d in paired),
        "wilcoxon_p_one_sided": p_value,
        "wilcoxon_pairs": num_pairs,
        "pairs": pairs,
        "best_retrained_from_scratch": scratch,
        "asha_reaches_random_final_at": reach,
        "asha_reach_median": float(np.median(list(reach.values()))),
        "grid_full_trainings": list(grid / full),
        "curves": curves,
        "counts": _counts(runs, SINGLE),
    }


def front(args: argparse.Namespace) -> dict[str, Any]:
    runs = _searches(args)
    full = load_recipe(RECIPE).train.iterations
    budget = args.compute * full
    grid = np.linspace(0, budget, 41)
    reference = Reference(("fitness", "cpu_ms"), (0.0, COMPARE_MAX_CPU_MS), ("", ""))
    curves: dict[str, list[list[float]]] = {}
    finals: dict[str, dict[int, float]] = {}
    for run in runs:
        if run["arm"] not in MULTI:
            continue
        frame = in_told_order(read_lineage(run["run_dir"]))
        spent = quality_runs.spent_and_best(run["run_dir"], full)["spent"].to_numpy()
        volumes = hypervolume_by_told(frame, reference)
        index = np.searchsorted(spent, grid, side="right") - 1
        at = np.where(index >= 0, volumes[np.maximum(index, 0)], 0.0)
        curves.setdefault(run["arm"], []).append([float(x) for x in at])
        finals.setdefault(run["arm"], {})[run["seed"]] = float(at[-1])
    seeds = sorted(finals["random"])
    tests = {}
    for arm in ("pareto", "nsga2"):
        paired = [finals[arm][s] - finals["random"][s] for s in seeds]
        p_value, _ = quality_runs.wilcoxon_greater(paired)
        tests[arm] = {"minus_random": paired, "wins": sum(d > 0 for d in paired), "p": p_value}
    _plot(args.out.parent / PLOTS.name.format("front"), grid / full, curves, "hypervolume")
    return {
        "reference_point": {"fitness": 0.0, "cpu_ms": COMPARE_MAX_CPU_MS},
        "seeds": seeds,
        "final_hypervolume": finals,
        "against_random": tests,
        "grid_full_trainings": list(grid / full),
        "curves": curves,
        "counts": _counts(runs, MULTI),
    }


PAIRS = (  # (a, b): does a end better than b, seed by seed?
    ("evolution", "random"),
    ("evolution+asha", "random"),
    ("evolution+asha", "evolution"),
    ("evolution+inherit", "evolution"),
    ("tpe", "random"),
    ("evolution", "tpe"),
)


def _from_scratch(
    runs: list[dict[str, Any]], arms: tuple[str, ...], full: int, args: argparse.Namespace
) -> dict[str, dict[int, float | None]]:
    """Per arm and seed, the fitness of the search's best genome trained from scratch."""
    chosen = [r for r in runs if r["arm"] in arms]
    genomes = [quality_runs.best_genome(r["run_dir"], full) for r in chosen]
    found = [g for g in genomes if g is not None]
    values = iter(
        quality_runs.from_scratch(
            found, _compare_recipe(), str(WORK / "motion"), str(args.cache), WORK
        )
    )
    table: dict[str, dict[int, float | None]] = {a: {} for a in arms}
    for run, genome in zip(chosen, genomes, strict=True):
        table[run["arm"]][run["seed"]] = next(values) if genome is not None else None
    return table


def _paired(finals: dict, a: str, b: str, seeds: list[int]) -> dict[str, Any]:
    """Final bests of ``a`` and ``b`` seed by seed: differences, wins, Wilcoxon's p (a > b)."""
    nan = float("nan")
    differences = [
        (finals[a][s] if finals[a][s] is not None else nan)
        - (finals[b][s] if finals[b][s] is not None else nan)
        for s in seeds
    ]
    differences = [d for d in differences if not np.isnan(d)]
    p_value, used = quality_runs.wilcoxon_greater(differences)
    return {
        "differences": differences,
        "wins": sum(d > 0 for d in differences),
        "losses": sum(d < 0 for d in differences),
        "p_one_sided": p_value,
        "pairs_used": used,
    }


def _searches(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every search compare and front need, run once per benchmark run, ``args.jobs`` seeds at
    once (a seed's searches in one process, in the order of ``ARMS``: random search first)."""
    if getattr(args, "searches", None) is not None:
        return args.searches
    recipe, data = _compare_recipe(), WORK / "motion"
    if not data.exists() and tvnsearch_main(["data", "synth", "--out", str(data)]) != 0:
        raise SystemExit("could not write the default benchmark")
    prepare_data(data, _frames(recipe, args.cache))  # decode once
    wanted = [a for a in ARMS if a in SINGLE and "compare" in args.sections] + [
        a for a in ARMS if a in MULTI and "front" in args.sections
    ]
    arms = [a for a in ARMS if a in wanted]
    if args.reuse:  # the searches of the last run, analysed again
        args.searches = [
            {"arm": a, "seed": s, "run_dir": str(WORK / "runs" / f"{a}-seed{s}")}
            for s in range(args.seeds)
            for a in arms
        ]
        missing = [r["run_dir"] for r in args.searches if not Path(r["run_dir"]).is_dir()]
        if missing:
            raise SystemExit(f"--reuse: no such search: {missing[0]}")
    else:
        args.searches = _run_searches(args, arms, recipe, data)
    for run in args.searches:
        run["counts"] = _run_counts(run["run_dir"])
    return args.searches


def _compare_recipe() -> RunConfig:
    return load_recipe(RECIPE, [f"constraints.max_cpu_ms={COMPARE_MAX_CPU_MS}"])


def _run_searches(
    args: argparse.Namespace, arms: list[str], recipe: RunConfig, data: Path
) -> list[dict[str, Any]]:
    work = WORK
    shutil.rmtree(work / "runs", ignore_errors=True)  # the curves stay: see quality_runs
    jobs = [
        (s, arms, recipe, str(data), str(args.cache), work, args.compute) for s in range(args.seeds)
    ]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=spawn) as pool:
        return [run for runs in pool.map(quality_runs.run_seed, jobs) for run in runs]


def _run_counts(run_dir: str) -> dict[str, int]:
    frame = read_lineage(run_dir)
    counts = frame["status"].astype(str).value_counts().to_dict()
    stopped = int((frame["iterations"] < load_recipe(RECIPE).train.iterations).sum())
    return {**{k: int(v) for k, v in counts.items()}, "stopped_at_a_rung": stopped}


def _counts(runs: list[dict[str, Any]], arms: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per arm, the mean over seeds of each count: told, trained, rejected, duplicates..."""
    table: dict[str, dict[str, float]] = {}
    for arm in arms:
        rows = pd.DataFrame([r["counts"] for r in runs if r["arm"] == arm]).fillna(0)
        table[arm] = {k: float(v) for k, v in rows.mean().items()}
    return table


def _first_reach(grid: np.ndarray, curve: list[float], target: float) -> float:
    """The compute at which ``curve`` first reaches ``target``; inf if it never does."""
    hits = [g for g, v in zip(grid, curve, strict=True) if v is not None and v >= target]
    return float(hits[0]) if hits else float("inf")


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _plot(path: Path, x: np.ndarray, curves: dict[str, list[list[float]]], label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for i, (arm, runs) in enumerate(curves.items()):
        colour = f"C{i}"
        values = np.array([[np.nan if v is None else v for v in run] for run in runs], dtype=float)
        for run in values:
            axes.plot(x, run, color=colour, alpha=0.25, linewidth=0.8)
        mean = np.nanmean(np.where(np.isnan(values), np.nan, values), axis=0)
        axes.plot(x, mean, color=colour, linewidth=2.2, label=f"{arm} (mean of {len(runs)})")
    axes.set_xlabel(
        f"training compute (full trainings of {load_recipe(RECIPE).train.iterations} iterations)"
    )
    axes.set_ylabel(label)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _compare_lines(r: dict[str, Any]) -> list[str]:
    lines = [
        f"compare ({len(r['seeds'])} seeds, {r['compute_full_trainings']} full trainings of "
        f"compute each; {r['recipe']})",
        "  arm              final best per seed                 mean   told  trained  stopped",
    ]
    for arm, finals in r["final_best"].items():
        values = [finals[s] for s in r["seeds"]]
        cells = " ".join(f"{v:.3f}" if v is not None else "  -  " for v in values)
        c = r["counts"][arm]
        mean = np.mean([v for v in values if v is not None])
        told = sum(v for k, v in c.items() if k != "stopped_at_a_rung")
        lines.append(
            f"  {arm:<16} {cells:<35} {mean:.3f}  {told:5.0f}  {c.get('trained', 0):7.0f}  "
            f"{c.get('stopped_at_a_rung', 0):7.0f}"
        )
    for name, t in r["pairs"].items():
        lines.append(
            f"  {name:<32} wins {t['wins']}, losses {t['losses']} of {len(r['seeds'])} seeds; "
            f"mean difference {np.mean(t['differences']):+.3f}; Wilcoxon one-sided "
            f"p = {t['p_one_sided']:.3f}"
        )
    lines += [
        "  evolution+asha reaches random's final best at "
        + ", ".join(f"{v:.0%}" for v in r["asha_reaches_random_final_at"].values())
        + f" of the compute (median {r['asha_reach_median']:.0%}; goal <= 30 %)",
    ]
    return lines


def _front_lines(r: dict[str, Any]) -> list[str]:
    point = r["reference_point"]
    lines = [f"front ({len(r['seeds'])} seeds; hypervolume of fitness x cpu_ms from {point})"]
    for arm, finals in r["final_hypervolume"].items():
        cells = " ".join(f"{finals[s]:.3f}" for s in r["seeds"])
        lines.append(f"  {arm:<8} {cells}  mean {np.mean(list(finals.values())):.3f}")
    for arm, t in r["against_random"].items():
        lines.append(
            f"  {arm} beats random on {t['wins']} of {len(r['seeds'])} seeds; Wilcoxon one-sided "
            f"p = {t['p']:.3f}"
        )
    return lines


SECTIONS = {"snr": snr, "reference": reference, "compare": compare, "front": front}
LINES = {
    "snr": _snr_lines,
    "reference": _reference_lines,
    "compare": _compare_lines,
    "front": _front_lines,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="12 genomes instead of 50")
    parser.add_argument("--num-genomes", type=int, default=None, help="snr: instead of 50")
    parser.add_argument("--data", type=Path, default=None, help="a benchmark already written")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once (2)")
    parser.add_argument("--seeds", type=int, default=5, help="compare, front: seeds (5)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--compute", type=int, default=None, help="compare, front: full trainings")
    parser.add_argument(
        "--reuse", action="store_true", help="compare, front: analyse the last run's searches"
    )
    args = parser.parse_args()
    args.compute = args.compute or (3 if args.quick else quality_runs.COMPUTE_FULL)
    if args.quick:
        args.seeds = min(args.seeds, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    results |= {"device": device_signature("cpu", 1).key, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="search_quality.") as tmp:
        args.work, args.cache = Path(tmp), Path(tmp) / "frames"
        for name in args.sections:  # each written as soon as it is done
            started = time.perf_counter()
            results[name] = SECTIONS[name](args)
            results[name]["seconds"] = round(time.perf_counter() - started)
            results["load_after"] = os.getloadavg()
            print("\n".join(LINES[name](results[name])), flush=True)
            args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
