"""Delta inference benchmark: where the sparse layers pay, and what a whole network gains.

(1) Crossover: one delta layer against its dense convolution, fed a square blob that changes
    every frame on a fixed background, for blob sizes giving 0-60 % of output positions to
    recompute; the share where the two cost the same is what ``MAX_SHARE`` is chosen from.
(2) Networks: ``measure_delta`` on ``num_frames=1`` networks over a static-camera video (a disc
    moving over a static textured background, ``tvnsearch.data.synth``), rendered (the background is
    bit-identical between frames) and through an MPEG-4 round trip (codec noise everywhere),
    at several thresholds; per-layer sparsity, work and time, and the end-to-end speedup over the
    batch-norm-folded dense network.

One thread, as the profiler times. Timings mean something only on an idle machine; the load
average is recorded with them.

    .venv/bin/python bench/delta_bench.py [--sections 1 2] [--frames 64] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

from tvnsearch import build_model, load_space, published_genome
from tvnsearch.delta.conv import DeltaConv2d
from tvnsearch.delta.layers import MAX_SHARE, DeltaPolicy, LayerStats
from tvnsearch.delta.measure import DeltaMeasurement, measure_delta, static_camera_frames
from tvnsearch.genome.genes import Block, Genome
from tvnsearch.measure.timing import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "delta_bench.json"
SHARES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6)
# (video, threshold, refresh_limit, all_layers): exact, on every layer, then through a codec,
# exact and with thresholds of about 3 and 11 grey levels (one level is 0.017 once normalised).
RUNS = (
    ("rendered", 0.0, 0.05, False),
    ("rendered", 0.0, 0.05, True),
    ("mpeg4", 0.0, 0.05, False),
    ("mpeg4", 0.05, 0.05, False),
    ("mpeg4", 0.05, 0.5, False),
    ("mpeg4", 0.2, 0.5, False),
)
LAYERS = {  # name: (conv, input channels, input side before padding)
    "pointwise 32->32, 64 px": (nn.Conv2d(32, 32, 1), 32, 64),
    "pointwise 64->64, 64 px": (nn.Conv2d(64, 64, 1), 64, 64),
    "pointwise 96->32, 64 px": (nn.Conv2d(96, 32, 1), 96, 64),
    "conv3x3 16, 64 px": (nn.Conv2d(16, 16, 3, padding=1), 16, 64),
    "conv3x3 32, 64 px": (nn.Conv2d(32, 32, 3, padding=1), 32, 64),
    "conv3x3 32, 128 px": (nn.Conv2d(32, 32, 3, padding=1), 32, 128),
    "conv5x5/2 32, 64 px": (nn.Conv2d(32, 32, 5, 2, padding=2), 32, 64),
    "dw3x3 64, 64 px": (nn.Conv2d(64, 64, 3, padding=1, groups=64), 64, 64),
    "temporal 3x1 32, 3x4096": (nn.Conv2d(32, 32, (3, 1)), 32, 0),
}


def block(**genes: Any) -> Block:
    plain = dict(
        spatial_type="std", spatial_kernel=3, spatial_stride=1, spatial_act="relu",
        temporal_type="1d", temporal_kernel=1, temporal_stride=1, temporal_act="relu",
        num_filters=16, expansion=0, inverted_bottleneck=False, squeeze_ratio=0.0,
        context_gate=False, non_local_width=0, skip=False, act="relu", num_repeats=1,
    )  # fmt: skip
    return Block(**{**plain, **genes})


def networks(size: int) -> dict[str, Genome]:
    """Plain 3x3 networks (16-64 and 32-128 filters), tiny-space genomes and a published one,
    one frame each."""
    plain = Genome(
        size, 1, 1, 0,
        (block(), block(num_filters=32, spatial_stride=2),
         block(num_filters=64, spatial_stride=2, skip=True)),
    )  # fmt: skip
    wide = Genome(
        size, 1, 1, 0,
        (block(num_filters=32), block(num_filters=64, spatial_stride=2),
         block(num_filters=128, spatial_stride=2, skip=True)),
    )  # fmt: skip
    space = load_space(ROOT / "search_spaces" / "tiny.toml")
    rng = random.Random(0)
    tiny = [dataclasses.replace(space.sample(rng), num_frames=1, resolution=size) for _ in range(3)]
    mobile = dataclasses.replace(published_genome("tvn_mobile_1"), num_frames=1, resolution=size)
    named = {"plain 3 blocks": plain, "wide 3 blocks": wide, "tvn_mobile_1": mobile}
    return named | {f"tiny #{i}": g for i, g in enumerate(tiny)}


def layer_frames(channels: int, side: int, share: float, num: int) -> list[torch.Tensor]:
    """A fixed background with a region, about ``share`` of it, that changes every frame: a
    square blob, or for a temporal layer (``side`` 0: 3 frames of 4096 positions) a band."""
    gen = torch.Generator().manual_seed(0)
    shape = (1, channels, 3, 4096) if side == 0 else (1, channels, side, side)
    background = torch.randn(shape, generator=gen)
    region = (
        (..., slice(None), slice(round(share * 4096)))
        if side == 0
        else (..., slice(round(math.sqrt(share) * side)), slice(round(math.sqrt(share) * side)))
    )
    frames = [background]
    for _ in range(num):
        x = background.clone()
        x[region] += torch.randn(x[region].shape, generator=gen)
        frames.append(x)
    return frames


def crossover(rounds: int) -> dict[str, Any]:
    out = {}
    for name, (conv, channels, side) in LAYERS.items():
        rows = []
        for share in SHARES:
            frames = layer_frames(channels, side, share, 30)
            with mock.patch.dict(MAX_SHARE, dict.fromkeys(MAX_SHARE, 2.0)):  # never fall back
                dense_us, delta_us, recomputed = time_layer(conv.eval(), frames, rounds)
            rows.append(
                {"share": recomputed, "dense_us": dense_us, "delta_us": delta_us,
                 "speedup": dense_us / delta_us}
            )  # fmt: skip
        out[name] = {"rows": rows, "breakeven_share": breakeven(rows)}
        cells = " ".join(f"{r['share']:.2f}:{r['speedup']:.2f}x" for r in rows)
        print(f"  {name:26s} dense {rows[0]['dense_us']:6.0f} us | {cells} | even at "
              f"{out[name]['breakeven_share']:.2f}", flush=True)  # fmt: skip
    return out


def breakeven(rows: list[dict[str, float]]) -> float:
    """The recomputed share where delta and dense cost the same, by linear interpolation."""
    for a, b in itertools.pairwise(rows):
        if a["speedup"] >= 1 > b["speedup"]:
            t = (a["speedup"] - 1) / (a["speedup"] - b["speedup"])
            return a["share"] + t * (b["share"] - a["share"])
    return 1.0 if rows[-1]["speedup"] >= 1 else 0.0


def time_layer(
    conv: nn.Conv2d, frames: list[torch.Tensor], rounds: int
) -> tuple[float, float, float]:
    """Dense and delta microseconds per frame, taking turns; the share recomputed."""
    layer = DeltaConv2d(conv, DeltaPolicy(all_layers=True))
    best_dense = best_delta = float("inf")
    with torch.inference_mode():
        for _ in range(rounds + 1):
            layer.reset()
            layer(frames[0])
            layer.clear_stats()
            dense = delta = 0
            for x in frames[1:]:
                start = time.perf_counter_ns()
                conv(x)
                middle = time.perf_counter_ns()
                layer(x)
                dense, delta = dense + middle - start, delta + time.perf_counter_ns() - middle
            best_dense, best_delta = min(best_dense, dense), min(best_delta, delta)
    n = len(frames) - 1
    return best_dense / n / 1e3, best_delta / n / 1e3, layer.stats("").recomputed_share


def network_runs(num_frames: int, rounds: int) -> list[dict[str, Any]]:
    out = []
    for size in (64, 128):
        videos = {
            "rendered": static_camera_frames(size, num_frames),
            "mpeg4": static_camera_frames(size, num_frames, through_codec=True),
        }
        for net_name, genome in networks(size).items():
            torch.manual_seed(0)
            model = build_model(genome, 10).eval()
            for video, threshold, limit, all_layers in RUNS:
                m = measure_delta(
                    model, videos[video], threshold=threshold, refresh_limit=limit,
                    all_layers=all_layers, rounds=rounds,
                )  # fmt: skip
                out.append(report(f"{net_name} {size}px", video, all_layers, m))
    return out


def report(network: str, video: str, all_layers: bool, m: DeltaMeasurement) -> dict[str, Any]:
    layers = "all layers" if all_layers else "selected"
    print(
        f"  {network:22s} {video:8s} thr {m.threshold:<4} limit {m.refresh_limit:<4} "
        f"{layers:10s} | dense {m.dense_ms:6.2f} "
        f"folded {m.folded_ms:6.2f} delta {m.delta_ms:6.2f} ms/frame | speedup "
        f"{m.speedup:4.2f}x | work {m.layers.work_share:4.2f} | error {m.max_error:.1e} | "
        f"refreshes {m.layers.num_refreshes}",
        flush=True,
    )
    for s in m.layers.layers[:3]:
        print(
            f"      {s.name:28s} {s.kind:7s} {'delta' if s.active else 'dense'} sparsity "
            f"{s.input_sparsity:.3f} recomputed {s.recomputed_share:.3f} "
            f"{s.seconds * 1e3 / m.num_frames:.3f} ms vs {m.folded_layer_ms[s.name]:.3f}"
        )
    return {
        "network": network,
        "video": video,
        "all_layers": all_layers,
        "threshold": m.threshold,
        "refresh_limit": m.refresh_limit,
        "ms_per_frame": {"dense": m.dense_ms, "folded": m.folded_ms, "delta": m.delta_ms},
        "speedup": round(m.speedup, 3),
        "work_share": round(m.layers.work_share, 3),
        "max_error": m.max_error,
        "refreshes": m.layers.num_refreshes,
        "layers": [layer_row(s, m) for s in m.layers.layers],
    }


def layer_row(s: LayerStats, m: DeltaMeasurement) -> list[Any]:
    """name, kind, active, input sparsity, recomputed share, delta ms and dense ms per frame."""
    delta_ms = s.seconds * 1e3 / m.num_frames
    return [s.name, s.kind, s.active, round(s.input_sparsity, 3), round(s.recomputed_share, 3),
            round(delta_ms, 3), round(m.folded_layer_ms[s.name], 3)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    results: dict[str, Any] = {"load_before": os.getloadavg(), "torch": torch.__version__}
    if 1 in args.sections:
        print("(1) crossover: recomputed share: speedup over the dense layer")
        results["crossover"] = crossover(args.rounds)
    if 2 in args.sections:
        print(f"(2) networks, {args.frames} frames, speedup over the folded dense network")
        results["networks"] = network_runs(args.frames, args.rounds)
    results["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results) + "\n")  # one line: 300 layer rows
    print(f"load average before {results['load_before']}, after {results['load_after']}")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
