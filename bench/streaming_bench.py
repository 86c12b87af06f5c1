"""Streaming benchmark: pipelined TVNs (throughput, latency, accuracy) and delta inference.

(1) throughput: one genome of eight units (four blocks of two repeats, temporal convolutions,
    residuals, SE and context gating), about 10-30 ms per frame on one core, pipelined at depths
    k = 1, 2, 4: its stages run concurrently on ``--threads`` workers of one thread each against
    the same network's stages one after another on one thread (their outputs must be identical),
    with the bounds beside the speedup: the pipelining ideal (sum of stage times / slowest stage)
    and what the stage-to-worker assignment allows. Goal: >= 1.7x at the best k on two cores.
(2) latency: the same genome per frame: pipelined and concurrent (ms per frame, latency in frames,
    and ms until the output reflects a frame: (latency_frames + 1) x frame_ms) against ordinary
    sequential execution (k = 0): the causal network frame by frame on 1 and ``--threads``
    threads, and the clip network, which a sliding window reruns whole for every new frame.
(3) accuracy: genomes sampled from the tiny streaming space (within the local recipe's
    constraints), each trained as a clip network (k = 0) and pipelined (k = 1, 2) at the same
    budget and seed as ``runners/local.toml``, on the synthetic benchmark (``make search``'s).
(4) delta: recurrent residual inference (``measure_delta``) on a static-camera video, exact
    (threshold 0; rendered, then through a codec) and with a threshold: input sparsity of the
    first layers, share of outputs recomputed, end-to-end speedup over the dense network with its
    batch norms folded, reported as measured, below 1x included.

Timings mean something only on an idle machine: the load average is recorded with every section.

    .venv/bin/python bench/streaming_bench.py [--quick] [--sections throughput latency accuracy
        delta] [--threads 2] [--depths 1 2 4] [--variants eager compiled] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from tvnsearch import build_model, load_space
from tvnsearch.data.frame_cache import FrameCache
from tvnsearch.data.synth import SynthConfig, write_synth
from tvnsearch.delta.measure import DeltaMeasurement, measure_delta, static_camera_frames
from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Block, Genome
from tvnsearch.measure.device import cpu_model
from tvnsearch.measure.measurement import measure
from tvnsearch.measure.profile import Settings
from tvnsearch.measure.stream_timing import StreamTiming, measure_stream
from tvnsearch.measure.timing import fixed_threads
from tvnsearch.models.pipeline import OneAfterAnother, ThreadedPipeline
from tvnsearch.models.streaming import build_streaming_model
from tvnsearch.train.training import TrainConfig, prepare_data, train_genome

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "streaming_bench.json"
SECTIONS = ("throughput", "latency", "accuracy", "delta")
NUM_CLASSES = 400
VARIANTS = {"eager": False, "compiled": True}  # compiled: the TorchScript model (as exported)
GOAL_SPEEDUP = 1.7
# Accuracy: what `make search` trains on and with (runners/local.toml), and its constraints as
# a cost filter (max_params; FLOPs standing in for max_cpu_ms = 4 ms per clip on one thread).
SYNTH = ROOT / "data" / "synth"
FRAMES = ROOT / "data" / "frames"
CACHE_SIZE = 64
MAX_PARAMS = 200_000
FLOPS = (1e6, 1e8)  # below: a network too small to learn anything (a few pooling ops)
# Delta: (video, threshold, refresh_limit) on 128 px frames.
DELTA_RUNS = (("rendered", 0.0, 0.05), ("mpeg4", 0.0, 0.05), ("mpeg4", 0.2, 0.5))
DELTA_SIZE = 128


def block(num_filters: int, spatial_stride: int = 1, **genes: Any) -> Block:
    plain = dict(
        spatial_type="std", spatial_kernel=3, spatial_stride=spatial_stride, spatial_act="relu",
        temporal_type="1d", temporal_kernel=3, temporal_stride=1, temporal_act="relu",
        num_filters=num_filters, expansion=0, inverted_bottleneck=False, squeeze_ratio=0.0,
        context_gate=False, non_local_width=0, skip=True, act="relu", num_repeats=2,
    )  # fmt: skip
    return Block(**{**plain, **genes})


GENOME = Genome(
    resolution=96,
    num_frames=8,
    frame_stride=2,
    pipeline_depth=0,
    blocks=(
        block(32, 2),
        block(48, squeeze_ratio=0.25),
        block(96, 2),
        block(96, context_gate=True),
    ),
)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# (1) throughput ---------------------------------------------------------------------------------


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    settings = run_settings(args)
    out: dict[str, Any] = {}
    for variant in args.variants:
        before, rows = load(), {}
        for k in args.depths:
            genome = dataclasses.replace(GENOME, pipeline_depth=k)
            one = measure_stream(
                genome, NUM_CLASSES, dataclasses.replace(settings, threads=1),
                mode="one_after_another", compiled=VARIANTS[variant],
            )  # fmt: skip
            both = measure_stream(
                genome, NUM_CLASSES, settings, mode="concurrent", compiled=VARIANTS[variant]
            )
            identical = outputs_identical(genome, both, settings.seed)
            rows[str(k)] = {
                "one_after_another": one.to_dict(),
                "concurrent": both.to_dict(),
                "speedup": one.frame_ms / both.frame_ms,
                "outputs_identical": identical,
            }
        best = max(r["speedup"] for r in rows.values())
        out[variant] = {
            "load_average": {"before": before, "after": load()},
            "depths": rows,
            "best_speedup": best,
            "goal": GOAL_SPEEDUP,
            "goal_met": best >= GOAL_SPEEDUP,
        }
        print_throughput(variant, out[variant], args.threads)
    return out


def outputs_identical(genome: Genome, timing: StreamTiming, seed: int) -> bool:
    """The concurrent runner's logits and state, frame by frame, equal the sequential ones."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_streaming_model(genome, NUM_CLASSES).eval()
    frames = list(torch.randn(24, 1, 3, genome.resolution, genome.resolution).unbind(0))
    with fixed_threads(1), torch.inference_mode():
        want, want_state = OneAfterAnother(model).run(frames, model.initial_state(1))
        with ThreadedPipeline(model, timing.assignment) as pipeline:
            got, got_state = pipeline.run(frames, model.initial_state(1))
    pairs = [*zip(want, got, strict=True), *zip(want_state, got_state, strict=True)]
    identical = all(torch.equal(a, b) for a, b in pairs)
    assert identical, f"k={genome.pipeline_depth}: concurrent outputs differ from sequential"
    return identical


def print_throughput(variant: str, report: dict[str, Any], threads: int) -> None:
    print(f"\n(1) throughput, {variant} model, load average {report['load_average']}")
    print(
        "     k stages  one-after-another   concurrent  speedup  bound  bound on"
        f" {threads} workers  frames/s (1 -> {threads})  identical  stage ms"
    )
    for k, row in report["depths"].items():
        one, both = row["one_after_another"], row["concurrent"]
        print(
            f"  {k:>4} {both['num_stages']:6d} {one['frame_ms']:15.2f} ms"
            f" {both['frame_ms']:9.2f} ms"
            f" {row['speedup']:7.2f}x {both['bound']:6.2f} {both['worker_bound']:17.2f}"
            f" {one['frames_per_second']:10.1f} -> {both['frames_per_second']:5.1f}"
            f" {row['outputs_identical']!s:>10}  {[round(ms, 2) for ms in both['stage_ms']]}"
            f" on {both['assignment']}"
        )
    verdict = "met" if report["goal_met"] else "NOT met"
    print(f"  best speedup {report['best_speedup']:.2f}x: goal >= {GOAL_SPEEDUP}x {verdict}")


# (2) latency ------------------------------------------------------------------------------------


def latency(args: argparse.Namespace, done: dict[str, Any]) -> dict[str, Any]:
    settings = run_settings(args)
    out: dict[str, Any] = {}
    for variant in args.variants:
        compiled, before, rows = VARIANTS[variant], load(), []
        for threads in sorted({1, args.threads}):
            s = measure_stream(
                GENOME, NUM_CLASSES, dataclasses.replace(settings, threads=threads),
                mode="one_after_another", compiled=compiled,
            )  # fmt: skip
            rows.append(latency_row(f"sequential causal, {threads} thread(s)", 0, s.frame_ms, 0))
        for threads in sorted({1, args.threads}):
            clip = measure(GENOME, NUM_CLASSES, dataclasses.replace(settings, threads=threads))
            rows.append(
                latency_row(f"clip network per clip, {threads} thread(s)", 0, clip.median_ms, 0)
            )
        measured = done.get(variant, {}).get("depths", {})
        for k in args.depths:
            if str(k) in measured:
                s = measured[str(k)]["concurrent"]
                frame_ms, lag = s["frame_ms"], s["latency_frames"]
            else:
                genome = dataclasses.replace(GENOME, pipeline_depth=k)
                t = measure_stream(genome, NUM_CLASSES, settings, compiled=compiled)
                frame_ms, lag = t.frame_ms, t.latency_frames
            name = f"pipelined concurrent, {args.threads} workers"
            rows.append(latency_row(name, k, frame_ms, lag))
        out[variant] = {"load_average": {"before": before, "after": load()}, "rows": rows}
        print_latency(variant, out[variant])
    return out


def latency_row(name: str, k: int, frame_ms: float, latency_frames: int) -> dict[str, Any]:
    return {
        "execution": name,
        "pipeline_depth": k,
        "frame_ms": frame_ms,  # time per new frame at steady state
        "frames_per_second": 1000.0 / frame_ms,
        "latency_frames": latency_frames,
        "latency_ms": (latency_frames + 1) * frame_ms,  # until the output reflects a frame
    }


def print_latency(variant: str, report: dict[str, Any]) -> None:
    print(f"\n(2) latency, {variant} model, load average {report['load_average']}")
    print(f"  {'execution':40s}  k  ms/frame  frames/s  latency frames  latency ms")
    for r in report["rows"]:
        print(
            f"  {r['execution']:40s} {r['pipeline_depth']:2d} {r['frame_ms']:9.2f}"
            f" {r['frames_per_second']:9.1f} {r['latency_frames']:15d} {r['latency_ms']:11.2f}"
        )


# (3) accuracy -----------------------------------------------------------------------------------


def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    config = TrainConfig(iterations=args.iterations, batch_size=8, seed=0, num_workers=0)
    genomes = sample_genomes(args.genomes)
    depths = (0, 1, 2)
    print(
        f"\n(3) accuracy: {len(genomes)} genomes x k = {depths}, {config.iterations} iterations"
        f" of batch {config.batch_size}, seed {config.seed}, one thread"
    )
    before, started = load(), time.perf_counter()
    with fixed_threads(1), synth_data(args.quick) as (path, frames):
        data = prepare_data(path, FrameCache(frames, short_side=CACHE_SIZE))
        print(f"  data: {path} ({len(data.dataset.train)} train / {len(data.dataset.val)} val)")
        print(
            f"  {'genome':14s} {'MFLOPs':>7s}  "
            + "  ".join(f"k={k}: fitness top-1" for k in depths)
        )
        rows = []
        for i, genome in enumerate(genomes):
            results = {}
            for k in depths:
                r = train_genome(dataclasses.replace(genome, pipeline_depth=k), data, config)
                results[str(k)] = {
                    "status": r.status,
                    "reason": r.reason,
                    "fitness": r.fitness,
                    "top1": r.top1,
                    "final_loss": r.final_loss,
                    "train_seconds": round(r.train_seconds, 2),
                }
            flops = count_cost(genome, data.dataset.num_classes).flops
            rows.append({"genome": genome.to_dict(), "flops": flops, "by_depth": results})
            cells = "  ".join(score_cell(results[str(k)]) for k in depths)
            print(f"  #{i} {genome.id[:10]:10s} {flops / 1e6:7.1f}  {cells}", flush=True)
    means = {str(k): mean_scores(rows, str(k)) for k in depths}
    cells = "  ".join(f"{score_cell(means[str(k)])}" for k in depths)
    print(f"  {'mean':14s} {'':7s}  {cells}")
    seconds = time.perf_counter() - started
    print(f"  {seconds:.0f} s for {len(genomes) * len(depths)} trainings")
    return {
        "load_average": {"before": before, "after": load()},
        "train_config": dataclasses.asdict(config),
        "torch_threads": 1,
        "constraints": {"max_params": MAX_PARAMS, "flops": FLOPS},
        "genomes": rows,
        "mean": means,
        "seconds": seconds,
    }


def sample_genomes(n: int) -> list[Genome]:
    """The first ``n`` samples of the streaming space (seed 0) that the recipe would train."""
    space = load_space(ROOT / "search_spaces" / "tiny_streaming.toml")
    rng, genomes, seen = random.Random(0), [], set()
    while len(genomes) < n:
        genome = dataclasses.replace(space.sample(rng), pipeline_depth=0)
        cost = count_cost(genome, 9)
        fits = cost.params <= MAX_PARAMS and FLOPS[0] <= cost.flops <= FLOPS[1]
        if fits and genome.id not in seen:
            seen.add(genome.id)
            genomes.append(genome)
    return genomes


@contextlib.contextmanager
def synth_data(quick: bool) -> Iterator[tuple[Path, Path]]:
    """The disc benchmark (``tvnsearch data synth --task disc``), written to ``data/synth`` if
    missing, and its frame cache folder (quick: a smaller one, in a temporary folder)."""
    if not quick:
        if not (SYNTH / "synth.json").exists():
            write_synth(SYNTH, SynthConfig())
        yield SYNTH, FRAMES
        return
    with tempfile.TemporaryDirectory() as folder:
        write_synth(Path(folder) / "synth", SynthConfig(num_videos=72))
        yield Path(folder) / "synth", Path(folder) / "frames"


def score_cell(r: dict[str, Any]) -> str:
    if r.get("fitness") is None:
        return f"{'failed':>17s}"
    return f"{r['fitness']:10.3f} {r['top1']:6.3f}"


def mean_scores(rows: list[dict[str, Any]], k: str) -> dict[str, Any]:
    done = [r["by_depth"][k] for r in rows if r["by_depth"][k]["fitness"] is not None]
    if not done:
        return {"fitness": None, "top1": None, "num_complete": 0}
    return {
        "fitness": statistics.mean(r["fitness"] for r in done),
        "top1": statistics.mean(r["top1"] for r in done),
        "num_complete": len(done),
    }


# (4) delta --------------------------------------------------------------------------------------


def delta_networks(size: int) -> dict[str, Genome]:
    """delta_bench's wider hand-made network (32-64-128 filters) and a tiny-space genome."""
    plain = dict(temporal_kernel=1, skip=False, num_repeats=1)
    wide = Genome(
        size, 1, 1, 0,
        (block(32, **plain), block(64, 2, **plain), block(128, 2, **{**plain, "skip": True})),
    )  # fmt: skip
    space = load_space(ROOT / "search_spaces" / "tiny.toml")
    tiny = dataclasses.replace(space.sample(random.Random(0)), num_frames=1, resolution=size)
    return {"wide 3 blocks": wide, "tiny #0": tiny}


def delta(args: argparse.Namespace) -> dict[str, Any]:
    size, num_frames = (64, 8) if args.quick else (DELTA_SIZE, args.delta_frames)
    rounds = 1 if args.quick else 3
    print(
        f"\n(4) delta: {num_frames} frames of a static-camera video at {size} px, one thread,"
        " speedup over the folded dense network"
    )
    before = load()
    videos = {
        "rendered": static_camera_frames(size, num_frames),
        "mpeg4": static_camera_frames(size, num_frames, through_codec=True),
    }
    rows = []
    with fixed_threads(1):
        for name, genome in delta_networks(size).items():
            torch.manual_seed(0)
            model = build_model(genome, 10).eval()
            for video, threshold, limit in DELTA_RUNS:
                m = measure_delta(
                    model, videos[video], threshold=threshold, refresh_limit=limit, rounds=rounds
                )
                rows.append(delta_row(name, video, m))
    return {"load_average": {"before": before, "after": load()}, "size": size, "runs": rows}


def delta_row(network: str, video: str, m: DeltaMeasurement) -> dict[str, Any]:
    layers = m.layers.layers
    macs = sum(s.dense_macs for s in layers)
    recomputed = sum(s.recomputed_share * s.dense_macs for s in layers) / max(macs, 1)
    print(
        f"  {network:14s} {video:8s} thr {m.threshold:<4} | dense {m.dense_ms:6.2f} folded"
        f" {m.folded_ms:6.2f} delta {m.delta_ms:6.2f} ms/frame | speedup {m.speedup:4.2f}x |"
        f" recomputed {recomputed:.3f} work {m.layers.work_share:.3f} | error {m.max_error:.1e}",
        flush=True,
    )
    for s in layers[:3]:
        print(
            f"      {s.name:28s} {s.kind:7s} {'delta' if s.active else 'dense'} input sparsity"
            f" {s.input_sparsity:.3f} recomputed {s.recomputed_share:.3f}"
        )
    return {
        "network": network,
        "video": video,
        "threshold": m.threshold,
        "refresh_limit": m.refresh_limit,
        "ms_per_frame": {"dense": m.dense_ms, "folded": m.folded_ms, "delta": m.delta_ms},
        "speedup": m.speedup,
        "recomputed_share": recomputed,  # output positions computed, weighted by dense MACs
        "work_share": m.layers.work_share,
        "max_error": m.max_error,
        "refreshes": m.layers.num_refreshes,
        "first_layers": [
            {
                "name": s.name,
                "kind": s.kind,
                "active": s.active,
                "input_sparsity": s.input_sparsity,
                "recomputed_share": s.recomputed_share,
            }
            for s in layers[:3]
        ],
    }


# ------------------------------------------------------------------------------------------------


def run_settings(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(threads=args.threads, warmup=3, runs=5, min_seconds=0.2)
    return Settings(threads=args.threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--variants", nargs="+", default=["eager"], choices=VARIANTS)
    parser.add_argument("--genomes", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--delta-frames", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.genomes, args.iterations = min(args.genomes, 2), min(args.iterations, 10)
    report: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "quick": args.quick,
        "load_average_start": load(),
        "genome": GENOME.to_dict(),
    }
    runs: dict[str, Callable[[], Any]] = {
        "throughput": lambda: throughput(args),
        "latency": lambda: latency(args, report.get("throughput", {})),
        "accuracy": lambda: accuracy(args),
        "delta": lambda: delta(args),
    }
    for section in SECTIONS:
        if section in args.sections:
            started = time.perf_counter()
            report[section] = runs[section]()
            report[section]["section_seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_end"] = load()
    print(
        f"\nload average at start {report['load_average_start']}, end {report['load_average_end']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
