"""Partial training: one genome, a fixed number of iterations, scored on the validation split.

Each validation video is scored on ``TrainConfig.val_clips`` fixed clips spread evenly over its
length (``tvnsearch.data.clips.clip_offsets``), their logits averaged into the video's; the result
keeps fitness's standard error over the validation videos (``tvnsearch.train.metrics``).

``train_genome`` never raises for a candidate's own failure: a loss that turns NaN or infinite,
running out of memory, or any exception while building, training or scoring gives a FAILED
result with the reason, so a search goes on. Training is deterministic under ``TrainConfig.seed``
on CPU (same seed, same fitness, whatever the number of DataLoader workers); the caller's global
random state is left as it was.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tvnsearch.data.clips import ClipDataset, ClipSpec, FrameReader
from tvnsearch.data.datasets import VideoDataset, load_dataset
from tvnsearch.data.frame_cache import FrameCache, Skipped
from tvnsearch.errors import InputError, Problem, describe_error
from tvnsearch.genome.genes import Genome
from tvnsearch.models.builder import build_model
from tvnsearch.status import Status
from tvnsearch.train.config import TrainConfig
from tvnsearch.train.fidelity import Cuts, RungFitness, goes_on, rungs_of
from tvnsearch.train.inputs import (
    loader_options,
    loader_workers,
    to_channels_last,
    train_batches,
    uses_channels_last,
)
from tvnsearch.train.metrics import multi_class_scores, multi_label_scores
from tvnsearch.train.weights import inherit


@dataclass(frozen=True)
class TrainResult:
    status: Status
    reason: str | None
    fitness: float | None  # top1 + top5 (multi-class) or mean_ap (multi-label)
    # Standard error of fitness over the validation videos (not over training seeds: see
    # ``tvnsearch.train.metrics``); None when failed or with fewer than two videos.
    fitness_noise: float | None
    top1: float | None
    top5: float | None  # top-k accuracy with k = min(5, num_classes)
    mean_ap: float | None
    iterations: int  # completed: ``TrainConfig.iterations``, or the rung where it stopped
    final_loss: float | None
    train_seconds: float
    eval_seconds: float
    num_train_videos: int
    num_val_videos: int
    clip: ClipSpec  # the input the scores were measured on: needed to run the model again
    traceback: str | None = None  # of the exception that failed it; ``reason`` is its first line
    rungs: RungFitness = ()  # (iterations, fitness) at each rung scored, the last ``fitness``
    inherited: float = 0.0  # the share of parameters that started from the parent's weights

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        head = (
            f"{self.status} after {self.iterations} iterations in {self.train_seconds:.1f} s "
            f"(+{self.eval_seconds:.1f} s scoring; {self.num_train_videos} train / "
            f"{self.num_val_videos} val videos)"
        )
        if self.status == Status.FAILED:
            return f"{head}\nreason: {self.reason}"
        if len(self.rungs) > 1:
            steps = ", ".join(f"{f:.4f} at {i}" for i, f in self.rungs)
            head += f"\nfitness at each rung: {steps}"
        fitness = f"fitness {self.fitness:.4f}"
        if self.fitness_noise is not None:
            fitness += f" ± {self.fitness_noise:.4f} (standard error over the validation videos)"
        if self.mean_ap is not None:
            return f"{head}\nmAP {self.mean_ap:.4f}  {fitness}"
        return f"{head}\ntop-1 {self.top1:.4f}  top-5 {self.top5:.4f}  {fitness}"


@dataclass(frozen=True)
class TrainData:
    """A dataset whose videos can all be read from ``frames`` (unreadable ones were dropped)."""

    dataset: VideoDataset
    frames: FrameReader
    skipped: tuple[Skipped, ...] = ()


def prepare_data(
    path: str | Path,
    cache: FrameCache,
    *,
    strict: bool = False,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    num_workers: int | None = None,
    on_video: Callable[[int, int], None] | None = None,
    leave_out: frozenset[Path] = frozenset(),
) -> TrainData:
    """Read the dataset, decode every video into ``cache`` once, drop (or, strict, refuse) the
    unreadable ones and those of ``leave_out`` (found unreadable elsewhere). Every candidate of
    a search then reads the same ``TrainData``. ``on_video(done, total)`` follows the decoding
    (``FrameCache.index``)."""
    dataset = load_dataset(path, val_fraction=val_fraction, seed=split_seed)
    paths = [v.path for v in dataset.videos]
    # Decoding threads: PyAV decodes without holding the GIL.
    workers = num_workers or os.cpu_count() or 1
    index = cache.index(
        paths,
        strict=strict,
        source=dataset.source,
        num_workers=workers,
        on_video=on_video,
        leave_out=leave_out,
    )
    train = tuple(v for v in dataset.train if v.path in index.entries)
    val = tuple(v for v in dataset.val if v.path in index.entries)
    empty = [
        Problem(f"{n} split", "has no readable video")
        for n, s in [("train", train), ("val", val)]
        if not s
    ]
    if empty:
        raise InputError(dataset.source, empty)
    return TrainData(dataclasses.replace(dataset, train=train, val=val), index, index.skipped)


@dataclass
class _Progress:  # what a failure report can still say
    iterations: int = 0
    loss: float | None = None
    train_seconds: float = 0.0
    on_step: Callable[[int, int], None] | None = None


class _Diverged(Exception):
    pass


def train_genome(
    genome: Genome,
    data: TrainData,
    config: TrainConfig,
    cuts: Cuts = (),
    *,
    parent_weights: bytes | None = None,
) -> TrainResult:
    """Train ``genome`` for ``config.iterations`` steps on ``data`` and score it; with
    ``config.rungs > 1``, score it at each rung too and stop where it scores below that rung's
    cut (``cuts``, from ``tvnsearch.train.fidelity.RungHistory``; none given: it never stops).
    With ``parent_weights`` (a safetensors file's bytes), every tensor whose name and shape match
    starts from the parent's (``tvnsearch.train.weights.inherit``)."""
    return train_model(genome, data, config, cuts, parent_weights=parent_weights)[0]


def train_model(
    genome: Genome,
    data: TrainData,
    config: TrainConfig,
    cuts: Cuts = (),
    *,
    parent_weights: bytes | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[TrainResult, nn.Module | None]:
    """As ``train_genome``, with the trained model (in eval mode) when the result is trained.
    ``on_step(done, total)`` is told of every iteration (silent without it, as in a search's
    workers): the command line draws a progress bar with it."""
    progress = _Progress(on_step=on_step)
    started = time.perf_counter()
    try:
        device = torch.device(config.device)
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(config.seed)
            return _train_and_score(genome, data, config, cuts, parent_weights, device, progress)
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        why, story = f"out of memory: {describe_error(exc)}", traceback.format_exc()
    except _Diverged as exc:
        why, story = str(exc), None
    except Exception as exc:  # a candidate's failure is a result, not the end of a search
        why, story = describe_error(exc), traceback.format_exc()
    if progress.train_seconds == 0.0:
        progress.train_seconds = time.perf_counter() - started
    result = _result(genome, data, progress, Status.FAILED, why, {}, 0.0)
    return dataclasses.replace(result, traceback=story), None


def _train_and_score(
    genome: Genome,
    data: TrainData,
    config: TrainConfig,
    cuts: Cuts,
    parent_weights: bytes | None,
    device: torch.device,
    progress: _Progress,
) -> tuple[TrainResult, nn.Module | None]:
    dataset, clip = data.dataset, ClipSpec.of(genome)
    model = build_model(genome, dataset.num_classes)
    inherited = inherit(model, parent_weights) if parent_weights else 0.0
    model = model.to(device)
    if uses_channels_last(config, device):
        to_channels_last(model)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda" or None,  # one kernel for all parameters, not several each
    )
    warmup = max(1, round(config.iterations * config.warmup_fraction))
    # One schedule over the full budget, wherever training stops: a candidate that goes on past
    # a rung continues where it was, and every fitness at a rung is from the same point of it.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(learning_rate_factor, total=config.iterations, warmup=warmup)
    )
    loss_fn = (
        nn.BCEWithLogitsLoss()
        if dataset.multi_label
        else nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    )
    amp_dtype = _autocast_dtype(device, config)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    batches = train_batches(data.frames, dataset, clip, config, device)
    rungs = rungs_of(config.iterations, config.rungs, config.reduction_factor).iterations
    scored: list[tuple[int, float]] = []
    started, eval_seconds = time.perf_counter(), 0.0
    every = CHECK_EVERY.get(device.type, 50)
    for rung, end in enumerate(rungs):
        model.train()
        losses: list[Tensor] = []  # on the device since the last check
        for step in range(progress.iterations, end):
            x, targets = next(batches)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_fn(model(x), targets)
            losses.append(loss.detach())
            if len(losses) >= every or step + 1 == end:
                _check_losses(losses, step + 1, progress)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            progress.iterations = step + 1
            if progress.on_step is not None:
                progress.on_step(progress.iterations, config.iterations)
        scoring = time.perf_counter()
        scores = _score(model, data, clip, config, device, amp_dtype)
        eval_seconds += time.perf_counter() - scoring
        if math.isnan(scores["fitness"]):
            why = "no class has a positive video in the validation split, so mAP is undefined"
            progress.train_seconds = time.perf_counter() - started - eval_seconds
            return _result(genome, data, progress, Status.FAILED, why, {}, eval_seconds), None
        scored.append((end, scores["fitness"]))
        if rung < len(cuts) and not goes_on(scores["fitness"], cuts[rung]):
            break
    progress.train_seconds = time.perf_counter() - started - eval_seconds
    result = _result(genome, data, progress, Status.TRAINED, None, scores, eval_seconds)
    return dataclasses.replace(result, rungs=tuple(scored), inherited=inherited), model


# Steps between looks at the loss: each look waits for the device (a GPU runs ahead of the
# Python that feeds it); on the CPU a look costs nothing, and a diverged step is never taken.
CHECK_EVERY = {"cpu": 1}


def _check_losses(losses: list[Tensor], last_step: int, progress: _Progress) -> None:
    """``_Diverged`` at the first loss of ``losses`` (those up to step ``last_step``) that is not
    finite; the last one becomes ``progress.loss``. Empties ``losses``."""
    values = torch.stack(losses).float().cpu()
    losses.clear()
    progress.loss = float(values[-1])
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        first = int(bad[0])
        step = last_step - len(values) + first + 1
        raise _Diverged(f"loss became {float(values[first])} at iteration {step}")


def learning_rate_factor(step: int, *, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from 1 to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _autocast_dtype(device: torch.device, config: TrainConfig) -> torch.dtype | None:
    if device.type != "cuda" or not config.mixed_precision:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _score(
    model: nn.Module,
    data: TrainData,
    clip: ClipSpec,
    config: TrainConfig,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> dict[str, float]:
    ds = data.dataset
    clips = ClipDataset(
        data.frames,
        ds.val,
        clip,
        num_classes=ds.num_classes,
        multi_label=ds.multi_label,
        train=False,
        num_clips=config.val_clips,
    )
    num_batches = math.ceil(len(clips) / config.batch_size)  # a worker more would idle
    return score_videos(
        model,
        clips,
        batch_size=config.batch_size,
        num_workers=min(loader_workers(config, device), num_batches),
        seed=config.seed,
        device=device,
        amp_dtype=amp_dtype,
    )


@torch.inference_mode()
def score_videos(
    model: nn.Module,
    clips: ClipDataset,
    *,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    device: torch.device | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Scores of ``model`` on the videos of ``clips`` (an evaluation ``ClipDataset``: its fixed
    clips per video, their logits averaged per video): top-1, top-5 and fitness, or mean AP."""
    device = device or torch.device("cpu")
    # A private generator: iterating a loader draws its workers' base seed, and from the global
    # stream that would shift the dropout masks of the training that goes on after a rung.
    loader = DataLoader(
        clips,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(seed),
        **loader_options(num_workers, device),
    )
    model.eval()
    logits = []
    for x, _ in loader:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(clips.spec.normalization.apply(x.to(device, non_blocking=True)))
        logits.append(out.float())
    # Brought back once, not per batch: each copy back would wait for the GPU.
    per_clip = torch.cat(logits).cpu()
    per_video = _video_means(per_clip, torch.tensor(clips.video_of), len(clips.videos))
    targets = torch.stack([clips.target(i) for i in range(len(clips.videos))])
    if clips.multi_label:
        return multi_label_scores(per_video, targets)
    return multi_class_scores(per_video, targets)


def _video_means(logits: Tensor, video_of: Tensor, num_videos: int) -> Tensor:
    """The mean ``(num_videos, C)`` of each video's clip logits (``(N, C)``, ``video_of``
    ``(N,)``). Logits, not probabilities: their mean ranks the classes as the clips' evidence
    adds up, and a float32 softmax or sigmoid of a confident network rounds many scores to
    exactly 0 or 1, ties that top-k and AP would then break by position. A video of one clip
    keeps its logits bit for bit."""
    sums = torch.zeros(num_videos, logits.shape[1]).index_add_(0, video_of, logits)
    counts = torch.zeros(num_videos).index_add_(0, video_of, torch.ones(len(video_of)))
    return sums / counts[:, None]


def _result(
    genome: Genome,
    data: TrainData,
    progress: _Progress,
    status: Status,
    reason: str | None,
    scores: dict[str, float],
    eval_seconds: float,
) -> TrainResult:
    return TrainResult(
        status=status,
        reason=reason,
        fitness=scores.get("fitness"),
        fitness_noise=_finite(scores.get("fitness_noise")),
        top1=scores.get("top1"),
        top5=scores.get("top5"),
        mean_ap=scores.get("mean_ap"),
        iterations=progress.iterations,
        final_loss=_finite(progress.loss),
        train_seconds=progress.train_seconds,
        eval_seconds=eval_seconds,
        num_train_videos=len(data.dataset.train),
        num_val_videos=len(data.dataset.val),
        clip=ClipSpec.of(genome),
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
