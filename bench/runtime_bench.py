"""Runtime benchmark: what each runtime says a network costs, and whether runtimes agree on ranks.

(table)   The six published TVNs and 50 genomes sampled from ``tvn_mobile.toml`` under 100 GFLOPs
          (and under 2 GiB of activations, which the gate would refuse before timing), one clip,
          batch 1, each measured by the profiler's own ``measure`` in every runtime installed
          (PyTorch eager, frozen TorchScript, ONNX Runtime, ExecuTorch), one thread:
          the fastest of the timed runs, the conversion's cost, and Kendall's tau between the
          runtimes' rankings of the 56 networks.
(peak)    TVN-1, one thread, in each runtime, against this core's limit: a 1024 x 1024 matmul's
          GFLOP/s (timed in the same process, between the runtimes) x TVN-1's counted FLOPs.
(cluster) A real search on a local two-node Ray cluster (loopback) whose second node alone has
          the custom resource ``target``; the recipe places the profiler there with
          ``[profiler] resources = { target = 1 }`` and measures in ONNX Runtime: the lineage's
          device signatures, and which node they name.
(gpu)     The table on CUDA (``--device cuda``): PyTorch eager, TorchScript and ONNX Runtime's
          CUDA execution provider where ``onnxruntime-gpu`` is installed.

    .venv/bin/python bench/runtime_bench.py [--sections table summary peak cluster]
        [--device cpu|cuda] [--genomes 50] [--part I/N] [--out FILE]

Two processes side by side, one core each, time the table twice as fast (each network is timed
in every runtime by the same process, so its runtimes stay comparable):

    for i in 0 1; do .venv/bin/python bench/runtime_bench.py --sections table --part $i/2 & done
    wait; .venv/bin/python bench/runtime_bench.py --sections summary peak cluster
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import torch

from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Genome
from tvnsearch.genome.space import load_space
from tvnsearch.genome.tvn_format import PUBLISHED, published_genome
from tvnsearch.measure.affinity import pin_process, usable_cores
from tvnsearch.measure.measurement import measure
from tvnsearch.measure.profile import Settings
from tvnsearch.measure.runtimes import RUNTIMES
from tvnsearch.measure.timing import fixed_threads

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 101  # UCF-101
MAX_FLOPS = 100e9
MAX_MEMORY = 2 * 2**30  # bytes a clip's forward pass needs at least
# Fastest of 5 timed runs after a cold run and the probe: enough to rank networks whose runtimes
# differ by more than the few percent that separate repeated measurements.
SETTINGS = Settings(warmup=3, runs=5, min_seconds=0.0)


def installed(device: str) -> list[str]:
    return [name for name, r in RUNTIMES.items() if r.missing(device) is None]


def networks(count: int, seed: int = 0) -> list[tuple[str, Genome]]:
    """The six published TVNs, then ``count`` tvn_mobile genomes under ``MAX_FLOPS``."""
    chosen = [(name, published_genome(name)) for name in PUBLISHED]
    space, rng = load_space(ROOT / "search_spaces" / "tvn_mobile.toml"), random.Random(seed)
    while len(chosen) < len(PUBLISHED) + count:
        genome = space.sample(rng)
        cost = count_cost(genome, NUM_CLASSES)
        # The gate rejects a network that cannot fit in memory before timing it in any runtime.
        if cost.flops < MAX_FLOPS and cost.min_memory_bytes < MAX_MEMORY:
            chosen.append((genome.id, genome))
    return chosen


def time_one(genome: Genome, runtime: str, device: str) -> dict[str, Any]:
    settings = dataclasses.replace(SETTINGS, runtime=runtime, device=device)
    start = time.perf_counter()
    profile = measure(genome, NUM_CLASSES, settings)
    return {
        "ms": profile.runtime_ms,
        "status": str(profile.status),
        "reason": profile.reason,
        "seconds": time.perf_counter() - start,  # building and converting included
        "signature": profile.device.label,
    }


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two rankings of the same items."""
    concordant = discordant = ties_a = ties_b = 0
    for i, j in combinations(range(len(a)), 2):
        da, db = a[i] - a[j], b[i] - b[j]
        if da == 0 and db == 0:
            continue
        if da == 0:
            ties_a += 1
        elif db == 0:
            ties_b += 1
        elif (da > 0) == (db > 0):
            concordant += 1
        else:
            discordant += 1
    pairs = concordant + discordant
    denominator = ((pairs + ties_a) * (pairs + ties_b)) ** 0.5
    return (concordant - discordant) / denominator if denominator else float("nan")


def table_section(count: int, device: str, part: tuple[int, int], out: Path) -> dict[str, Any]:
    """The networks of ``part`` (index, parts: every parts-th network from index), each timed in
    every runtime one after the other, in this process; each row is also appended to
    ``rows_file(out, device, index)`` as it is done (the table takes an hour on 2 cores)."""
    names = installed(device)
    index, parts = part
    rows = []
    kept = rows_file(out, device, index)
    kept.unlink(missing_ok=True)
    with fixed_threads(1):
        for label, genome in networks(count)[index::parts]:
            row = {"network": label, "gflops": count_cost(genome, NUM_CLASSES).flops / 1e9}
            for runtime in names:
                row[runtime] = time_one(genome, runtime, device)
            rows.append(row)
            with kept.open("a") as f:
                f.write(json.dumps(row) + "\n")
            cells = "  ".join(f"{r} {_ms(row[r]['ms'])}" for r in names)
            print(f"{label:>16} {row['gflops']:7.2f} GFLOPs  {cells}", flush=True)
    return {"device": device, "runtimes": names, "rows": rows}


def rows_file(out: Path, device: str, index: int) -> Path:
    return out.with_name(f"{out.stem}-{device}-rows{index}.jsonl")


def rows_files(out: Path, device: str) -> list[Path]:
    return sorted(out.parent.glob(f"{out.stem}-{device}-rows*.jsonl"))


def summary_section(out: Path, device: str) -> dict[str, Any]:
    """Kendall's tau between the runtimes' rankings, over the rows of every part timed."""
    rows = [
        json.loads(line) for f in rows_files(out, device) for line in f.read_text().splitlines()
    ]
    names = [n for n in RUNTIMES if all(n in row for row in rows)]
    taus = {}
    for first, second in combinations(names, 2):
        both = [r for r in rows if r[first]["ms"] is not None and r[second]["ms"] is not None]
        taus[f"{first} vs {second}"] = kendall_tau(
            [r[first]["ms"] for r in both], [r[second]["ms"] for r in both]
        )
    print(f"{len(rows)} networks; Kendall tau between runtimes' rankings (measured in both):")
    for pair, tau in taus.items():
        print(f"  {pair:<32} {tau:6.3f}")
    print("median ms, and seconds to convert and measure, per runtime:")
    for name in names:
        ms = [r[name]["ms"] for r in rows if r[name]["ms"] is not None]
        seconds = [r[name]["seconds"] for r in rows if "seconds" in r[name]] or [math.nan]
        failed = [f"{r['network']}: {r[name].get('reason')}" for r in rows if r[name]["ms"] is None]
        print(
            f"  {name:<12} median {statistics.median(ms):8.2f} ms; measuring took a median "
            f"{statistics.median(seconds):5.1f} s (max {max(seconds):5.1f}); failed {len(failed)}"
            f" {failed[:3]}"
        )
    wins = dict.fromkeys(names, 0)
    for r in rows:
        times = {n: r[n]["ms"] for n in names if r[n]["ms"] is not None}
        if times:
            wins[min(times, key=times.get)] += 1
    print(f"  fastest runtime, networks won: {wins}")
    published = [r for r in rows if r["network"] in PUBLISHED]
    for r in sorted(published, key=lambda r: PUBLISHED.index(r["network"])):
        print(f"  {r['network']:<14}" + "".join(f" {n} {_ms(r[n]['ms'])}" for n in names))
    return {"networks": len(rows), "kendall_tau": taus, "wins": wins}


def matmul_gflops(device: str, repeats: int = 20) -> float:
    size = 1024 if device == "cpu" else 8192  # a GPU needs a larger matmul to reach its peak
    a = torch.randn(size, size, device=device)
    a @ a
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ a
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def peak_section(device: str) -> dict[str, Any]:
    genome = published_genome("tvn1")
    flops = count_cost(genome, NUM_CLASSES).flops
    names = installed(device)
    results: dict[str, Any] = {"flops": flops, "runtimes": {}, "matmul_gflops": []}
    settings = dataclasses.replace(SETTINGS, runs=15)
    with fixed_threads(1):
        for _ in range(2):  # two rounds, the matmul timed between runtimes: the best counts
            for runtime in names:
                results["matmul_gflops"].append(matmul_gflops(device))
                chosen = dataclasses.replace(settings, runtime=runtime, device=device)
                profile = measure(genome, NUM_CLASSES, chosen)
                best = results["runtimes"].get(runtime)
                ms = profile.runtime_ms
                results["runtimes"][runtime] = ms if best is None or ms is None else min(best, ms)
    peak = max(results["matmul_gflops"])
    limit_ms = flops / (peak * 1e9) * 1e3
    results |= {"peak_gflops": peak, "limit_ms": limit_ms}
    print(
        f"TVN-1: {flops / 1e9:.2f} GFLOPs; this core's matmul {peak:.1f} GFLOP/s -> limit "
        f"{limit_ms:.1f} ms"
    )
    for runtime, ms in results["runtimes"].items():
        print(
            f"  {runtime:<12} {_ms(ms)} ms  = {ms / limit_ms:4.2f}x the limit, "
            f"{flops / ms / 1e6:5.1f} GFLOP/s ({100 * limit_ms / ms:4.1f} % of peak)"
        )
    return results


def cluster_section() -> dict[str, Any]:
    """A search on two local nodes, the profiler placed on the second by a custom resource."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import small_search

    from tvnsearch.cli.main import main
    from tvnsearch.search.lineage import read_lineage

    ray_constants.ENABLE_RAY_CLUSTER = False  # loopback addresses stay loopback
    node = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
    cluster = Cluster(initialize_head=True, head_node_args=node)
    try:
        target = cluster.add_node(**node, resources={"target": 1})
        head = cluster.head_node.node_id
        with tempfile.TemporaryDirectory() as folder:
            recipe = small_search(Path(folder), budget=6, iterations=4)
            recipe.write_text(
                recipe.read_text().replace(
                    "[constraints]\n", "[constraints]\nmax_cpu_ms = 10_000.0\n"
                )
                + f'address = "{cluster.address}"\n'
                + '[profiler]\nruntime = "onnxruntime"\nresources = { target = 1 }\n'
            )
            code = main(["search", str(recipe), "--results", str(Path(folder) / "r")])
            (run,) = (Path(folder) / "r").iterdir()
            frame = read_lineage(run)
    finally:
        cluster.shutdown()
    labels = sorted(set(frame["cpu_device"].dropna()))
    print(f"search exit {code}; head node {head[:8]}, node with 'target' {target.node_id[:8]}")
    for label in labels:
        print(f"  lineage cpu_device: {label}")
    return {
        "exit_code": code,
        "head_node": head,
        "target_node": target.node_id,
        "cpu_device": labels,
        "names_target_node": all(label.endswith(target.node_id[:8]) for label in labels),
        "candidates": len(frame),
        "workers": sorted(set(frame["worker_node"].dropna())),
    }


def _ms(ms: float | None) -> str:
    return "   failed" if ms is None else f"{ms:9.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["table", "summary", "peak", "cluster"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--genomes", type=int, default=50)
    parser.add_argument(
        "--part",
        default="0/1",
        help="I/N: time every Nth network from the Ith, pinned to usable core I (N processes "
        "side by side, one core each); then --sections summary",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "runtime_bench.json"))
    args = parser.parse_args()
    out = Path(args.out)
    index, parts = (int(n) for n in args.part.split("/"))
    if parts > 1:
        pin_process([usable_cores()[index]])
    sections = {
        "table": lambda: table_section(args.genomes, args.device, (index, parts), out),
        "summary": lambda: summary_section(out, args.device),
        "peak": lambda: peak_section(args.device),
        "cluster": cluster_section,
    }
    for name in args.sections:
        print(f"\n== {name} ({args.device}) ==", flush=True)
        key = name if args.device == "cpu" else f"{name}-{args.device}"
        key += f"-part{index}" if name == "table" and parts > 1 else ""
        result = sections[name]() | {"versions": _versions()}
        results = _read(out) | {key: result}  # parts side by side write the same file
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nwrote {out}")


def _read(out: Path) -> dict[str, Any]:
    return json.loads(out.read_text()) if out.is_file() else {}


def _versions() -> dict[str, str]:
    from tvnsearch.measure.device import cpu_model

    versions = {name: r.version() for name, r in RUNTIMES.items()}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_model()
    return versions | {"device": device, "when": time.strftime("%Y-%m-%d %H:%M")}


if __name__ == "__main__":
    main()
