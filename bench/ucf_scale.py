"""The ``ucf`` section of ``data_scale_bench.py``: a generated dataset of UCF-101's size and shape.

13,320 videos of 320x240 at 25 fps, 7 s each, in UCF-101's layout and names
(``<Class>/v_<Class>_g<GG>_c<CC>.avi``: 101 classes, 25 groups, 4-7 clips a group), MPEG-4 Part 2
(UCF-101's own codec family, Xvid) at about UCF-101's bit rate (6.5 GB / 13,320 videos / 7 s:
about 560 kbit/s). Drawing and encoding 13,320 distinct videos would take hours here, so each
class has ``DISTINCT`` distinct videos, drawn from its own seed, and its other files are copies of
them: every file is a file of its own (its own path, bytes on disk and cache entry), decoded and
cached like any other. The pictures are camera-like: a textured scene in mostly muted colours,
panning and slowly zooming, with moving objects and sensor noise.

Measured: the source's size; the frame cache's size (default settings: JPEG at quality 90, 128 px,
and the tiny space's 64 px and H.264 on a sample) against the goal of at most 2x the source; the
cache's build on 2 Ray worker processes (the whole dataset) and on 1 and 2 side by side (a sample,
with a fresh cache each); the time a fresh process takes to open the cached dataset; and the
first candidate's start in a real ``tvnsearch search`` on it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CLASSES, GROUPS, VIDEOS = 101, 25, 13_320
WIDTH, HEIGHT, FPS, SECONDS = 320, 240, 25, 7
BIT_RATE = 560_000
DISTINCT = 2  # drawn videos per class; the class's other files are copies of them


def _scene(rng: np.random.Generator) -> np.ndarray:
    """A textured picture larger than the frame: smooth noise at several scales, muted colour."""
    h, w = HEIGHT + 120, WIDTH + 400
    luma = np.zeros((h, w))
    for scale, weight in ((64, 60.0), (16, 30.0), (4, 15.0)):
        coarse = rng.normal(0, 1, (h // scale + 2, w // scale + 2))
        ys, xs = np.arange(h) / scale, np.arange(w) / scale
        y0, x0 = ys.astype(int), xs.astype(int)
        fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
        c = coarse
        luma += weight * (
            c[y0][:, x0] * (1 - fy) * (1 - fx)
            + c[y0 + 1][:, x0] * fy * (1 - fx)
            + c[y0][:, x0 + 1] * (1 - fy) * fx
            + c[y0 + 1][:, x0 + 1] * fy * fx
        )
    tint = rng.uniform(0.8, 1.2, 3)
    return np.clip(110 + luma[..., None] * tint, 0, 255)


def _video(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scene = _scene(rng)
    frames = np.empty((FPS * SECONDS, HEIGHT, WIDTH, 3), np.uint8)
    pan = rng.uniform(0.5, 2.0) * rng.choice([-1, 1])
    objects = rng.uniform(0, 1, (3, 4))  # y, x, speed, colour
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    for t in range(len(frames)):
        x = int(200 + pan * t) % 380
        y = int(60 + 30 * np.sin(t / 40))
        frame = scene[y : y + HEIGHT, x : x + WIDTH].copy()
        for oy, ox, speed, colour in objects:
            cy = HEIGHT * (0.2 + 0.6 * oy) + 40 * np.sin(t * speed / 8)
            cx = (WIDTH * ox + 3 * speed * t) % WIDTH
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 18**2
            frame[disc] = 60 + 150 * np.array([colour, 1 - colour, 0.5])
        frame += rng.normal(0, 3, (HEIGHT, WIDTH, 1))  # sensor noise, mostly in brightness
        frames[t] = np.clip(frame, 0, 255)
    return frames


def write_ucf(folder: Path, num_videos: int = VIDEOS) -> None:
    """``num_videos`` files in UCF-101's layout; written once (a marker says it is complete)."""
    from tvnsearch.data.video import encode_video

    done = folder / "complete.json"
    if done.is_file() and json.loads(done.read_text())["videos"] == num_videos:
        return
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    names = [(c, g, k) for c in range(CLASSES) for g in range(1, GROUPS + 1) for k in range(1, 8)]
    per_group = np.full(CLASSES * GROUPS, num_videos // (CLASSES * GROUPS))
    per_group[: num_videos - per_group.sum()] += 1
    wanted = {(c, g, k) for c, g, k in names if k <= per_group[c * GROUPS + g - 1]}
    for c in range(CLASSES):
        name = f"Action{c:03d}"
        (folder / name).mkdir(parents=True)
        sources = []
        for d in range(DISTINCT):
            source = folder / name / f"v_{name}_g{d + 1:02d}_c01.avi"
            options = {"b": str(BIT_RATE)}
            encode_video(source, _video(1000 * c + d), fps=FPS, options=options)
            sources.append(source)
        for g in range(1, GROUPS + 1):
            for k in range(1, 8):
                target = folder / name / f"v_{name}_g{g:02d}_c{k:02d}.avi"
                if (c, g, k) in wanted and not target.exists():
                    shutil.copyfile(sources[(g + k) % DISTINCT], target)
        print(f"\r  writing: class {c + 1}/{CLASSES}", end="", flush=True)
    print(f"\r  wrote {num_videos} videos in {time.perf_counter() - started:.0f} s")
    done.write_text(json.dumps({"videos": num_videos}))


def _size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def _build(videos: list[Path], data: Any, cpus: int) -> dict[str, Any]:
    """Cache ``videos`` with ``cpus`` Ray worker processes into the fresh cache of ``data``."""
    from tvnsearch.data.frame_cache import SUFFIX
    from tvnsearch.search.executors import cache_videos
    from tvnsearch.search.ray_session import start_ray, stop_ray

    shutil.rmtree(data.cache_dir, ignore_errors=True)
    start_ray(num_cpus=cpus)
    try:
        started = time.perf_counter()
        unreadable = cache_videos(data, videos, source="bench")
        seconds = time.perf_counter() - started
    finally:
        stop_ray()
    cached = _size(list(Path(data.cache_dir).glob(f"??/*{SUFFIX}")))
    source = _size(videos)
    row = {
        "videos": len(videos),
        "workers": cpus,
        "codec": data.cache_codec,
        "short_side": data.cache_size,
        "quality": data.cache_quality,
        "seconds": round(seconds, 1),
        "videos_per_s": round(len(videos) / seconds, 1),
        "source_gb": round(source / 1e9, 3),
        "cache_gb": round(cached / 1e9, 3),
        "cache_over_source": round(cached / source, 2),
        "unreadable": len(unreadable),
    }
    print(
        f"  {len(videos):>6} videos, {cpus} worker(s), {data.cache_codec} q{data.cache_quality} "
        f"{data.cache_size} px: {seconds:7.1f} s ({row['videos_per_s']:.1f} videos/s), "
        f"cache {row['cache_gb']:.3f} GB = {row['cache_over_source']:.2f} x the source"
    )
    return row


OPEN = """
import sys, time
started = time.perf_counter()
from tvnsearch.search.recipe import DataSection
from tvnsearch.train.training import prepare_data
data = DataSection(sys.argv[1], cache_dir=sys.argv[2], cache_size=int(sys.argv[3]))
imported = time.perf_counter()
prepared = prepare_data(data.path, data.frame_cache(), num_workers=1)
print(time.perf_counter() - imported, imported - started, len(prepared.dataset.videos))
"""


def _open_in_a_fresh_process(data: Any) -> dict[str, float]:
    argv = [sys.executable, "-c", OPEN, data.path, data.cache_dir, str(data.cache_size)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.split()
    seconds, imports, videos = float(out[0]), float(out[1]), int(out[2])
    print(
        f"  open in a fresh process: {seconds:.2f} s for {videos} videos (+{imports:.2f} s imports)"
    )
    return {"seconds": round(seconds, 2), "import_seconds": round(imports, 2), "videos": videos}


def _first_candidate(work: Path, data: Any) -> dict[str, Any]:
    """A real search of one candidate on the cached dataset: its start (launch to the first
    training step: the search's wall time less the candidate's training and scoring)."""
    import pandas as pd

    recipe = work / "ucf.toml"
    recipe.write_text(
        f"""[search]
space = "{Path(__file__).resolve().parents[1] / "search_spaces" / "tiny.toml"}"
budget = 1
name = "ucf"

[data]
path = "{data.path}"
cache_dir = "{data.cache_dir}"
cache_size = {data.cache_size}

[train]
iterations = 1
batch_size = 8

[constraints]
max_flops = 20_000_000

[resources]
num_workers = 1
"""
    )
    results = work / "results"
    shutil.rmtree(results, ignore_errors=True)
    started = time.perf_counter()
    argv = [sys.executable, "-m", "tvnsearch", "search", str(recipe), "--results", str(results)]
    env = os.environ | {"TVNSEARCH_PROGRESS": "0"}
    subprocess.run(argv, check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    (run,) = results.iterdir()
    frame = pd.read_parquet(run / "lineage")
    row = frame.iloc[0]
    train = float(row.get("train_seconds") or 0.0)
    print(f"  search of one candidate: {wall:.1f} s, of which training and scoring {train:.1f} s")
    return {
        "wall_seconds": round(wall, 1),
        "train_and_score_seconds": round(train, 1),
        "start_seconds": round(wall - train, 1),
        "status": str(row["status"]),
    }


def ucf(sample: int = 1332) -> dict[str, Any]:
    from tvnsearch.data.datasets import load_dataset
    from tvnsearch.search.recipe import DataSection

    work = Path(__file__).parent / "out" / "data_scale" / "ucf"
    folder = work / "videos"
    write_ucf(folder)
    videos = sorted(v.path for v in load_dataset(folder).videos)
    every = len(videos) // sample
    some = videos[::every][:sample]
    source = _size(videos)
    print(f"  {len(videos)} videos, {source / 1e9:.2f} GB of source")
    cache = str(work / "cache")

    def settings() -> DataSection:  # the tiny space's: 64 px, JPEG at quality 90
        return DataSection(str(folder), cache_dir=cache, cache_size=64)

    def other(**changes: Any) -> DataSection:
        return dataclasses.replace(settings(), **changes)

    rows = [_build(some, settings(), cpus) for cpus in (1, 2)]
    rows += [_build(some, other(cache_size=128), 2)]  # the cache's former default size
    rows += [_build(some, other(cache_size=224, cache_codec="h264"), 2)]  # a TVN space's size
    rows += [_build(some, other(cache_size=224), 2)]
    rows += [_build(videos, settings(), 2)]
    return {
        "videos": len(videos),
        "source_gb": round(source / 1e9, 3),
        "distinct_per_class": DISTINCT,
        "builds": rows,
        **opening(work, settings()),
    }


def opening(work: Path, data: Any) -> dict[str, Any]:
    """Once the cache is built: the driver's listing of it (as a search does right after the
    build), a fresh process opening it (as each worker does), the first candidate's start."""
    from tvnsearch.train.training import prepare_data

    started = time.perf_counter()
    prepare_data(data.path, data.frame_cache(), on_video=None)
    listed = time.perf_counter() - started
    print(f"  the driver lists the cached dataset: {listed:.2f} s")
    return {
        "driver_listing_seconds": round(listed, 2),
        "open": _open_in_a_fresh_process(data),
        "first_candidate": _first_candidate(work, data),
    }
