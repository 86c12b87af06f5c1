"""Synthetic video benchmarks that one frame cannot solve, written deterministically by seed.

Two tasks share one writer. ``motion`` (24 classes, the recipes' benchmark: see
``tvnsearch.data.motion``) asks for several kinds of temporal modelling, and for spatial detail,
on textured, panning, noisy and coarsely encoded videos. ``disc`` (9 classes, small and quick, as
tests use it) is a coloured disc moving on a torus: the class is the disc's colour (one frame shows
it) and its vertical motion: up, down or none. The disc wraps around the frame's edges and starts
anywhere, so its position is uniform in every frame whatever the motion: a single frame says
nothing about the motion, and a one-frame network is held to about 1/3 top-1 while a temporal one
can reach 1. Every video also drifts sideways at a random velocity of either sign, so "still"
means "no vertical motion" (not "no motion"), and mirror images stay in their class: left-right
flips are safe augmentation (in both tasks).

Videos are written as MPEG-4 Part 2 in ``.mp4`` (in every FFmpeg build), under
``train/<class>/`` and ``val/<class>/`` with a ``synth.json`` that records how they were made.
Each video is drawn from its own seed, derived from the dataset's seed, the split, class and index.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvnsearch.data import motion
from tvnsearch.data.video import encode_video
from tvnsearch.errors import InputError, Problem
from tvnsearch.files import check_writable

SCHEMA = "tvnsearch.synth/1"
COLOURS = {"red": (220, 50, 40), "green": (40, 190, 60), "blue": (50, 90, 230)}
MOTIONS = {"up": -1.0, "down": 1.0, "still": 0.0}  # sign of the vertical velocity
CLASSES = tuple(f"{c}_{m}" for c in COLOURS for m in MOTIONS)  # of the disc task
# Beyond these a dataset is no benchmark but a mistake: 256 frames of 256 px are drawn in
# 400 MB of floats, and 100,000 videos are 70 times the motion task's own.
MAX_VIDEOS, MAX_SIZE, MAX_FRAMES = 100_000, 256, 256


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    task: str = "disc"  # a key of TASKS; the command line's default is "motion"
    num_videos: int | None = None  # None: the task's own (disc 360, motion 1440)
    size: int = 64  # pixels per side: cheap to decode and crop; 80-96 px candidates enlarge it
    num_frames: int = 16  # covers 8 frames at stride 2, the tiny space's larger clips
    fps: int = 8
    val_fraction: float = 0.25
    # The disc task's vertical pixels per frame at 64 px, uniform: fast enough to see at 32 px
    # and stride 1, slow enough to stay unambiguous at stride 4 (16 px < half the frame). With
    # 1.5-3 a temporal genome reached top-1 0.54 in 300 steps (0.67 in 400) against 0.76 with 2.5-4.
    speed: tuple[float, float] = (2.5, 4.0)
    drift: float = 1.0  # the disc's largest sideways pixels per frame at 64 px, either direction


@dataclass(frozen=True)
class Task:
    """A benchmark: its classes, how one video of a class is drawn, how videos are encoded."""

    classes: tuple[str, ...]
    render: Callable[[str, SynthConfig, np.random.Generator], np.ndarray]
    encoding: Mapping[str, str]  # encoder options
    num_videos: int  # the default: videos of all classes and both splits together


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    classes: tuple[str, ...]
    num_train: int
    num_val: int


def write_synth(out: str | Path, config: SynthConfig | None = None) -> SynthSummary:
    """Write the dataset into ``out``, replacing an earlier synthetic dataset there.

    The videos are written beside ``out`` first and moved in at the end: an interrupted run
    leaves the old dataset or none, never half of one.
    """
    out, config = Path(out), _resolved(config or SynthConfig())
    _check_target(out)
    task = TASKS[config.task]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    staging.chmod(0o755)  # mkdtemp makes it private; the dataset is for every user's workers
    try:
        counts = {split: _write_split(staging, split, config) for split in ("train", "val")}
        meta = {"schema": SCHEMA, "classes": list(task.classes), **dataclasses.asdict(config)}
        (staging / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SynthSummary(out, task.classes, counts["train"], counts["val"])


def _resolved(config: SynthConfig) -> SynthConfig:
    """``config`` checked, with the task's own number of videos where it names none."""
    if config.task not in TASKS:
        known = ", ".join(TASKS)
        raise InputError(
            "synthetic dataset",
            [Problem("task", f"must be one of {known}, but got {config.task!r}")],
        )
    task = TASKS[config.task]
    config = dataclasses.replace(config, num_videos=config.num_videos or task.num_videos)
    least = 2 * len(task.classes)
    problems = []
    if config.num_videos < least:
        problems.append(
            Problem(
                "num_videos", f"must be >= {least} (two per class), but got {config.num_videos}"
            )
        )
    elif config.num_videos % len(task.classes):
        why = (
            f"must be a multiple of {len(task.classes)} (as many videos in each class), "
            f"but got {config.num_videos}"
        )
        problems.append(Problem("num_videos", why))
    if config.num_videos > MAX_VIDEOS:
        problems.append(
            Problem("num_videos", f"must be <= {MAX_VIDEOS:,}, but got {config.num_videos}")
        )
    if not 16 <= config.size <= MAX_SIZE:
        why = f"must be from 16 to {MAX_SIZE} pixels, but got {config.size}"
        problems.append(Problem("size", why))
    if not 1 <= config.num_frames <= MAX_FRAMES:
        why = f"must be from 1 to {MAX_FRAMES}, but got {config.num_frames}"
        problems.append(Problem("num_frames", why))
    if problems:
        raise InputError("synthetic dataset", problems)
    return config


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(str(out), "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "synth.json").exists():
        raise InputError(str(out), "is a non-empty folder without synth.json; refusing to replace")
    check_writable(out, folder=True)


def _write_split(root: Path, split: str, config: SynthConfig) -> int:
    task = TASKS[config.task]
    per_class = config.num_videos // len(task.classes)
    num_val = max(1, round(per_class * config.val_fraction))
    count = num_val if split == "val" else max(1, per_class - num_val)
    for c, name in enumerate(task.classes):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(count):
            rng = np.random.default_rng((config.seed, split == "val", c, i))
            frames = task.render(name, config, rng)
            encode_video(
                folder / f"{name}_{i:04d}.mp4", frames, fps=config.fps, options=task.encoding
            )
    return count * len(task.classes)


def render_video(name: str, config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """One video of class ``name`` of ``config.task`` as uint8 ``(T, H, W, 3)``; ``rng`` decides
    everything."""
    return TASKS[config.task].render(name, config, rng)


def _render_disc(name: str, config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    colour, vertical = name.rsplit("_", 1)
    scale = config.size / 64
    velocity = np.array(
        [
            MOTIONS[vertical] * rng.uniform(*config.speed) * scale,
            rng.uniform(-config.drift, config.drift) * scale,
        ]
    )
    start = rng.uniform(0, config.size, size=2)
    radius = rng.uniform(5.0, 8.0) * scale
    tint = np.clip(np.array(COLOURS[colour]) + rng.uniform(-25, 25, size=3), 0, 255)
    background = _background(config.size, rng)
    frames = []
    for t in range(config.num_frames):
        alpha = _disc(config.size, start + velocity * t, radius)[..., None]
        frames.append(background * (1 - alpha) + tint * alpha)
    return np.stack(frames).round().astype(np.uint8)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A grey level with a smooth, faint, static texture (a block noise, bilinearly enlarged)."""
    coarse = rng.uniform(-20, 20, size=(5, 5))
    axis = np.linspace(0, 4, size)
    i0 = np.minimum(axis.astype(int), 3)
    frac = axis - i0
    rows = coarse[i0] * (1 - frac)[:, None] + coarse[i0 + 1] * frac[:, None]
    texture = rows[:, i0] * (1 - frac)[None, :] + rows[:, i0 + 1] * frac[None, :]
    return (rng.uniform(70, 150) + texture)[..., None].repeat(3, axis=2)


def _disc(size: int, centre: np.ndarray, radius: float) -> np.ndarray:
    """Coverage in [0, 1] of a disc on a torus, with a one-pixel soft edge."""
    pixels = np.arange(size) + 0.5
    dy = (pixels - centre[0] + size / 2) % size - size / 2
    dx = (pixels - centre[1] + size / 2) % size - size / 2
    distance = np.hypot(dy[:, None], dx[None, :])
    return np.clip(radius + 0.5 - distance, 0.0, 1.0)


def _render_motion(name: str, config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    return motion.render_motion(name, config.size, config.num_frames, rng)


TASKS = {
    # A high bitrate for 64 px: compression must not blur away the disc's motion.
    "disc": Task(CLASSES, _render_disc, {"b": "2000000"}, 360),  # 40 per class
    # 60 per class: 45 to learn from, 15 to score. 360 scored videos hold the standard error of
    # fitness over the choice of videos near 0.035, against ~0.05 with 240 (between two seeds,
    # fitness moved by a median 0.04 with 240).
    "motion": Task(motion.CLASSES, _render_motion, motion.ENCODING, 1440),
}
