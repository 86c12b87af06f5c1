"""Data at scale: opening a large dataset, and honest splits.

Sections (each prints a table and adds its figures to the JSON):
- ``open``: a dataset of many small synthetic videos, decoded into the frame cache on 1 and on 2
  threads (the driver decodes on every core before Ray starts); then the time a fresh process
  takes to open it (``prepare_data``: list, split, index every video), with
  the dataset's listing (a stat per video) and without it (resolve, hash and open every cached
  entry, as every worker did before), side by side in one run;
- ``step``: one thread, batch 16: a training step's forward + backward of 5 tiny-space genomes,
  in GFLOP/s (the counted FLOPs of a clip x 16 x 3 for forward and backward) against a 1024^2
  matmul's GFLOP/s on the same core, measured side by side (issue 15's goal: >= 40 %);
- ``splits``: a UCF-101-named dataset (``v_<Class>_g<NN>_c<NN>``, several clips per group): groups
  on both sides of the seeded split, for several seeds (must be 0).

    .venv/bin/python bench/data_scale_bench.py [--sections open step splits] [--videos 3000]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "data_scale_bench.json"
WORK = Path(__file__).parent / "out" / "data_scale"
OPEN_IN_A_FRESH_PROCESS = """
import sys, time
from pathlib import Path
started = time.perf_counter()
from tvnsearch.data.frame_cache import FrameCache
from tvnsearch.train.training import prepare_data
imported = time.perf_counter()
cache = FrameCache(Path(sys.argv[2]), 32)
data = prepare_data(sys.argv[1], cache, num_workers=int(sys.argv[3]))
done = time.perf_counter()
print(len(data.dataset.videos), imported - started, done - imported)
"""


def open_dataset(num_videos: int) -> dict[str, Any]:
    from tvnsearch.data.synth import SynthConfig, write_synth

    folder = WORK / "open"
    data, cache = folder / f"synth-{num_videos}", folder / "frames"
    if not (data / "synth.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        write_synth(data, SynthConfig(task="disc", num_videos=num_videos, size=32, num_frames=8))
        print(f"wrote {num_videos} videos in {time.perf_counter() - started:.0f} s")
    rows = []
    cases = [("build, 1 thread", 1), ("build, 2 threads", 2)]
    cases += [("listing", 1), ("no listing", 1), ("listing", 1)]
    for case, threads in cases:
        if case.startswith("build"):
            shutil.rmtree(cache, ignore_errors=True)
        if case == "no listing":
            shutil.rmtree(cache / "indexes", ignore_errors=True)
        done = subprocess.run(
            [sys.executable, "-c", OPEN_IN_A_FRESH_PROCESS, str(data), str(cache), str(threads)],
            capture_output=True,
            text=True,
            check=True,
        )
        videos, _, seconds = done.stdout.split()
        rows.append({"case": case, "videos": int(videos), "seconds": float(seconds)})
        print(f"{case:<16} {int(videos):>6} videos  {float(seconds):>7.2f} s to open")
    listed = min(r["seconds"] for r in rows if r["case"] == "listing")
    unlisted = next(r["seconds"] for r in rows if r["case"] == "no listing")
    per_video = {
        "listing_us": 1e6 * listed / num_videos,
        "no_listing_us": 1e6 * unlisted / num_videos,
    }
    print(
        f"per video: {per_video['listing_us']:.0f} us with the listing, "
        f"{per_video['no_listing_us']:.0f} us without ({unlisted / listed:.1f}x); "
        f"at 250,000 videos: {250_000 * listed / num_videos:.0f} s vs "
        f"{250_000 * unlisted / num_videos:.0f} s"
    )
    return {"num_videos": num_videos, "runs": rows, "per_video": per_video}


def step(num_genomes: int = 5, batch: int = 16) -> dict[str, Any]:
    import random
    import statistics

    import torch
    from torch import nn

    from tvnsearch.data.clips import ClipSpec
    from tvnsearch.genome.cost import count_cost
    from tvnsearch.genome.space import load_space
    from tvnsearch.models.builder import build_model

    torch.set_num_threads(1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    times = []
    for _ in range(12):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    peak = 2 * 1024**3 / statistics.median(times[2:]) / 1e9
    print(f"matmul 1024^2, one thread: {peak:.1f} GFLOP/s")
    space = load_space(ROOT / "search_spaces" / "tiny.toml")
    rows = []
    for seed in range(num_genomes):
        genome = space.sample(random.Random(seed))
        clip = ClipSpec.of(genome)
        model = build_model(genome, 24).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randn(batch, 3, clip.num_frames, clip.resolution, clip.resolution)
        y = torch.randint(0, 24, (batch,))
        steps = []
        for _ in range(7):
            started = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps.append(time.perf_counter() - started)
        seconds = statistics.median(steps[2:])
        flops = count_cost(genome, 24).flops * batch * 3
        rate = flops / seconds / 1e9
        rows.append(
            {
                "genome": genome.id,
                "mflops_per_clip": count_cost(genome, 24).flops / 1e6,
                "step_s": seconds,
                "gflops": rate,
                "of_peak": rate / peak,
            }
        )
        print(
            f"{genome.id}  {rows[-1]['mflops_per_clip']:>8.1f} MFLOP/clip  {seconds * 1e3:>8.1f} ms"
            f"/step  {rate:>6.2f} GFLOP/s  {100 * rate / peak:>5.1f} % of matmul"
        )
    return {"matmul_gflops": peak, "batch": batch, "genomes": rows}


def splits() -> dict[str, Any]:
    import numpy as np

    from tvnsearch.data.datasets import load_dataset
    from tvnsearch.data.video import encode_video

    folder = WORK / "splits"
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    classes, groups, clips = 6, 10, 4
    for c in range(classes):
        for g in range(1, groups + 1):
            for k in range(1, clips + 1):
                video = folder / f"Class{c}" / f"v_Class{c}_g{g:02d}_c{k:02d}.mp4"
                video.parent.mkdir(parents=True, exist_ok=True)
                frames = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
                encode_video(video, frames)
    rows = []
    for seed in range(5):
        ds = load_dataset(folder, val_fraction=0.2, seed=seed)
        both = {v.group for v in ds.train} & {v.group for v in ds.val}
        rows.append({"seed": seed, "train": len(ds.train), "val": len(ds.val), "both": len(both)})
        print(
            f"seed {seed}: {len(ds.train)} train / {len(ds.val)} val, groups on both sides: 0"
            if not both
            else f"seed {seed}: {len(both)} groups on both sides"
        )
    return {"classes": classes, "groups": groups, "clips": clips, "seeds": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=["open", "step", "splits"],
        default=["open", "step", "splits"],
    )
    parser.add_argument("--videos", type=int, default=3000, help="for open (a multiple of 9)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = {"platform": platform.platform(), "python": platform.python_version()}
    sections = {"open": lambda: open_dataset(args.videos), "step": step, "splits": splits}
    for name in args.sections:
        print(f"\n## {name}")
        results[name] = sections[name]()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
