"""A synthetic video benchmark that one frame cannot solve: a coloured disc moving on a torus.

The class is the disc's colour (appearance: one frame shows it) and its vertical motion: up, down
or none. The disc wraps around the frame's edges and starts anywhere, so its position is uniform in
every frame whatever the motion: a single frame says nothing about the motion, and a one-frame
network is held to about 1/3 top-1 while a temporal one can reach 1. Every video also drifts
sideways at a random velocity of either sign, so "still" means "no vertical motion" (not "no
motion"), and mirror images stay in their class: left-right flips are safe augmentation.

Videos are written as MPEG-4 Part 2 in ``.mp4`` (in every FFmpeg build), under
``train/<class>/`` and ``val/<class>/`` with a ``synth.json`` that records how they were made.
Each video is drawn from its own seed, derived from the dataset's seed, the split, class and index.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvnsearch.data.video import encode_video
from tvnsearch.errors import InputError, Problem

SCHEMA = "tvnsearch.synth/1"
COLOURS = {"red": (220, 50, 40), "green": (40, 190, 60), "blue": (50, 90, 230)}
MOTIONS = {"up": -1.0, "down": 1.0, "still": 0.0}  # sign of the vertical velocity
CLASSES = tuple(f"{c}_{m}" for c in COLOURS for m in MOTIONS)


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    num_videos: int = 360  # 40 per class: enough to learn, small enough to decode in a second
    size: int = 64  # pixels per side: cheap to decode and crop; 80-96 px candidates enlarge it
    num_frames: int = 16  # covers 8 frames at stride 2, the tiny space's larger clips
    fps: int = 8
    val_fraction: float = 0.25
    # Vertical pixels per frame at 64 px, uniform: fast enough to see at 32 px and stride 1,
    # slow enough to stay unambiguous at stride 4 (16 px < half the frame). With 1.5-3 a
    # temporal genome reached top-1 0.54 in 300 steps (0.67 in 400) against 0.76 with 2.5-4.
    speed: tuple[float, float] = (2.5, 4.0)
    drift: float = 1.0  # the largest sideways pixels per frame at 64 px, either direction


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
    out, config = Path(out), config or SynthConfig()
    _check_config(config)
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    staging.chmod(0o755)  # mkdtemp makes it private; the dataset is for every user's workers
    try:
        counts = {split: _write_split(staging, split, config) for split in ("train", "val")}
        meta = {"schema": SCHEMA, "classes": list(CLASSES), **dataclasses.asdict(config)}
        (staging / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SynthSummary(out, CLASSES, counts["train"], counts["val"])


def _check_config(config: SynthConfig) -> None:
    least = 2 * len(CLASSES)
    problems = []
    if config.num_videos < least:
        problems.append(
            Problem(
                "num_videos", f"must be >= {least} (two per class), but got {config.num_videos}"
            )
        )
    if config.size < 16:
        problems.append(Problem("size", f"must be >= 16 pixels, but got {config.size}"))
    if problems:
        raise InputError("synthetic dataset", problems)


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(str(out), "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "synth.json").exists():
        raise InputError(str(out), "is a non-empty folder without synth.json; refusing to replace")


def _write_split(root: Path, split: str, config: SynthConfig) -> int:
    per_class = config.num_videos // len(CLASSES)
    num_val = max(1, round(per_class * config.val_fraction))
    count = num_val if split == "val" else max(1, per_class - num_val)
    for c, name in enumerate(CLASSES):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(count):
            rng = np.random.default_rng((config.seed, split == "val", c, i))
            frames = render_video(name, config, rng)
            encode_video(folder / f"{name}_{i:04d}.mp4", frames, fps=config.fps, options=_QUALITY)
    return count * len(CLASSES)


_QUALITY = {"b": "2000000"}  # high for 64 px: compression must not blur away the motion


def render_video(name: str, config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """One video of class ``name`` as uint8 ``(T, H, W, 3)``; ``rng`` decides everything."""
    colour, motion = name.rsplit("_", 1)
    scale = config.size / 64
    velocity = np.array(
        [
            MOTIONS[motion] * rng.uniform(*config.speed) * scale,
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
