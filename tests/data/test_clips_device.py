from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from tvnsearch.data.clips import ClipDataset, ClipSampler, ClipSpec
from tvnsearch.data.datasets import Video
from tvnsearch.data.device_clips import (
    CropBatch,
    CropDataset,
    collate_crops,
    resize_on_device,
    resize_weights,
)


class NoiseFrames:
    """Random videos of 12 frames, odd-numbered ones of another frame size (as a dataset's
    videos may be), each the same whenever read."""

    def num_frames(self, path: Path) -> int:
        return 12

    def read(self, path: Path, indices: Sequence[int]) -> np.ndarray:
        v = int(path.stem)
        size = (40, 60) if v % 2 == 0 else (50, 44)
        video = np.random.default_rng(v).integers(0, 256, (12, *size, 3), dtype=np.uint8)
        return video[list(indices)]


VIDEOS = [Video(Path(f"{v}.npy"), (v % 3,)) for v in range(6)]


def datasets(resolution: int) -> tuple[ClipDataset, CropDataset]:
    spec = ClipSpec(num_frames=3, frame_stride=2, resolution=resolution)
    common = {"num_classes": 3, "multi_label": False, "train": True}
    return (
        ClipDataset(NoiseFrames(), VIDEOS, spec, **common),
        CropDataset(NoiseFrames(), VIDEOS, spec, **common),
    )


def items(count: int, seed: int = 0) -> list:
    return list(islice(iter(ClipSampler(len(VIDEOS), seed)), count))


def test_a_crop_is_the_box_of_the_draw_that_clip_dataset_makes() -> None:
    whole, crops = datasets(32)
    for item in items(12):
        frames, (top, left, side), flip, index = whole.draw(item)
        crop, crop_flip, target = crops[item]
        assert crop.dtype == torch.uint8 and crop.shape == (3, side, side, 3)
        assert np.array_equal(crop.numpy(), frames[:, top : top + side, left : left + side])
        assert crop_flip == flip and torch.equal(target, whole.target(index))


@pytest.mark.parametrize("resolution", [16, 40, 64])  # shrunk, about the crop's size, enlarged
def test_clips_cut_on_the_device_are_make_clips_within_one_level(resolution: int) -> None:
    whole, crops = datasets(resolution)
    drawn = items(18)
    expected = torch.stack([whole[i][0] for i in drawn])
    batch = collate_crops([crops[i] for i in drawn], resolution)
    assert batch.frames.shape[-2] == max(crops[i][0].shape[1] for i in drawn)  # padded
    got = resize_on_device(batch.frames, batch.rows, batch.columns)
    assert got.dtype == torch.uint8 and got.shape == expected.shape
    difference = got.int() - expected.int()
    # Rounding alone: PyTorch's uint8 kernel rounds its intermediate image and fixed-point
    # weights, off by one at some pixels of noise, either way, none further.
    assert difference.abs().max() <= 1 and difference.abs().float().mean() < 0.25
    assert abs(difference.float().mean()) < 0.05
    assert torch.equal(batch.targets, torch.stack([whole[i][1] for i in drawn]))


def test_resize_weights_sum_to_one_over_the_crop_and_leave_the_padding_out() -> None:
    sides = torch.tensor([30, 20, 7])
    weights = resize_weights(sides, 32, 16)
    assert weights.shape == (3, 16, 32) and weights.dtype == torch.float32
    assert torch.allclose(weights.sum(-1), torch.ones(3, 16))
    for b, side in enumerate(sides.tolist()):
        assert (weights[b, :, side:] == 0).all() and (weights[b, :, :side] >= 0).all()
    same = resize_weights(torch.tensor([16]), 16, 16)[0]
    assert torch.equal(same, torch.eye(16))  # a crop of the clip's size is kept as it is


def test_a_flipped_clip_is_the_unflipped_one_mirrored() -> None:
    frames = torch.randint(0, 256, (2, 4, 24, 24, 3), dtype=torch.uint8)
    frames[1] = frames[0]
    items = [
        (f[:, :20, :20], flip, torch.tensor(0))
        for f, flip in zip(frames, (False, True), strict=True)
    ]
    batch = collate_crops(items, 12)
    clips = resize_on_device(batch.frames, batch.rows, batch.columns)
    assert torch.equal(clips[1], clips[0].flip(-1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_cuts_the_clips_that_the_cpu_cuts() -> None:
    _, crops = datasets(24)
    batch = collate_crops([crops[i] for i in items(16)], 24)
    on_cpu = resize_on_device(batch.frames, batch.rows, batch.columns)
    on_gpu = resize_on_device(*batch.to(torch.device("cuda"))[:3])
    assert on_gpu.is_cuda and (on_gpu.cpu().int() - on_cpu.int()).abs().max() <= 1


def test_a_batch_moves_to_a_device_whole() -> None:
    batch = CropBatch(*(torch.zeros(2) for _ in range(4)))
    moved = batch.to(torch.device("cpu"))
    assert isinstance(moved, CropBatch) and all(
        torch.equal(a, b) for a, b in zip(moved, batch, strict=True)
    )
