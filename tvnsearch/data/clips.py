"""Clips as a genome asks for them: ``num_frames`` frames, every ``frame_stride``-th, square.

Training clips start at a random frame, cover a random square of 80-100% of the shorter side
and are flipped left-right half the time; evaluation clips are centred in space, at one or more
fixed positions spread evenly in time (``clip_offsets``; one clip is the centred clip). Clips
stay uint8 ``(3, T, H, W)`` until the training loop normalises them on the device, where a batch
of bytes is four times cheaper to move than floats.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from tvnsearch.data.datasets import Video
from tvnsearch.genome.genes import Genome

MIN_TRAIN_CROP = 0.8  # mild: tiny inputs (32 px) have little to spare
Draw = tuple[int, int, int]  # (seed, epoch, position): one training clip's own random stream
Box = tuple[int, int, int]  # (top, left, side) of a square crop


@dataclass(frozen=True)
class Normalization:
    """How uint8 RGB becomes model input: ``(x / 255 - mean) / std`` per channel."""

    # The Kinetics statistics used by SlowFast and PyTorchVideo models.
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)

    def apply(self, clips: Tensor) -> Tensor:
        """uint8 ``(B, 3, T, H, W)`` -> float32 of the same shape, on the same device."""
        mean, std = _statistics(self, clips.device)
        return (clips.float() / 255.0 - mean) / std


@functools.lru_cache(maxsize=16)
def _statistics(normalization: Normalization, device: torch.device) -> tuple[Tensor, Tensor]:
    """Made once per device: a tensor made from Python numbers on a GPU is a copy that waits for
    everything queued before it, which at every step would stall the loop feeding the GPU."""
    with torch.inference_mode(False):  # kept for later calls, scoring's or training's
        mean = torch.tensor(normalization.mean, device=device).view(1, 3, 1, 1, 1)
        return mean, torch.tensor(normalization.std, device=device).view(1, 3, 1, 1, 1)


@dataclass(frozen=True)
class ClipSpec:
    """What a model was trained on: recorded with its results, needed again to run it."""

    num_frames: int
    frame_stride: int
    resolution: int
    normalization: Normalization = field(default_factory=Normalization)

    @classmethod
    def of(cls, genome: Genome) -> ClipSpec:
        return cls(genome.num_frames, genome.frame_stride, genome.resolution)

    @property
    def span(self) -> int:
        """Frames from the clip's first to its last, both included."""
        return (self.num_frames - 1) * self.frame_stride + 1


class FrameReader(Protocol):
    def num_frames(self, path: Path) -> int: ...

    def read(self, path: Path, indices: Sequence[int]) -> np.ndarray: ...


def frame_indices(video_frames: int, spec: ClipSpec, offset: int) -> list[int]:
    """Indices from ``offset``; a video shorter than the clip repeats its last frame."""
    return [min(offset + k * spec.frame_stride, video_frames - 1) for k in range(spec.num_frames)]


def clip_offsets(video_frames: int, spec: ClipSpec, num_clips: int) -> list[int]:
    """Where the evaluation clips of a video start: the middles of ``num_clips`` equal stretches
    of the starts a clip can take, to the nearest frame (halves down, so that one clip is the
    centred clip), so that several cover the video evenly. Ascending and distinct: a video with
    fewer starts than ``num_clips`` gives each start once."""
    free = max(video_frames - spec.span, 0)
    halves = 2 * num_clips
    return sorted({((2 * i + 1) * free + num_clips - 1) // halves for i in range(num_clips)})


def random_offset(video_frames: int, spec: ClipSpec, rng: np.random.Generator) -> int:
    return int(rng.integers(0, max(video_frames - spec.span, 0) + 1))


def crop_box(height: int, width: int, rng: np.random.Generator | None) -> Box:
    """(top, left, side) of a square: centred and full when ``rng`` is None, else random."""
    short = min(height, width)
    if rng is None:
        return (height - short) // 2, (width - short) // 2, short
    side = max(1, round(short * rng.uniform(MIN_TRAIN_CROP, 1.0)))
    return int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1)), side


def make_clip(frames: np.ndarray, resolution: int, box: Box, *, flip: bool) -> Tensor:
    """uint8 ``(T, H, W, 3)`` -> the box resized to ``resolution`` as uint8 ``(3, T, R, R)``."""
    top, left, side = box
    x = torch.from_numpy(np.ascontiguousarray(frames[:, top : top + side, left : left + side]))
    x = x.permute(0, 3, 1, 2)
    if side != resolution:
        # uint8 bilinear with antialias runs natively on CPU and keeps shrinking alias-free.
        x = F.interpolate(
            x.contiguous(), size=(resolution, resolution), mode="bilinear", antialias=True
        )
    if flip:
        x = x.flip(-1)
    return x.permute(1, 0, 2, 3).contiguous()


class ClipDataset(Dataset):
    """Clips and targets of ``videos``. Training items are ``(index, draw)`` pairs from
    ``ClipSampler``, so that every clip's randomness is fixed by the seed whatever the number of
    DataLoader workers. Evaluation items are plain indices into ``views``: ``num_clips`` fixed
    clips per video, each video's side by side (``video_of`` says whose each is)."""

    def __init__(
        self,
        frames: FrameReader,
        videos: Sequence[Video],
        spec: ClipSpec,
        *,
        num_classes: int,
        multi_label: bool,
        train: bool,
        flip: bool = True,
        num_clips: int = 1,
    ) -> None:
        self.frames, self.videos, self.spec = frames, list(videos), spec
        self.num_classes, self.multi_label = num_classes, multi_label
        self.train, self.flip = train, flip
        self.views: list[tuple[int, int]] = [] if train else self._views(num_clips)

    def _views(self, num_clips: int) -> list[tuple[int, int]]:
        """(video index, offset) of every evaluation clip."""
        return [
            (index, offset)
            for index, video in enumerate(self.videos)
            for offset in clip_offsets(self.frames.num_frames(video.path), self.spec, num_clips)
        ]

    @property
    def video_of(self) -> list[int]:
        """The video index of each evaluation item."""
        return [index for index, _ in self.views]

    def __len__(self) -> int:
        return len(self.videos) if self.train else len(self.views)

    def __getitem__(self, item: int | tuple[int, Draw]) -> tuple[Tensor, Tensor]:
        frames, box, flip, index = self.draw(item)
        return make_clip(frames, self.spec.resolution, box, flip=flip), self.target(index)

    def draw(self, item: int | tuple[int, Draw]) -> tuple[np.ndarray, Box, bool, int]:
        """The frames of ``item`` with its crop box and flip, and its video's index: the clip
        before it is cut out, whoever cuts it (``make_clip`` here, ``resize_on_device``)."""
        index = item[0] if isinstance(item, tuple) else self.views[item][0]
        video = self.videos[index]
        length = self.frames.num_frames(video.path)
        if isinstance(item, tuple):
            rng = np.random.default_rng(item[1])
            offset = random_offset(length, self.spec, rng)
        else:
            rng, offset = None, self.views[item][1]
        frames = self.frames.read(video.path, frame_indices(length, self.spec, offset))
        flip = bool(rng is not None and self.flip and rng.random() < 0.5)
        return frames, crop_box(frames.shape[1], frames.shape[2], rng), flip, index

    def target(self, index: int) -> Tensor:
        """Video ``index``'s class, or its 0/1 vector of classes when multi-label."""
        video = self.videos[index]
        if not self.multi_label:
            return torch.tensor(video.labels[0])
        target = torch.zeros(self.num_classes)
        target[list(video.labels)] = 1.0
        return target


class ClipSampler(Sampler):
    """Endless passes over ``size`` items, reshuffled each pass by ``seed``; yields
    ``(index, draw)`` where ``draw`` seeds that one clip's offset, crop and flip."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed

    def __iter__(self) -> Iterator[tuple[int, Draw]]:
        for epoch in count():
            order = np.random.default_rng((self.seed, epoch)).permutation(self.size)
            for position, index in enumerate(order):
                yield int(index), (self.seed, epoch, position)
