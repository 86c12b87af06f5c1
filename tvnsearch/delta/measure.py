"""How much delta inference saves on a frame sequence: per-layer sparsity, wall-clock speedup.

The same frames run three ways, one frame per call: the network as given, the network with its
batch norms folded (the dense baseline the speedup is measured against, so that folding is not
counted as delta's gain), and the delta network. The three take turns frame by frame, so that a
burst of load on a shared machine slows all three alike; each variant's time is its best total
over ``rounds`` passes, on the threads torch is set to use. Freed memory is kept in the heap, as
the profiler does, so that no variant pays page faults the others do not.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from tvnsearch.data.clips import Normalization
from tvnsearch.data.synth import SynthConfig, render_video
from tvnsearch.data.video import decode_video, encode_video
from tvnsearch.delta.network import DeltaNetwork, DeltaSummary, enable_delta
from tvnsearch.measure.timing import keep_freed_memory
from tvnsearch.models.inference import inference_copy


@dataclass(frozen=True)
class DeltaMeasurement:
    num_frames: int
    threshold: float
    refresh_limit: float
    dense_ms: float  # per frame, the network as given
    folded_ms: float  # per frame, batch norms folded: the baseline
    delta_ms: float  # per frame
    max_error: float  # largest |delta - folded| output, relative to the largest |output|
    layers: DeltaSummary  # of the last delta pass
    folded_layer_ms: dict[str, float]  # per frame, each delta layer's dense counterpart

    @property
    def speedup(self) -> float:
        return self.folded_ms / self.delta_ms


def measure_delta(
    model: nn.Module,
    frames: Tensor,
    *,
    threshold: float = 0.0,
    refresh_limit: float = 0.05,
    all_layers: bool = False,
    rounds: int = 3,
) -> DeltaMeasurement:
    """Run ``frames`` ``(T, C, H, W)`` through ``model`` as clips ``(1, C, 1, H, W)``.

    The per-layer statistics come from one more delta pass, the one checked against the folded
    network's outputs.
    """
    if frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"frames must be (T >= 2, C, H, W), but got {tuple(frames.shape)=}.")
    keep_freed_memory()
    model = copy.deepcopy(model).eval()
    folded = inference_copy(model)
    delta = enable_delta(
        model, threshold=threshold, refresh_limit=refresh_limit, all_layers=all_layers
    )
    clips = [f[None, :, None] for f in frames]
    with torch.inference_mode():
        runs = [model, folded, delta]
        dense_ms, folded_ms, delta_ms = _interleaved_ms(runs, delta, clips, rounds)
        error = _max_error(folded, delta, clips)
        layer_ms = _layer_ms(folded, list(delta.delta_layers), clips)
    return DeltaMeasurement(
        len(clips),
        threshold,
        refresh_limit,
        dense_ms,
        folded_ms,
        delta_ms,
        error,
        delta.summary(),
        layer_ms,
    )


def static_camera_frames(
    size: int, num_frames: int, *, seed: int = 0, through_codec: bool = False
) -> Tensor:
    """A synthetic static-camera video, normalised as for training: ``(T, 3, H, W)``.

    A disc moves over a static textured background (``tvnsearch.data.synth``). Rendered frames keep
    the background bit-identical; ``through_codec`` writes and decodes them as MPEG-4 first,
    which adds the small frame-to-frame noise every real video has.
    """
    config = SynthConfig(size=size, num_frames=num_frames)
    video = render_video("red_down", config, np.random.default_rng(seed))
    if through_codec:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "video.mp4"
            encode_video(path, video, fps=config.fps, options={"b": str(500 * size * size)})
            video = decode_video(path)
    clips = torch.from_numpy(video).permute(3, 0, 1, 2)[None]  # (1, 3, T, H, W)
    return Normalization().apply(clips)[0].transpose(0, 1).contiguous()


def _interleaved_ms(
    runs: list[nn.Module], delta: DeltaNetwork, clips: list[Tensor], rounds: int
) -> list[float]:
    """Per frame, each network's best total over the rounds (the first round warms up)."""
    best = [float("inf")] * len(runs)
    for round_ in range(rounds + 1):
        delta.reset()
        totals = [0] * len(runs)
        for clip in clips:
            for i, run in enumerate(runs):
                start = time.perf_counter_ns()
                run(clip)
                totals[i] += time.perf_counter_ns() - start
        if round_ > 0:
            best = [min(b, t) for b, t in zip(best, totals, strict=True)]
    return [b / 1e6 / len(clips) for b in best]


def _max_error(folded: nn.Module, delta: DeltaNetwork, clips: list[Tensor]) -> float:
    delta.reset()
    delta.clear_stats()
    expected = torch.stack([folded(c) for c in clips])
    got = torch.stack([delta(c) for c in clips])
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def _layer_ms(folded: nn.Module, names: list[str], clips: list[Tensor]) -> dict[str, float]:
    """Per frame, the time in each named layer of the folded network, timed by hooks."""
    spent = dict.fromkeys(names, 0)
    starts: dict[str, int] = {}
    hooks = []
    for name in names:
        module = folded.get_submodule(name)
        hooks.append(module.register_forward_pre_hook(_starter(starts, name)))
        hooks.append(module.register_forward_hook(_stopper(starts, spent, name)))
    for clip in clips:
        folded(clip)
    for hook in hooks:
        hook.remove()
    return {name: ns / 1e6 / len(clips) for name, ns in spent.items()}


def _starter(starts: dict[str, int], name: str) -> Callable[..., None]:
    def hook(*_: object) -> None:
        starts[name] = time.perf_counter_ns()

    return hook


def _stopper(starts: dict[str, int], spent: dict[str, int], name: str) -> Callable[..., None]:
    def hook(*_: object) -> None:
        spent[name] += time.perf_counter_ns() - starts[name]

    return hook
