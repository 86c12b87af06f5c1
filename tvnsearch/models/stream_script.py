"""Streaming networks as TorchScript with explicit state: runs where tvnsearch is not installed.

The saved module (``torch.jit.load``) has::

    forward(frame (B, 3, H, W), state: List[Tensor]) -> (logits (B, num_classes), new state)
    initial_state(batch_size: int) -> List[Tensor]   # zeros; state[0] is the int64 frame counter
    clip_logits(state) -> Tensor                      # mean over the output steps so far
    state_shapes: List[List[int]]                     # shapes of state[1:] without the batch

It is the very code of ``StreamingTVN.step`` compiled, so it equals ``step`` up to float rounding.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from tvnsearch.files import atomic_write_bytes
from tvnsearch.models.streaming import StreamingTVN


class FrameStream(nn.Module):
    """A streaming network as the exported module presents it: one frame per call."""

    def __init__(self, model: StreamingTVN) -> None:
        super().__init__()
        self.model = model
        self.state_shapes = model.state_shapes

    def forward(self, frame: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        return self.model.step(frame, state)

    @torch.jit.export
    def initial_state(self, batch_size: int = 1) -> list[Tensor]:
        return self.model.initial_state(batch_size)

    @torch.jit.export
    def clip_logits(self, state: list[Tensor]) -> Tensor:
        return self.model.clip_logits(state)


def script_stream(model: StreamingTVN) -> torch.jit.ScriptModule:
    """The compiled ``FrameStream`` of ``model`` (put in evaluation mode)."""
    with _without_deprecation():
        return torch.jit.script(FrameStream(model.eval()))


def export_stream(model: StreamingTVN, path: str | Path) -> None:
    """Save ``script_stream(model)`` to ``path``; the file appears whole or not at all."""
    buffer = io.BytesIO()
    scripted = script_stream(model)
    with _without_deprecation():
        torch.jit.save(scripted, buffer)
    atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def _without_deprecation() -> Iterator[None]:
    # TorchScript is deprecated in favour of torch.export, which cannot express a step whose
    # work depends on the frame counter without rewriting every branch as torch.cond.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield
