"""Data and training benchmark: the frame cache's speed, and the synthetic benchmark's verdict.

(a) Clips per second read through the frame cache against decoding the files for every clip,
    for the same clips (same videos, offsets, crops and flips; checked equal), in one run, on the
    synthetic videos and on camera-sized ones (320x240, 3 s at 25 fps, like UCF-101).
(b) The synthetic motion benchmark at a fixed training budget: the best of three temporal genomes
    (temporal convolutions, >= 4 frames) against the best of three one-frame genomes, per seed
    (each seed writes its own dataset and trains with that seed).

    .venv/bin/python bench/data_bench.py [--iterations 300] [--seeds 0 1 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tvnsearch.data.clips import ClipDataset, ClipSampler, ClipSpec, FrameReader
from tvnsearch.data.datasets import Video
from tvnsearch.data.frame_cache import FrameCache
from tvnsearch.data.frame_files import DecodedFrames
from tvnsearch.data.synth import SynthConfig, write_synth
from tvnsearch.data.video import encode_video
from tvnsearch.genome.genes import Block, Genome, plain_block
from tvnsearch.train.training import TrainConfig, prepare_data, train_genome

RESULTS = Path(__file__).parent / "results" / "data_bench.json"


def block(**genes: object) -> Block:
    return plain_block(**{"spatial_stride": 2, "num_filters": 16, **genes})


def clip_genome(resolution: int, num_frames: int, frame_stride: int, *blocks: Block) -> Genome:
    return Genome(resolution, num_frames, frame_stride, 0, tuple(blocks))


# All inside search_spaces/tiny.toml.
TEMPORAL = {
    "T1 32px 4f/2 1d3": clip_genome(
        32, 4, 2, block(temporal_kernel=3), block(num_filters=32, temporal_kernel=3)
    ),
    "T2 32px 8f/1 1d3/2": clip_genome(
        32,
        8,
        1,
        block(temporal_kernel=3, temporal_stride=2),
        block(num_filters=32, temporal_kernel=3),
    ),
    "T3 48px 4f/3 1d3 SE": clip_genome(
        48,
        4,
        3,
        block(temporal_kernel=3, skip=True),
        block(spatial_type="depth", num_filters=32, temporal_kernel=3, squeeze_ratio=0.25),
    ),
}
ONE_FRAME = {
    "O1 32px 1f": clip_genome(32, 1, 1, block(), block(num_filters=32)),
    "O2 48px 1f 3 blocks": clip_genome(
        48, 1, 1, block(), block(num_filters=32), block(num_filters=64)
    ),
    "O3 64px 1f 5x5": clip_genome(64, 1, 1, block(spatial_kernel=5), block(num_filters=32)),
}


def camera_videos(folder: Path, count: int) -> None:
    """Camera-sized videos (320x240, 75 frames): a textured scene panning, so decoding works."""
    rng = np.random.default_rng(0)
    for i in range(count):
        scene = rng.integers(0, 256, (8, 12, 3)).repeat(40, 0).repeat(40, 1).astype(np.uint8)
        frames = np.stack([np.roll(scene, 3 * t, axis=1)[:240, :320] for t in range(75)])
        (folder / "pan").mkdir(parents=True, exist_ok=True)
        encode_video(folder / "pan" / f"v{i:03d}.mp4", frames, fps=25)


def clips_per_second(dataset: ClipDataset, items: list) -> tuple[float, list[torch.Tensor]]:
    started = time.perf_counter()
    clips = [dataset[item][0] for item in items]
    return len(items) / (time.perf_counter() - started), clips


def cache_against_decoding(root: Path, cache: FrameCache, spec: ClipSpec, num_clips: int) -> dict:
    videos = [Video(p, (0,)) for p in sorted(root.rglob("*.mp4"))]
    started = time.perf_counter()
    index = cache.index([v.path for v in videos], num_workers=os.cpu_count() or 1)
    build_seconds = time.perf_counter() - started
    decoded = DecodedFrames({p: e.num_frames for p, e in index.entries.items()}, cache.storage)
    draws = list(itertools.islice(ClipSampler(len(videos), seed=0), num_clips))

    def clips(frames: FrameReader) -> ClipDataset:
        return ClipDataset(frames, videos, spec, num_classes=1, multi_label=False, train=True)

    for reader in (index, decoded):  # first calls pay one-off set-up costs: not timed
        clips_per_second(clips(reader), draws[:10])
    cached_rate, cached = clips_per_second(clips(index), draws)
    decode_rate, fresh = clips_per_second(clips(decoded), draws)
    return {
        "videos": len(videos),
        "clips": num_clips,
        "clip": f"{spec.num_frames} frames, stride {spec.frame_stride}, {spec.resolution} px",
        "cache_short_side": cache.short_side,
        "cache_build_seconds": round(build_seconds, 3),
        "cache_clips_per_s": round(cached_rate, 1),
        "decode_clips_per_s": round(decode_rate, 1),
        "speedup": round(cached_rate / decode_rate, 1),
        "same_clips": all(torch.equal(a, b) for a, b in zip(cached, fresh, strict=True)),
    }


def temporal_against_one_frame(work: Path, seed: int, iterations: int) -> list[dict]:
    root = work / f"synth-{seed}"
    write_synth(root, SynthConfig(seed=seed))
    data = prepare_data(root, FrameCache(work / "cache"))
    config = TrainConfig(iterations=iterations, seed=seed)
    rows = []
    for kind, genomes in (("temporal", TEMPORAL), ("one-frame", ONE_FRAME)):
        for name, genome in genomes.items():
            result = train_genome(genome, data, config)
            rows.append(
                {
                    "seed": seed,
                    "kind": kind,
                    "genome": name,
                    "id": genome.id,
                    "status": result.status,
                    "fitness": result.fitness,
                    "top1": result.top1,
                    "top5": result.top5,
                    "train_seconds": round(result.train_seconds, 1),
                }
            )
            print(_row_text(rows[-1]), flush=True)
    return rows


def _row_text(row: dict) -> str:
    if row["status"] != "trained":
        return f"  seed {row['seed']}  {row['genome']:<22} {row['status']}"
    return (
        f"  seed {row['seed']}  {row['genome']:<22} fitness {row['fitness']:.3f}  "
        f"top-1 {row['top1']:.3f}  top-5 {row['top5']:.3f}  ({row['train_seconds']:.0f} s)"
    )


def best_per_seed(rows: list[dict]) -> list[dict]:
    table = []
    for seed in sorted({r["seed"] for r in rows}):
        best = {}
        for kind in ("temporal", "one-frame"):
            done = [r for r in rows if r["seed"] == seed and r["kind"] == kind and r["fitness"]]
            best[kind] = max(done, key=lambda r: r["fitness"], default=None)
        table.append({"seed": seed, **best})
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--clips", type=int, default=300, help="clips per reader in (a)")
    # One thread: on a shared 2-core machine two threads spin against other jobs (10x swings).
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report: dict = {"environment": _environment(args.threads)}
    with tempfile.TemporaryDirectory(prefix="data_bench.") as tmp:
        work = Path(tmp)
        torch.set_num_threads(1)  # as in a DataLoader worker
        report["cache_vs_decode"] = _part_a(work, args.clips)
        torch.set_num_threads(args.threads)
        print("\n(b) synthetic benchmark, best fitness per seed (top-1 + top-5)", flush=True)
        rows = [r for s in args.seeds for r in temporal_against_one_frame(work, s, args.iterations)]
    best = best_per_seed(rows)
    report["synthetic"] = {
        "iterations": args.iterations,
        "train_config": dataclasses.asdict(TrainConfig(iterations=args.iterations)),
        "runs": rows,
        "best": best,
        "mean_best_fitness": mean_best(best),
    }
    print(_best_text(report["synthetic"]["best"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def _part_a(work: Path, num_clips: int) -> list[dict]:
    print("(a) clips per second: frame cache against decoding every clip, same clips", flush=True)
    write_synth(work / "synth-a", SynthConfig(seed=0))
    camera_videos(work / "camera", 24)
    cases = [
        ("synthetic 64x64, 16 frames", work / "synth-a", ClipSpec(4, 2, 32)),
        ("camera 320x240, 75 frames", work / "camera", ClipSpec(8, 2, 64)),
    ]
    results = []
    for name, root, spec in cases:
        cache = FrameCache(work / "cache-a", short_side=128)
        result = {"videos_kind": name, **cache_against_decoding(root, cache, spec, num_clips)}
        results.append(result)
        print(
            f"  {name:<28} cache {result['cache_clips_per_s']:>8.1f}/s  decode "
            f"{result['decode_clips_per_s']:>7.1f}/s  x{result['speedup']:<6} same clips: "
            f"{result['same_clips']}  (cache built in {result['cache_build_seconds']:.1f} s)",
            flush=True,
        )
    return results


def _best_text(table: list[dict]) -> str:
    lines = ["", f"{'seed':>4}  {'best temporal':<34} {'best one-frame':<34}"]
    for row in table:
        cells = [
            f"{r['fitness']:.3f} (top-1 {r['top1']:.2f}) {r['genome'][:2]}" if r else "none"
            for r in (row["temporal"], row["one-frame"])
        ]
        lines.append(f"{row['seed']:>4}  {cells[0]:<34} {cells[1]:<34}")
    means = mean_best(table)
    lines.append(f"{'mean':>4}  {means['temporal']:<34.3f} {means['one-frame']:<34.3f}")
    return "\n".join(lines)


def mean_best(table: list[dict]) -> dict[str, float]:
    return {
        kind: float(np.mean([row[kind]["fitness"] if row[kind] else 0.0 for row in table]))
        for kind in ("temporal", "one-frame")
    }


def _environment(threads: int) -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads_training": threads,
        "torch_threads_clip_reading": 1,
        "machine": platform.machine(),
        "argv": sys.argv,
    }


if __name__ == "__main__":
    sys.exit(main())
