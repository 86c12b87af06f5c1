"""Peak memory of a forward pass, free memory, and telling an out-of-memory from other errors.

Peak memory counts what the model holds (parameters, buffers, the clip) plus the most that the
forward pass allocates on top of it at any moment. On CUDA the caching allocator reports this
itself. On CPU there is no allocator statistic, and the process's resident size is blurred by
``malloc`` keeping freed pages, so the allocations are read from PyTorch's own allocator events
(``torch.profiler`` with ``profile_memory``): exact and repeatable, and they include the buffers
that kernels allocate inside an op, such as the attention matrix of a non-local layer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import psutil
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile


def peak_memory_bytes(model: nn.Module, clip: torch.Tensor) -> int:
    """Resident bytes of the model and clip plus the peak that one forward pass adds."""
    if clip.is_cuda:
        return _cuda_peak(model, clip)
    held = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return held + clip.numel() * clip.element_size() + _cpu_forward_peak(model, clip)


def _cuda_peak(model: nn.Module, clip: torch.Tensor) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model(clip)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def _cpu_forward_peak(model: nn.Module, clip: torch.Tensor) -> int:
    activities = [ProfilerActivity.CPU]
    with (
        _quiet_stderr(),
        torch.inference_mode(),
        profile(activities=activities, profile_memory=True) as prof,
    ):
        model(clip)
    events = prof.profiler.kineto_results.events()
    changes = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in changes:  # frees are negative
        live += nbytes
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    # The profiler's C++ side logs a line at every start and stop, with no switch to turn it off.
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def available_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    return psutil.virtual_memory().available


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )
