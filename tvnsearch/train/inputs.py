"""The training loop's input side: DataLoader workers, and batches on the device, normalised.

On a CPU, clips are made whole in the loader (``ClipDataset``), as they always were: same seed,
same batches, bit for bit, whatever the number of workers. On CUDA with the setting
``augment_on_device``, the workers only read and cut each clip's crop, and the GPU resizes and
flips it (``tvnsearch.data.device_clips``) with the same draws. Batches come from pinned memory
without waiting for the copy: nothing here makes the Python that feeds a GPU wait for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tvnsearch.data.clips import ClipDataset, ClipSampler, ClipSpec, FrameReader
from tvnsearch.data.datasets import VideoDataset
from tvnsearch.data.device_clips import CropBatch, CropDataset, collate_crops, resize_on_device
from tvnsearch.measure.affinity import usable_cores
from tvnsearch.train.config import AUTO_WORKERS, TrainConfig

MAX_GPU_WORKERS = 8  # a tiny network's step on a GPU wants no more, and each is a process


def loader_workers(config: TrainConfig, device: torch.device) -> int:
    """``config.num_workers``, or where it is ``AUTO_WORKERS``, ``auto_workers(device)``."""
    return auto_workers(device) if config.num_workers == AUTO_WORKERS else config.num_workers


def auto_workers(device: torch.device) -> int:
    """As many DataLoader workers as help. None on a CPU: a worker competes with the training
    threads for the cores, and slowed CPU trainings down by 14-47 % on two cores (on one thread
    and on two: bench/data_scale_bench.py loader). On CUDA, the cores per GPU but one (the
    Python that feeds the GPU), at most 8."""
    if device.type != "cuda":
        return 0
    per_gpu = len(usable_cores()) // max(1, torch.cuda.device_count())
    return max(1, min(MAX_GPU_WORKERS, per_gpu - 1))


def loader_options(num_workers: int, device: torch.device) -> dict[str, Any]:
    """The DataLoader's keywords for ``num_workers`` on ``device``: pinned memory on CUDA (a
    copy from it does not wait), and workers that each keep two batches ready. Not persistent:
    training's loader is iterated once, endlessly; scoring's, once per rung, would keep its
    workers idle (and their memory held) through the training between rungs."""
    options: dict[str, Any] = {"num_workers": num_workers, "pin_memory": device.type == "cuda"}
    if num_workers:
        options["prefetch_factor"] = 2
    return options


def augments_on_device(config: TrainConfig, device: torch.device) -> bool:
    return config.augment_on_device and device.type == "cuda"


def uses_channels_last(config: TrainConfig, device: torch.device) -> bool:
    return config.channels_last and device.type == "cuda"


def train_batches(
    frames: FrameReader,
    dataset: VideoDataset,
    clip: ClipSpec,
    config: TrainConfig,
    device: torch.device,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless ``(inputs, targets)`` batches of ``dataset.train`` on ``device``: inputs
    normalised float32 ``(B, 3, T, R, R)``, in the order and with the draws of
    ``ClipSampler(config.seed)``."""
    on_device = augments_on_device(config, device)
    kind = CropDataset if on_device else ClipDataset
    clips = kind(
        frames,
        dataset.train,
        clip,
        num_classes=dataset.num_classes,
        multi_label=dataset.multi_label,
        train=True,
        flip=config.flip,
    )
    loader = DataLoader(
        clips,
        batch_size=config.batch_size,
        sampler=ClipSampler(len(clips), config.seed),
        collate_fn=partial(collate_crops, resolution=clip.resolution) if on_device else None,
        # A private generator: worker seeds must not draw from the (seeded) global stream, or
        # the dropout masks would change with the number of workers.
        generator=torch.Generator().manual_seed(config.seed),
        **loader_options(loader_workers(config, device), device),
    )
    layout = torch.channels_last_3d if uses_channels_last(config, device) else None
    for batch in loader:
        yield _on_device(batch, clip, device, layout)


def _on_device(
    batch: CropBatch | list[Tensor],
    clip: ClipSpec,
    device: torch.device,
    layout: torch.memory_format | None,
) -> tuple[Tensor, Tensor]:
    if isinstance(batch, CropBatch):
        crops = batch.to(device)
        clips, targets = resize_on_device(*crops[:3]), crops.targets
    else:
        clips, targets = (t.to(device, non_blocking=True) for t in batch)
    if layout is not None:
        clips = clips.contiguous(memory_format=layout)
    return clip.normalization.apply(clips), targets


def to_channels_last(model: nn.Module) -> None:
    """Its 2-D convolutions' weights in channels-last layout (the layers fold time or space into
    2-D kernels: ``tvnsearch.models.layers``); 5-D weights have no such layout to take."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.to(memory_format=torch.channels_last)
