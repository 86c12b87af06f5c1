"""Data at scale: opening a large dataset, honest splits, and feeding training its clips.

Sections (each prints a table and adds its figures to the JSON):
- ``open``: a dataset of many small synthetic videos, decoded into the frame cache on 1 and on 2
  threads (the driver decodes on every core before Ray starts); then the time a fresh process
  takes to open it (``prepare_data``: list, split, index every video), with
  the dataset's listing (a stat per video) and without it (resolve, hash and open every cached
  entry, as every worker did before), side by side in one run;
- ``step``: one thread, batch 16: a training step's forward + backward + AdamW of 5 tiny-space
  genomes, a 72- and a 916-MFLOP one and issue 15's 130-MFLOP 8-frame 3-block genome, in GFLOP/s
  (the counted FLOPs of a clip x 16 x 3) against a 1024^2 matmul's GFLOP/s on the same core, with
  the former layers (``tests/models/test_layers.py``'s reference) and today's, side by side in
  the same rounds; then again with freed memory kept (``tvnsearch.train.memory``, as training
  processes run) (issue 15's goal: >= 40 %);
- ``splits``: a UCF-101-named dataset (``v_<Class>_g<NN>_c<NN>``, several clips per group): groups
  on both sides of the seeded split, for several seeds (must be 0);
- ``loader``: training's input side from the frame cache (clips/s with 0, 1 and 2 DataLoader
  workers; and cutting only, a GPU's worker's job) against the CPU training step (clips/s) of
  tiny-space genomes, side by side; then whole CPU trainings with no worker and with one;
- ``ucf`` (``ucf_scale.py``): a generated dataset of UCF-101's size (13,320 videos, 320x240,
  7 s): its source and frame-cache sizes, the cache's build by 1 and 2 Ray worker processes, the
  time a fresh process takes to open it, and the first candidate's start in a real search;
- ``gpu`` (where CUDA is; PyAV not needed): training steps/s and GPU utilisation of a tiny and
  two published genomes with the old input pipeline (no worker, CPU resize, a look at the loss
  every step) and the new one's settings, on videos in memory.

    .venv/bin/python bench/data_scale_bench.py [--sections open step ... gpu] [--videos 3000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
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
    """Issue 15's step efficiency: forward + backward + AdamW at ``batch``, one thread, of
    ``num_genomes`` tiny-space genomes and of an 8-frame, 3-block genome of about 130 MFLOP, with
    the layers before issue 15 (the reference in tests/models/test_layers.py, same weights) and
    now; GFLOP/s are the counted FLOPs of a clip x batch x 3, against a 1024^2 matmul. Each round
    times the matmul and both steps once, so that other processes' load falls on all alike;
    medians of 5 rounds after 2. Then the same with glibc keeping freed memory: by default it
    gives every activation over 32 MB back to the system and page-faults it in again each step."""
    import importlib.util
    import itertools
    import random
    import statistics

    import torch
    from torch import nn

    from tvnsearch.genome.cost import count_cost
    from tvnsearch.genome.space import load_space
    from tvnsearch.models.builder import build_model

    sys.path.insert(0, str(ROOT / "tests"))  # the reference's module imports the tests' helpers
    spec = importlib.util.spec_from_file_location(
        "reference_layers", ROOT / "tests" / "models" / "test_layers.py"
    )
    assert spec is not None and spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    torch.set_num_threads(1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)

    def matmul_gflops() -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - started)
        return 2 * 1024**3 / statistics.median(times) / 1e9

    def trainer(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def one_step() -> float:
            started = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return time.perf_counter() - started

        return one_step

    def measure(genome: Any) -> dict[str, Any]:
        torch.manual_seed(0)
        model = build_model(genome, 24).train()
        size = (batch, 3, genome.num_frames, genome.resolution, genome.resolution)
        x, y = torch.randn(size), torch.randint(0, 24, (batch,))
        steps = {
            "before": trainer(reference.reference_model(model, genome, 24), x, y),
            "after": trainer(model, x, y),
        }
        rounds: dict[str, list[float]] = {"matmul": [], "before": [], "after": []}
        for _ in range(7):
            rounds["matmul"].append(matmul_gflops())
            for name, one_step in steps.items():
                rounds[name].append(one_step())
        med = {name: statistics.median(times[2:]) for name, times in rounds.items()}
        flops = count_cost(genome, 24).flops
        rate = {name: 3 * batch * flops / med[name] / 1e9 for name in steps}
        return {
            "genome": genome.id,
            "mflops_per_clip": flops / 1e6,
            "frames": genome.num_frames,
            "blocks": len(genome.blocks),
            "matmul_gflops": med["matmul"],
            "before_step_s": med["before"],
            "before_gflops": rate["before"],
            "before_of_peak": rate["before"] / med["matmul"],
            "step_s": med["after"],
            "gflops": rate["after"],
            "of_peak": rate["after"] / med["matmul"],
            "speedup": med["before"] / med["after"],
        }

    def table(genomes: list[Any]) -> list[dict[str, Any]]:
        print(
            f"{'genome':<16} {'MFLOP':>7} {'T':>2} {'blk':>3} {'matmul':>6} | {'before ms':>9}"
            f" {'GFLOP/s':>7} {'%':>5} | {'after ms':>8} {'GFLOP/s':>7} {'%':>5} | speedup"
        )
        rows = []
        for genome in genomes:
            r = measure(genome)
            rows.append(r)
            print(
                f"{r['genome']:<16} {r['mflops_per_clip']:>7.1f} {r['frames']:>2} {r['blocks']:>3}"
                f" {r['matmul_gflops']:>6.1f} | {r['before_step_s'] * 1e3:>9.1f}"
                f" {r['before_gflops']:>7.2f} {100 * r['before_of_peak']:>5.1f} |"
                f" {r['step_s'] * 1e3:>8.1f} {r['gflops']:>7.2f} {100 * r['of_peak']:>5.1f} |"
                f" {r['speedup']:>6.2f}x"
            )
        return rows

    space = load_space(ROOT / "search_spaces" / "tiny.toml")
    genomes = [space.sample(random.Random(seed)) for seed in range(num_genomes)]
    # Issue 15's genome: the first tiny-space sample with 8 frames, 3 blocks and 110-150 MFLOP
    # (seed 84, 130 MFLOP, with a temporal convolution).
    samples = (space.sample(random.Random(seed)) for seed in itertools.count())
    shaped = (g for g in samples if g.num_frames == 8 and len(g.blocks) == 3)
    genomes.append(next(g for g in shaped if 110e6 <= count_cost(g, 24).flops <= 150e6))
    print(f"one thread, batch {batch}; % of the 1024^2 matmul's GFLOP/s timed in the same rounds")
    result: dict[str, Any] = {"batch": batch, "threads": 1, "genomes": table(genomes)}
    result["matmul_gflops"] = statistics.median(r["matmul_gflops"] for r in result["genomes"])
    from tvnsearch.train.memory import keep_freed_memory

    if keep_freed_memory():  # as a search's workers and ``tvnsearch train`` run
        print("\nthe same with glibc keeping freed memory (mallopt: no mmap, no trim)")
        result["malloc_kept"] = table(genomes)
    return result


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


LOADER_BATCHES = 10  # timed per case and round, after the first (the workers' start)
LOADER_ROUNDS = 3  # every case once a round, its median kept: the two cores are shared
LOADER_CASES = ("0", "1", "2", "cut only", "step")  # DataLoader workers, a GPU's worker, a step
LOADER_ROW = "{:<17} {:>5} {:>5} {:>9} {:>6} {:>6} {:>8} {:>6} {:>11} {:>9} {:>9}"


def _synth_data(size: int) -> Any:
    """The disc benchmark at ``size`` px, cached at that size as the local recipe caches it,
    every frame read once (no case pays for the cache's first reads). The frame cache's public
    interface alone: its storage may change."""
    from tvnsearch.data.frame_cache import FrameCache
    from tvnsearch.data.synth import SynthConfig, write_synth
    from tvnsearch.train.training import prepare_data

    folder = WORK / "loader" / f"synth-{size}"
    if not (folder / "synth.json").is_file():
        write_synth(folder, SynthConfig(task="disc", num_videos=90, size=size, num_frames=16))
    data = prepare_data(folder, FrameCache(WORK / "loader" / "frames", size))
    for video in data.dataset.videos:
        data.frames.read(video.path, range(data.frames.num_frames(video.path)))
    return data


def _clips_per_s(batches: Iterator[Any], batch: int) -> tuple[float, float]:
    """Clips per second out of ``batches`` after the first (the workers' start), and this
    thread's CPU ms per clip meanwhile (other processes on the cores change the first, hardly
    the second); closes ``batches``."""
    next(batches)
    started, cpu = time.perf_counter(), time.thread_time()
    for _ in range(LOADER_BATCHES):
        next(batches)
    clips = LOADER_BATCHES * batch
    rates = clips / (time.perf_counter() - started), 1e3 * (time.thread_time() - cpu) / clips
    batches.close()
    return rates


def _training_inputs(data: Any, genome: Any, num_workers: int, batch: int) -> Iterator[Any]:
    """Training's own input side on the CPU: read, cut, resize, flip, normalise."""
    import torch

    from tvnsearch.data.clips import ClipSpec
    from tvnsearch.train.config import TrainConfig
    from tvnsearch.train.inputs import train_batches

    config = TrainConfig(batch_size=batch, num_workers=num_workers)
    clip, cpu = ClipSpec.of(genome), torch.device("cpu")
    yield from train_batches(data.frames, data.dataset, clip, config, cpu)


def _cut_only_inputs(data: Any, genome: Any, batch: int) -> Iterator[Any]:
    """What a worker makes for a GPU (read and cut: ``CropDataset``), in this process."""
    from functools import partial

    from torch.utils.data import DataLoader

    from tvnsearch.data.clips import ClipSampler, ClipSpec
    from tvnsearch.data.device_clips import CropDataset, collate_crops

    clip, ds = ClipSpec.of(genome), data.dataset
    crops = CropDataset(
        data.frames, ds.train, clip, num_classes=ds.num_classes, multi_label=False, train=True
    )
    collate = partial(collate_crops, resolution=clip.resolution)
    sampler = ClipSampler(len(crops), 0)
    yield from DataLoader(crops, batch_size=batch, sampler=sampler, collate_fn=collate)


def _step_clips_per_s(genome: Any, num_classes: int, batch: int) -> tuple[float, float]:
    """Clips per second of a CPU training step (forward, backward, AdamW) and its CPU ms per
    clip (this thread's: run it on one): the medians of 5 steps after 2."""
    import statistics

    import torch
    from torch import nn

    from tvnsearch.data.clips import ClipSpec
    from tvnsearch.models.builder import build_model

    clip = ClipSpec.of(genome)
    model = build_model(genome, num_classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, clip.num_frames, clip.resolution, clip.resolution)
    y = torch.randint(0, num_classes, (batch,))
    times, cpu_times = [], []
    for _ in range(7):
        started, cpu = time.perf_counter(), time.thread_time()
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
        cpu_times.append(time.thread_time() - cpu)
    return batch / statistics.median(times[2:]), 1e3 * statistics.median(cpu_times[2:]) / batch


def _case_rate(case: str, data: Any, genome: Any, batch: int) -> tuple[float, float]:
    """Clips/s and CPU ms per clip of one case of ``LOADER_CASES``: a loader, or the step."""
    if case == "step":
        return _step_clips_per_s(genome, data.dataset.num_classes, batch)
    if case == "cut only":
        return _clips_per_s(_cut_only_inputs(data, genome, batch), batch)
    return _clips_per_s(_training_inputs(data, genome, int(case), batch), batch)


def _loader_rates(data: Any, genome: Any, batch: int) -> dict[str, dict[str, float]]:
    """Median clips/s and CPU ms per clip of each case, the cases measured in turn each round
    (the CPU ms of the workers' own processes are not counted: only in-process cases keep it)."""
    import statistics

    rates: dict[str, list[tuple[float, float]]] = {case: [] for case in LOADER_CASES}
    for _ in range(LOADER_ROUNDS):
        for case in LOADER_CASES:
            rates[case].append(_case_rate(case, data, genome, batch))
    return {
        "clips_per_s": {case: statistics.median(r for r, _ in rs) for case, rs in rates.items()},
        "cpu_ms_per_clip": {
            case: statistics.median(ms for _, ms in rates[case]) for case in ("0", "step")
        },
    }


def _loader_genomes(count: int) -> list[Any]:
    """Tiny-space genomes of 4 to 8 frames (their clips cost a loader the most), in seed order."""
    import random
    from itertools import islice

    from tvnsearch.genome.space import load_space

    space = load_space(ROOT / "search_spaces" / "tiny.toml")
    genomes = (space.sample(random.Random(seed)) for seed in range(10_000))
    return list(islice((g for g in genomes if g.num_frames >= 4), count))


def loader(num_genomes: int = 4, batch: int = 16) -> dict[str, Any]:
    """Training input throughput from the frame cache (0, 1 and 2 DataLoader workers; and what
    a worker does for a GPU, cutting only) against the CPU training step rate, side by side, on
    one thread as a search's one-core training worker runs (the CPU ms per clip of the step and
    of the loader without workers are then this thread's, robust to the cores' other users)."""
    import torch

    rows, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)
    print(f"torch threads 1, batch {batch}; clips/s, each the median of {LOADER_ROUNDS}")
    head = ("genome", "clip", "cache", "0 workers", "1", "2", "cut only", "step", "loader/step")
    print(LOADER_ROW.format(*head, "load CPU", "step CPU") + "  (ms per clip)")
    for size in (64, 128):
        data = _synth_data(size)
        for genome in _loader_genomes(num_genomes):
            measured = _loader_rates(data, genome, batch)
            rates, cpu_ms = measured["clips_per_s"], measured["cpu_ms_per_clip"]
            clip = f"{genome.num_frames}x{genome.resolution}"
            row = {"genome": genome.id, "clip": clip, "cache_px": size, **measured}
            row["loader_over_step"] = rates["0"] / rates["step"]
            rows.append(row)
            cells = [f"{rates[case]:.0f}" for case in LOADER_CASES]
            ratio = f"{row['loader_over_step']:.1f}x"
            cpu = [f"{cpu_ms['0']:.2f}", f"{cpu_ms['step']:.2f}"]
            print(LOADER_ROW.format(genome.id, clip, size, *cells, ratio, *cpu))
    training = _worker_training(threads)
    torch.set_num_threads(threads)
    return {"batch": batch, "threads": 1, "rows": rows, "training": training}


def _worker_training(most_threads: int, iterations: int = 40) -> list[dict[str, Any]]:
    """Whole CPU trainings (``train_seconds``, the worker's start included) with no DataLoader
    worker and with one, alternated, on ``most_threads`` threads and on one (a search's one-core
    worker): the median of 3 each, for the two cheapest genomes of the table (where the loader's
    share of a step is largest)."""
    import dataclasses
    import statistics

    import torch

    from tvnsearch.genome.cost import count_cost
    from tvnsearch.train.config import TrainConfig
    from tvnsearch.train.training import train_genome

    data, rows = _synth_data(64), []
    cheapest = sorted(_loader_genomes(4), key=lambda g: count_cost(g, 9).flops)[:2]
    for threads in sorted({most_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        for genome in cheapest:
            config = TrainConfig(iterations=iterations, batch_size=16)
            seconds: dict[int, list[float]] = {0: [], 1: []}
            for _ in range(LOADER_ROUNDS):
                for workers, times in seconds.items():
                    one = dataclasses.replace(config, num_workers=workers)
                    times.append(train_genome(genome, data, one).train_seconds)
            steps = {w: iterations / statistics.median(s) for w, s in seconds.items()}
            rows.append({"genome": genome.id, "threads": threads, "steps_per_s": steps})
            print(
                f"{genome.id} on {threads} thread(s): {steps[0]:.1f} steps/s with no worker, "
                f"{steps[1]:.1f} with one ({steps[1] / steps[0] - 1:+.0%})"
            )
    return rows


GPU_WARMUP = 30  # steps before the timed ones: workers started, kernels chosen, queue full


class MemoryFrames:
    """Videos as uint8 ``(T, H, W, 3)`` arrays in memory, read as from the frame cache."""

    def __init__(self, videos: dict[Path, Any]) -> None:
        self.videos = videos

    def num_frames(self, path: Path) -> int:
        return len(self.videos[path])

    def read(self, path: Path, indices: Any) -> Any:
        return self.videos[path][list(indices)]


def _without_pyav() -> None:
    """A stand-in ``av`` module where PyAV is missing (a bare GPU machine): the gpu section
    decodes nothing, it only imports modules that import PyAV for decoding."""
    import importlib.util
    import types

    if "av" not in sys.modules and importlib.util.find_spec("av") is None:
        sys.modules["av"] = types.ModuleType("av")


def _memory_data(short_side: int, num_videos: int = 48, num_classes: int = 8) -> Any:
    """Random videos of 32 frames, a cache's frames of ``short_side`` px (4:3 and 3:2: frame
    sizes differ within a batch), a sixth held out for scoring."""
    import numpy as np

    from tvnsearch.data.datasets import Video, VideoDataset
    from tvnsearch.train.training import TrainData

    rng = np.random.default_rng(0)
    widths = (short_side * 4 // 3, short_side * 3 // 2)
    videos = {
        Path(f"v{i}.npy"): rng.integers(0, 256, (32, short_side, widths[i % 2], 3), np.uint8)
        for i in range(num_videos)
    }
    listed = [Video(path, (i % num_classes,)) for i, path in enumerate(videos)]
    split = num_videos - num_videos // 6
    classes = tuple(f"c{c}" for c in range(num_classes))
    dataset = VideoDataset("memory", classes, False, tuple(listed[:split]), tuple(listed[split:]))
    return TrainData(dataset, MemoryFrames(videos))


def _gpu_pipelines() -> list[tuple[str, Any, int]]:
    """(name, settings, steps between looks at the loss) of each input pipeline compared; the
    old one looked at the loss at every step."""
    from tvnsearch.train.config import AUTO_WORKERS, TrainConfig

    def pipeline(workers: int, on_device: bool, channels_last: bool = False) -> Any:
        return TrainConfig(
            batch_size=16,
            num_workers=workers,
            augment_on_device=on_device,
            channels_last=channels_last,
        )

    return [
        ("old: no worker, CPU resize, look every step", pipeline(0, False), 1),
        ("auto workers, CPU resize", pipeline(AUTO_WORKERS, False), 50),
        ("auto workers, GPU resize", pipeline(AUTO_WORKERS, True), 50),
        ("auto workers, GPU resize, channels-last", pipeline(AUTO_WORKERS, True, True), 50),
        ("2 workers, CPU resize", pipeline(2, False), 50),
        ("2 workers, GPU resize", pipeline(2, True), 50),
    ]


def _gpu_utilisation() -> Any:
    """A function returning the GPU's utilisation now (%), by NVML or nvidia-smi; None: neither."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # no NVML binding (or no GPU): the command line tool, if any
        if shutil.which("nvidia-smi") is None:
            return None
        query = "nvidia-smi --id=0 --query-gpu=utilization.gpu --format=csv,noheader,nounits"
        return lambda: float(subprocess.run(query.split(), capture_output=True, text=True).stdout)


@contextlib.contextmanager
def _utilisation_samples() -> Iterator[list[tuple[float, float]]]:
    """(time, GPU utilisation %) every 50 ms while the block runs (none without NVML or
    nvidia-smi), in a thread of their own."""
    import threading

    samples: list[tuple[float, float]] = []
    utilisation, done = _gpu_utilisation(), threading.Event()

    def sample() -> None:
        while utilisation is not None and not done.wait(0.05):
            samples.append((time.perf_counter(), utilisation()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        done.set()
        sampler.join()


@contextlib.contextmanager
def _looking_every(steps: int) -> Iterator[None]:
    """Training looks at a GPU's loss every ``steps`` steps while the block runs."""
    from tvnsearch.train import training

    saved = dict(training.CHECK_EVERY)
    training.CHECK_EVERY["cuda"] = steps
    try:
        yield
    finally:
        training.CHECK_EVERY.clear()
        training.CHECK_EVERY.update(saved)


def _timed_training(genome: Any, data: Any, config: Any, check_every: int) -> dict[str, Any]:
    """One training on the GPU: steps/s after ``GPU_WARMUP`` (the GPU waited for at both ends of
    the timed steps), the mean GPU utilisation sampled meanwhile, and the whole training's s."""
    import dataclasses
    import statistics

    import torch

    from tvnsearch.train.inputs import loader_workers
    from tvnsearch.train.training import train_model

    device, marks = torch.device(config.device), {}

    def on_step(step: int, total: int) -> None:
        if step in (GPU_WARMUP, total):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks["start" if step == GPU_WARMUP else "end"] = time.perf_counter()

    with _utilisation_samples() as samples, _looking_every(check_every):
        result, _ = train_model(genome, data, config, on_step=on_step)
    assert result.status == "trained", result.reason
    timed = [u for t, u in samples if marks["start"] <= t <= marks["end"]]
    return {
        "steps_per_s": (config.iterations - GPU_WARMUP) / (marks["end"] - marks["start"]),
        "gpu_utilisation": statistics.mean(timed) if timed else None,
        "train_seconds": result.train_seconds,
        "num_workers": loader_workers(config, device),
        "final_loss": result.final_loss,
        "config": dataclasses.asdict(config),
    }


def _device_clip_difference(data: Any, genome: Any, device: Any) -> int:
    """The largest difference (levels of 255) between clips cut on ``device`` and ``make_clip``'s,
    for the same draws of 16 training clips."""
    import torch

    from tvnsearch.data.clips import ClipDataset, ClipSampler, ClipSpec
    from tvnsearch.data.device_clips import CropDataset, collate_crops, resize_on_device

    clip, ds = ClipSpec.of(genome), data.dataset
    items = [next(iter(ClipSampler(len(ds.train), seed))) for seed in range(16)]
    kinds = [
        kind(data.frames, ds.train, clip, num_classes=ds.num_classes, multi_label=False, train=True)
        for kind in (ClipDataset, CropDataset)
    ]
    expected = torch.stack([kinds[0][item][0] for item in items])
    batch = collate_crops([kinds[1][item] for item in items], clip.resolution).to(device)
    got = resize_on_device(*batch[:3]).cpu()
    return int((got.int() - expected.int()).abs().max())


def gpu_trainings(
    device: Any, genomes: list[tuple[str, Any]], iterations: int = 180
) -> dict[str, Any]:
    """Training steps/s and GPU utilisation of each (name, genome) with each input pipeline, on
    in-memory videos, on ``device`` (a CPU too: a quick check of this code)."""
    import dataclasses

    rows, checks = [], {}
    for name, genome in genomes:
        data = _memory_data(128 if genome.resolution <= 128 else 256)
        checks[name] = _device_clip_difference(data, genome, device)
        for pipeline, config, check_every in _gpu_pipelines():
            config = dataclasses.replace(config, device=str(device), iterations=iterations)
            row = {"genome": name, "id": genome.id, "pipeline": pipeline}
            row |= _timed_training(genome, data, config, check_every)
            rows.append(row)
            util = "-" if row["gpu_utilisation"] is None else f"{row['gpu_utilisation']:.0f}"
            print(
                f"{name:<12} {genome.num_frames}x{genome.resolution:<4} {pipeline:<44} "
                f"{row['steps_per_s']:>7.1f} steps/s  GPU {util:>3} %  "
                f"{row['num_workers']} workers  {row['train_seconds']:.1f} s in all"
            )
        print(f"{name}: clips cut on the device within {checks[name]} level(s) of make_clip's")
    return {"rows": rows, "clip_max_diff": checks}


def gpu() -> dict[str, Any]:
    """GPU training steps/s with the old and the new input pipeline, where a GPU is: a tiny-space
    genome and two published ones (8x128 and 2x224), batch 16."""
    _without_pyav()
    import torch

    from tvnsearch.genome.tvn_format import published_genome

    if not torch.cuda.is_available():
        print("no GPU")
        return {}
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    print(f"{name}; steps/s over the steps after the first {GPU_WARMUP}")
    genomes = [("tiny", _loader_genomes(1)[0])]
    genomes += [(n, published_genome(n)) for n in ("tvn4", "tvn_mobile_1")]
    return {"device": name, **gpu_trainings(device, genomes)}


def _ucf() -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).parent))
    from ucf_scale import ucf

    return ucf()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=["open", "step", "splits", "loader", "gpu", "ucf"],
        default=["open", "step", "splits"],
    )
    parser.add_argument("--videos", type=int, default=3000, help="for open (a multiple of 9)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = {"platform": platform.platform(), "python": platform.python_version()}
    sections = {"open": lambda: open_dataset(args.videos), "step": step, "splits": splits}
    sections |= {"loader": loader, "gpu": gpu, "ucf": _ucf}
    for name in args.sections:
        print(f"\n## {name}")
        results[name] = sections[name]()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
