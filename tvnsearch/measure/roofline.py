"""A lower bound on a genome's runtime that costs no forward pass.

No network runs faster than its counted FLOPs at the fastest rate this device computes, nor than
the bytes it must touch (``Cost.min_memory_bytes``: its weights and its largest activation) at the
fastest rate the device copies. Both rates are measured once per device signature (a few kernels,
under a second) and kept in this user's cache; a run folder keeps a copy, so that a resumed
search judges by the same numbers. The rates are multiplied by ``SAFETY`` first: a Winograd
convolution does fewer multiplications than are counted, and a kernel that was not timed may be
faster than those that were. Candidates whose bound is over the budget cannot fit and are rejected
without being built.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tvnsearch.errors import InputError, Notice
from tvnsearch.files import atomic_write_text, read_json, user_cache_dir
from tvnsearch.genome.cost import Cost
from tvnsearch.measure.device import device_signature
from tvnsearch.measure.profile import Settings

SAFETY = 3.0
REPEATS = 5  # timed runs per kernel; the fastest counts


@dataclass(frozen=True)
class Roofline:
    device: str  # the device signature's key
    flops_per_second: float  # the fastest of the kernels timed
    bytes_per_second: float  # a large copy: bytes read and written per second

    def min_runtime_ms(self, cost: Cost) -> float:
        compute = cost.flops / (SAFETY * self.flops_per_second)
        memory = cost.min_memory_bytes / (SAFETY * self.bytes_per_second)
        return 1000.0 * max(compute, memory)

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


def roofline_from_dict(data: dict, *, source: str) -> Roofline:
    try:
        return Roofline(
            str(data["device"]), float(data["flops_per_second"]), float(data["bytes_per_second"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(source, f"not a roofline record ({exc!r})") from None


def read_roofline(path: Path, device: str) -> Roofline | None:
    """The roofline kept at ``path`` if it is ``device``'s; None when there is none, it is
    another device's, or it does not parse (a torn or edited cache: a ``Notice``, and the
    caller measures it again; a cache is never fatal)."""
    if not path.is_file():
        return None
    try:
        kept = roofline_from_dict(read_json(path), source=str(path))
    except InputError as exc:
        warnings.warn(f"{exc}; measured again", Notice, stacklevel=2)
        return None
    return kept if kept.device == device else None


def keep_roofline(path: Path, roofline: Roofline) -> None:
    atomic_write_text(path, json.dumps(roofline.to_dict(), indent=1) + "\n")


def device_roofline(settings: Settings, *, cache: Path | None = None) -> Roofline:
    """This device's roofline at ``settings.threads``: from the cache, or measured and kept."""
    key = device_signature(settings.device, settings.threads).key
    folder = cache if cache is not None else user_cache_dir("devices")
    path = folder / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    roofline = read_roofline(path, key)
    if roofline is None:
        roofline = calibrate(settings)
        keep_roofline(path, roofline)
    return roofline


def calibrate(settings: Settings) -> Roofline:
    """Time a few compute-bound kernels and one large copy on ``settings``' device and threads."""
    import torch

    from tvnsearch.measure.timing import fixed_threads

    device = torch.device(settings.device)
    with fixed_threads(settings.threads), torch.inference_mode():
        flops = max(rate() for rate in _compute_kernels(device))
        bytes_ = _copy_rate(device)
    return Roofline(device_signature(settings.device, settings.threads).key, flops, bytes_)


def _compute_kernels(device) -> list[Callable[[], float]]:
    import torch
    import torch.nn.functional as F

    def rate(fn: Callable[[], object], flops: float) -> Callable[[], float]:
        return lambda: flops / _fastest_seconds(fn, device)

    a = torch.randn(512, 512, device=device)
    x2 = torch.randn(1, 64, 56, 56, device=device)
    w2 = torch.randn(64, 64, 3, 3, device=device)
    x3 = torch.randn(1, 128, 4, 28, 28, device=device)
    w3 = torch.randn(128, 128, 1, 1, 1, device=device)
    return [
        rate(lambda: a @ a, 2 * 512**3),
        rate(lambda: F.conv2d(x2, w2, padding=1), 2 * 64 * 64 * 9 * 56 * 56),
        rate(lambda: F.conv3d(x3, w3), 2 * 128 * 128 * 4 * 28 * 28),
    ]


def _copy_rate(device) -> float:
    import torch

    source = torch.randn(16 * 2**20, device=device)  # 64 MiB: past any cache
    target = torch.empty_like(source)
    return 2 * source.numel() * 4 / _fastest_seconds(lambda: target.copy_(source), device)


def _fastest_seconds(fn: Callable[[], object], device) -> float:
    import torch

    fn()  # warm: allocation, kernel selection
    best = float("inf")
    for _ in range(REPEATS):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best
