"""Scoring a trained network on a split it was never selected on: ``tvnsearch evaluate``.

A search selects on ``val``; the ``test`` split (``tvnsearch.data.datasets``) is the honest
estimate of what the network it found will do. Each video is scored on ``num_clips`` fixed clips
spread over its length, their logits averaged, as validation scores them
(``tvnsearch.train.training.score_videos``). The dataset's classes are matched to the network's
by name, so a test list may name fewer classes, or list them in another order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tvnsearch.data.clips import ClipDataset
from tvnsearch.data.datasets import Video, load_dataset
from tvnsearch.data.frame_cache import FrameCache, Skipped
from tvnsearch.errors import InputError, Problem
from tvnsearch.measure.affinity import usable_cores
from tvnsearch.train.inputs import auto_workers
from tvnsearch.train.training import score_videos
from tvnsearch.train.weights import load_model

SPLITS = ("test", "val", "train")


@dataclass(frozen=True)
class Evaluated:
    split: str
    num_videos: int  # scored (readable)
    num_clips: int  # per video
    scores: dict[str, float]  # top1, top5, fitness and its noise; or mean_ap
    skipped: tuple[Skipped, ...] = ()  # unreadable videos, left out

    def to_dict(self) -> dict[str, Any]:
        skipped = [{"path": str(s.path), "reason": s.reason} for s in self.skipped]
        return {**dataclasses.asdict(self), "skipped": skipped}


def evaluate_weights(
    weights: str | Path,
    data_path: str | Path,
    cache: FrameCache,
    *,
    split: str = "test",
    num_clips: int = 10,
    batch_size: int = 16,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    device: str = "cpu",
    on_video: Callable[[int, int], None] | None = None,
) -> Evaluated:
    """Score the network of ``weights`` (a safetensors file as exports hold) on ``split`` of the
    dataset at ``data_path``; ``val_fraction`` and ``split_seed`` rebuild a seeded split."""
    model, info = load_model(weights)
    dataset = load_dataset(data_path, val_fraction=val_fraction, seed=split_seed)
    videos = _in_model_classes(dataset.split(split), dataset.classes, info.classes, split)
    if not videos:
        raise InputError(dataset.source, [Problem(f"{split} split", "has no videos")])
    paths = [v.path for v in videos]
    threads = len(usable_cores())  # PyAV decodes without the GIL
    index = cache.index(paths, source=dataset.source, num_workers=threads, on_video=on_video)
    readable = [v for v in videos if v.path in index.entries]
    if not readable:
        raise InputError(dataset.source, [Problem(f"{split} split", "has no readable video")])
    clips = ClipDataset(
        index,
        readable,
        info.clip,
        num_classes=info.num_classes,
        multi_label=info.multi_label,
        train=False,
        num_clips=num_clips,
    )
    target = torch.device(device)
    workers = auto_workers(target)
    scores = score_videos(
        model.to(target), clips, batch_size=batch_size, num_workers=workers, device=target
    )
    return Evaluated(split, len(readable), num_clips, scores, index.skipped)


def _in_model_classes(
    videos: tuple[Video, ...], names: tuple[str, ...], classes: tuple[str, ...], split: str
) -> list[Video]:
    """``videos`` with their labels as the network's class indices (matched by name)."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({names[i] for v in videos for i in v.labels} - index.keys())
    if unknown:
        why = f"has classes the network does not know: {unknown[:5]}"
        raise InputError(f"{split} split", [Problem("labels", why)])
    return [
        dataclasses.replace(v, labels=tuple(sorted(index[names[i]] for i in v.labels)))
        for v in videos
    ]
