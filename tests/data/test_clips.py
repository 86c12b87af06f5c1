from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from tvnsearch.data.clips import (
    MIN_TRAIN_CROP,
    ClipDataset,
    ClipSampler,
    ClipSpec,
    Normalization,
    clip_offsets,
    crop_box,
    frame_indices,
    make_clip,
    random_offset,
)
from tvnsearch.data.datasets import Video


class ArrayFrames:
    """Frames from memory: each pixel of frame t in video v holds the value 10 * v + t."""

    def __init__(self, lengths: dict[Path, int], height: int = 40, width: int = 60) -> None:
        self.lengths, self.height, self.width = lengths, height, width

    def num_frames(self, path: Path) -> int:
        return self.lengths[path]

    def read(self, path: Path, indices: Sequence[int]) -> np.ndarray:
        v = int(path.stem)
        values = np.array([10 * v + i for i in indices], dtype=np.uint8)
        return np.broadcast_to(
            values[:, None, None, None], (len(indices), self.height, self.width, 3)
        )


def test_frame_indices_stride_and_short_videos() -> None:
    spec = ClipSpec(num_frames=4, frame_stride=3, resolution=32)
    assert spec.span == 10
    assert frame_indices(20, spec, 5) == [5, 8, 11, 14]
    assert frame_indices(7, spec, 0) == [0, 3, 6, 6]  # too short: the last frame repeats
    assert frame_indices(1, spec, 0) == [0, 0, 0, 0]  # a one-frame video


def test_offsets_centred_for_evaluation_and_random_within_range_for_training() -> None:
    spec = ClipSpec(num_frames=4, frame_stride=2, resolution=32)  # span 7
    assert clip_offsets(17, spec, 1) == [5] and clip_offsets(3, spec, 1) == [0]
    rng = np.random.default_rng(0)
    offsets = {random_offset(17, spec, rng) for _ in range(500)}
    assert offsets == set(range(11))


def test_crop_box() -> None:
    assert crop_box(40, 60, None) == (0, 10, 40)
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, side = crop_box(40, 60, rng)
        assert round(40 * MIN_TRAIN_CROP) <= side <= 40
        assert 0 <= top <= 40 - side and 0 <= left <= 60 - side


def test_make_clip_resizes_to_a_uint8_clip_and_flips() -> None:
    frames = np.zeros((3, 20, 30, 3), np.uint8)
    frames[:, :, :15] = 200  # left half bright
    clip = make_clip(frames, 16, (0, 5, 20), flip=False)
    assert clip.shape == (3, 3, 16, 16) and clip.dtype == torch.uint8
    assert clip[..., :4].float().mean() > 150 and clip[..., -4:].float().mean() < 50
    flipped = make_clip(frames, 16, (0, 5, 20), flip=True)
    assert torch.equal(flipped, clip.flip(-1))


def test_normalization_is_per_channel() -> None:
    norm = Normalization(mean=(0.5, 0.0, 1.0), std=(0.5, 1.0, 0.25))
    x = torch.full((1, 3, 1, 1, 1), 255, dtype=torch.uint8)
    assert norm.apply(x).flatten().tolist() == pytest.approx([1.0, 1.0, 0.0])


def test_normalization_first_made_while_scoring_serves_training() -> None:
    """Its statistics are made once per device and kept: made under inference mode (scoring),
    they must still be usable where autograd saves them."""
    norm = Normalization(mean=(0.3, 0.2, 0.1), std=(0.4, 0.5, 0.6))  # a fresh one: not cached
    x = torch.full((2, 3, 1, 2, 2), 128, dtype=torch.uint8)
    with torch.inference_mode():
        scored = norm.apply(x)
    trained = norm.apply(x.float().requires_grad_())  # the division saves std for backward
    trained.sum().backward()
    assert torch.equal(trained.detach(), scored.clone())


def dataset(train: bool, multi_label: bool = False) -> ClipDataset:
    lengths = {Path(f"{v}.mp4"): 12 for v in range(4)}
    videos = [Video(p, (i % 3,) if not multi_label else (0, 2)) for i, p in enumerate(lengths)]
    spec = ClipSpec(num_frames=3, frame_stride=2, resolution=16)
    return ClipDataset(
        ArrayFrames(lengths), videos, spec, num_classes=3, multi_label=multi_label, train=train
    )


def test_evaluation_clips_are_centred_and_fixed() -> None:
    clip, target = dataset(train=False)[1]
    assert clip.shape == (3, 3, 16, 16) and target.item() == 1
    # 12 frames, span 5: offset 3, frames 3, 5, 7 of video 1.
    assert clip[0, :, 0, 0].tolist() == [13, 15, 17]


def test_several_evaluation_clips_spread_evenly_and_one_is_the_centred_clip() -> None:
    spec = ClipSpec(num_frames=4, frame_stride=2, resolution=32)  # span 7
    # 31 frames: starts 0..24, in three stretches whose middles are 4, 12 and 20.
    assert clip_offsets(31, spec, 3) == [4, 12, 20]
    assert clip_offsets(31, spec, 1) == [12]  # the centred clip: (31 - 7) // 2
    for length in range(1, 60):
        for n in (1, 2, 3, 5):
            offsets = clip_offsets(length, spec, n)
            assert offsets == sorted(set(offsets)) and offsets[0] >= 0
            free = max(length - spec.span, 0)
            assert offsets[-1] <= free and len(offsets) == min(n, free + 1)
    assert clip_offsets(7, spec, 3) == [0] and clip_offsets(8, spec, 3) == [0, 1]  # too short
    assert clip_offsets(18, spec, 3) == [2, 5, 9]  # middles 1 5/6, 5 1/2, 9 1/6: halves down


def test_several_evaluation_clips_per_video_side_by_side() -> None:
    lengths = {Path(f"{v}.mp4"): n for v, n in enumerate((12, 5))}  # span 5: video 1 fits one
    videos = [Video(p, (0,)) for p in lengths]
    spec = ClipSpec(num_frames=3, frame_stride=2, resolution=16)
    ds = ClipDataset(
        ArrayFrames(lengths),
        videos,
        spec,
        num_classes=3,
        multi_label=False,
        train=False,
        num_clips=3,
    )
    # Video 0: starts 0..7 in three stretches, middles 1 1/6, 3 1/2, 5 5/6; video 1: only 0.
    assert ds.views == [(0, 1), (0, 3), (0, 6), (1, 0)] and ds.video_of == [0, 0, 0, 1]
    assert len(ds) == 4
    assert [ds[i][0][0, :, 0, 0].tolist() for i in range(4)] == [
        [1, 3, 5],
        [3, 5, 7],
        [6, 8, 10],
        [10, 12, 14],
    ]


def test_training_clips_follow_their_draw_only() -> None:
    ds = dataset(train=True)
    a, _ = ds[(2, (0, 0, 5))]
    b, _ = ds[(2, (0, 0, 5))]
    assert torch.equal(a, b)
    starts = {ds[(2, (0, 0, k))][0][0, 0, 0, 0].item() - 20 for k in range(60)}
    assert starts == set(range(8))  # every offset 0..12-5


def test_multi_label_targets_are_multi_hot() -> None:
    _, target = dataset(train=False, multi_label=True)[0]
    assert target.tolist() == [1.0, 0.0, 1.0]


def test_sampler_reshuffles_every_pass_and_is_seeded() -> None:
    items = list(islice(ClipSampler(5, seed=3), 15))
    passes = [sorted(i for i, _ in items[k : k + 5]) for k in (0, 5, 10)]
    assert passes == [[0, 1, 2, 3, 4]] * 3
    assert [i for i, _ in items[:5]] != [i for i, _ in items[5:10]]
    assert items == list(islice(ClipSampler(5, seed=3), 15))
    assert items != list(islice(ClipSampler(5, seed=4), 15))
    assert len({draw for _, draw in items}) == 15
