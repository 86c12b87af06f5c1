"""Training clips finished on the GPU: the loader's workers only read and cut.

A worker sends each clip's square crop of frames, drawn exactly as ``ClipDataset`` draws it
(offset, box, flip), with the weights of its resize; on the device, resizing and flipping a whole
batch are two batched matrix products:

    worker:  read frames -> cut the box -> pad to the batch's largest box  (uint8, pinned)
    device:  (B, 3, T, S, S) --rows @ . @ columns^T--> (B, 3, T, R, R) uint8

It pays where a GPU has a single worker to feed it: the worker's CPU resize is then the slowest
part of a tiny genome's step (on an H200, 25 % more steps/s). With more workers the crops, larger
than the clips, cost more to move than the resize saves (``TrainConfig.augment_on_device``).

The clips are ``make_clip``'s for the same draws to within one level of 255: PyTorch's uint8
kernel rounds fixed-point weights and an intermediate image, this one neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from tvnsearch.data.clips import ClipDataset, Draw


class CropDataset(ClipDataset):
    """A ``ClipDataset`` whose items are their clips' crops, not yet resized nor flipped:
    ``(frames, flip, target)`` with frames uint8 ``(T, side, side, 3)``."""

    def __getitem__(self, item: int | tuple[int, Draw]) -> tuple[Tensor, bool, Tensor]:
        frames, (top, left, side), flip, index = self.draw(item)
        crop = np.ascontiguousarray(frames[:, top : top + side, left : left + side])
        return torch.from_numpy(crop), flip, self.target(index)


class CropBatch(NamedTuple):
    """Crops and their resize for ``resize_on_device``. A NamedTuple: the DataLoader pins it
    field by field."""

    frames: Tensor  # uint8 (B, T, S, S, 3): each crop at the top left, zeros beside it
    rows: Tensor  # float32 (B, R, S): output row r of clip b weighs these input rows
    columns: Tensor  # float32 (B, R, S): the same across, reversed for a flipped clip
    targets: Tensor

    def to(self, device: torch.device) -> CropBatch:
        """On ``device``, without waiting for the copies (from pinned memory, they overlap)."""
        return CropBatch(*(t.to(device, non_blocking=True) for t in self))


def collate_crops(items: Sequence[tuple[Tensor, bool, Tensor]], resolution: int) -> CropBatch:
    """A ``CropDataset``'s items as one batch: crops of different sides (and videos of different
    frame sizes) padded to the largest, which the weights of the others leave out."""
    side = max(frames.shape[1] for frames, _, _ in items)
    batch = torch.zeros((len(items), items[0][0].shape[0], side, side, 3), dtype=torch.uint8)
    for i, (frames, _, _) in enumerate(items):
        batch[i, :, : frames.shape[1], : frames.shape[2]] = frames
    rows = resize_weights(torch.tensor([f.shape[1] for f, _, _ in items]), side, resolution)
    flips = torch.tensor([flip for _, flip, _ in items])
    columns = torch.where(flips[:, None, None], rows.flip(1), rows)
    return CropBatch(batch, rows, columns, torch.stack([target for *_, target in items]))


def resize_weights(sides: Tensor, size: int, resolution: int) -> Tensor:
    """float32 ``(B, resolution, size)``: how PyTorch's antialiased bilinear resize of the
    first ``sides[b]`` of ``size`` pixels weighs each into each output pixel. A triangle filter
    centred on the output pixel, widened by the shrinking factor (antialiasing), its weights over
    the pixels inside the crop normalised to sum to 1 (``_compute_weights_aa`` of ATen)."""
    scale = sides.double() / resolution
    support = scale.clamp(min=1.0)  # the filter's half-width in input pixels
    centre = scale[:, None] * (torch.arange(resolution, dtype=torch.float64) + 0.5)
    pixel = torch.arange(size, dtype=torch.float64)
    distance = (pixel[None, None, :] + 0.5 - centre[:, :, None]) / support[:, None, None]
    inside = (pixel[None, :] < sides[:, None])[:, None, :]
    weights = (1.0 - distance.abs()).clamp(min=0.0) * inside
    return (weights / weights.sum(-1, keepdim=True)).float()


def resize_on_device(frames: Tensor, rows: Tensor, columns: Tensor) -> Tensor:
    """uint8 ``(B, 3, T, R, R)`` clips from a ``CropBatch``'s frames and weights, on their
    device: each frame is ``rows @ frame @ columns^T`` per channel, rounded."""
    b, t, s, _, _ = frames.shape
    x = frames.permute(0, 4, 1, 2, 3).to(torch.float32, memory_format=torch.contiguous_format)
    x = torch.matmul(rows[:, None], x.view(b, 3 * t, s, s))  # (B, 3T, R, S)
    x = torch.matmul(x, columns[:, None].transpose(-1, -2))  # (B, 3T, R, R)
    # Weights that sum to 1 keep every value within [0, 255] up to rounding error.
    return x.round_().to(torch.uint8).view(b, 3, t, *x.shape[-2:])
