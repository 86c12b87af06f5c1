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

    nice -n 10 .venv/bin/python bench/search_quality.py [--sections snr reference] [--quick]
        [--data DIR] [--jobs 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from data_bench import block  # run from bench/: its plain block, genes set by name

from tvnsearch.cli.main import main as tvnsearch_main
from tvnsearch.data.frame_cache import FrameCache
from tvnsearch.genome.genes import Genome
from tvnsearch.genome.space import load_space
from tvnsearch.measure.device import device_signature
from tvnsearch.measure.gate import Gate
from tvnsearch.measure.profile import Settings
from tvnsearch.measure.profiler import Profiler
from tvnsearch.search.recipe import RunConfig, load_recipe
from tvnsearch.train.training import TrainConfig, TrainData, prepare_data, train_genome

ROOT = Path(__file__).parents[1]
RECIPE = ROOT / "runners" / "local.toml"
RESULTS = Path(__file__).parent / "results" / "search_quality.json"
SEEDS = (0, 1)  # training seeds: weights, clip order, offsets, crops, flips


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
    cache = FrameCache(args.cache, short_side=recipe.data.cache_size)
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


SECTIONS = {"snr": snr, "reference": reference}
LINES = {"snr": _snr_lines, "reference": _reference_lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="12 genomes instead of 50")
    parser.add_argument("--num-genomes", type=int, default=None, help="snr: instead of 50")
    parser.add_argument("--data", type=Path, default=None, help="a benchmark already written")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once (2)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
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
