"""Delta layers: a convolution or fully connected layer that recomputes only what changed.

Consecutive frames are alike, so a linear layer can keep its last input and output and compute
only where the input changed (Pan et al., "Recurrent Residual Module for Fast Inference in
Videos", CVPR 2018): ``y_t = y_{t-1} + W (x_t - x_{t-1})``, the bias cancelling. A position is one
pixel with all its channels, or one input feature of a fully connected layer.

Entries with ``|difference| <= threshold`` are dropped, but not lost: the reference input moves
only where the layer computed, so a dropped difference stays in ``x - reference`` and is picked
up once it grows past the threshold. That outstanding truncation is what the output misses; its
bound ``gain * ||x - reference|| / ||y||`` (``gain`` bounds ``||W r|| / ||r||``, ``||y||`` is the
output's norm at the last dense step) is checked every step, and a dense refresh clears it once
it passes ``refresh_limit``.

A call is computed densely, starting a new reference, when its input shape differs from the last
call's (the first call too), when too many outputs changed for the gather to pay (the layer then
skips the check for 1, 2, 4 or 8 calls, so that a layer whose input is always dense pays little),
and always for a layer too small for the bookkeeping to pay (see ``MIN_MACS``). Outputs are part
of the layer's state: callers must not modify them in place.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

# Above these shares of output positions recomputed, the dense op is the faster. Measured by
# bench/delta_bench.py (one thread; bench/results/delta_bench.json): equal cost at 13-17 % for
# 1x1 convolutions of 64 -> 64 and 96 -> 32 channels at 64 px, 25-32 % for 3x3 and 5x5/2 of 32
# channels at 64-128 px, 3-4 % for depthwise 3x3 and temporal 3x1. No fully connected layer of a
# TVN is big enough to be active, so that share is not measured: half, as for a matrix product.
MAX_SHARE = {
    "pointwise": 0.15,
    "spatial": 0.3,
    "temporal": 0.04,
    "depthwise": 0.03,
    "linear": 0.5,
}
# Finding the changes costs a few passes over the input and ~20 tensor ops (~50 us): a layer
# with fewer multiply-accumulates per call, or per input entry, than these runs densely. At 32
# per input entry (1x1 of 32 -> 32 channels, temporal 3x1 of 32) the measured break-even share
# was 2-4 %; at 64 and more, 6-30 %. Depthwise layers (at most 25 per entry) never qualify.
MIN_MACS = 4_000_000
MIN_MACS_PER_INPUT = 48
MAX_BACKOFF = 8  # dense calls without a check, at most, after a step with too many changes


@dataclass(frozen=True)
class DeltaPolicy:
    """When a delta layer drops a difference and when it computes densely."""

    threshold: float = 0.0  # 0: exact; differences at most this are dropped
    refresh_limit: float = 0.05  # bound on a layer's relative output error before a refresh
    all_layers: bool = False  # also layers too small for delta to pay (tests, measurements)


@dataclass(frozen=True)
class LayerStats:
    """What one delta layer did since its statistics were last cleared."""

    name: str
    kind: str
    in_shape: tuple[int, ...]  # the last input, after padding
    active: bool  # False: too small for delta to pay, so computed densely every call
    num_calls: int
    num_checked: int  # calls whose input was compared with the reference
    num_dense: int  # full computations: first frame, new shape, too many changes, refresh
    num_refreshes: int  # of those, because the truncation passed the limit
    input_sparsity: float  # share of difference entries dropped, where they were looked at
    changed_share: float  # share of input positions with a kept difference, likewise
    recomputed_share: float  # share of output positions computed, dense calls included
    work_share: float  # share of the dense multiply-accumulates done
    dense_macs: int  # what the dense layer would have done over these calls
    seconds: float


@dataclass(frozen=True)
class Change:
    """One step's input against the reference, both laid out as the layer's state."""

    x: Tensor
    magnitude: Tensor  # |x - reference|
    changed: Tensor  # bool per position: some entry moved by more than the threshold
    index: Tensor  # the changed positions


@dataclass(slots=True)
class _Tally:  # running counters, read out as a LayerStats
    calls: int = 0
    checked: int = 0
    dense: int = 0
    refreshes: int = 0
    entries: int = 0
    dropped: int = 0
    positions: int = 0
    changed: int = 0
    outputs: int = 0
    recomputed: int = 0
    macs: int = 0
    dense_macs: int = 0
    ns: int = 0


class DeltaLayer(nn.Module):
    """Reference input, last output and counters; subclasses say what one sparse step is.

    State is 2-D with positions along ``axis``: a gather or scatter of positions is then one
    ``index_select`` or ``index_copy`` along it.
    """

    kind: str
    axis: int

    def __init__(
        self, weight: Tensor, bias: Tensor | None, policy: DeltaPolicy, gain: float
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.policy, self.gain = policy, gain
        self.reset()
        self.clear_stats()

    def reset(self) -> None:
        """Forget the stream: the next call is computed densely."""
        self._x: Tensor | None = None
        self._y: Tensor | None = None
        self._magnitude: Tensor | None = None
        self._shape: torch.Size | None = None
        self._out_shape: torch.Size | None = None
        self._active, self._scale, self._macs = True, 0.0, 0
        self._backoff = self._skip = 0

    def clear_stats(self) -> None:
        self._tally = _Tally()

    def stats(self, name: str) -> LayerStats:
        t = self._tally
        return LayerStats(
            name=name,
            kind=self.kind,
            in_shape=tuple(self._shape or ()),
            active=self._active,
            num_calls=t.calls,
            num_checked=t.checked,
            num_dense=t.dense,
            num_refreshes=t.refreshes,
            input_sparsity=t.dropped / max(t.entries, 1),
            changed_share=t.changed / max(t.positions, 1),
            recomputed_share=t.recomputed / max(t.outputs, 1),
            work_share=t.macs / max(t.dense_macs, 1),
            dense_macs=t.dense_macs,
            seconds=t.ns / 1e9,
        )

    def forward(self, x: Tensor) -> Tensor:
        start = time.perf_counter_ns()
        x = self._prepare(x)
        self._tally.calls += 1
        if not self._active and x.shape == self._shape:
            y = self._dense_only(x)
        elif self._skip > 1 and x.shape == self._shape:
            self._skip -= 1
            y = self._refresh(x, keep=False)  # only the last skipped call keeps a reference
        elif self._x is None or x.shape != self._shape or self._skip:
            self._skip = 0
            y = self._refresh(x)
        else:
            y = self._step(x)
        self._tally.ns += time.perf_counter_ns() - start
        return y

    def _refresh(self, x: Tensor, *, keep: bool = True) -> Tensor:
        y = self._dense(x)
        self._shape, self._out_shape = x.shape, y.shape
        self._macs = self._count_macs(x, y)
        self._active = self.policy.all_layers or (
            self._macs >= MIN_MACS and self._macs >= MIN_MACS_PER_INPUT * x.numel()
        )
        keep = keep and self._active
        self._x = self._positions(x).clone() if keep else None
        self._y = self._output_state(y) if keep else None
        if keep and self.policy.threshold > 0:
            self._scale = float(torch.linalg.vector_norm(y))
        self._count_dense()
        return y

    def _dense_only(self, x: Tensor) -> Tensor:
        """A layer too small for delta: the dense op and the counters, nothing else."""
        y = self._dense(x)
        self._count_dense()
        return y

    def _count_dense(self) -> None:
        t, num = self._tally, self._num_outputs()
        t.dense += 1
        t.outputs += num
        t.recomputed += num
        t.macs += self._macs
        t.dense_macs += self._macs

    def _fallback(self, x: Tensor) -> Tensor:
        """Too many changes: compute densely, and skip the check for a while."""
        self._backoff = min(max(2 * self._backoff, 1), MAX_BACKOFF)
        self._skip = self._backoff
        return self._refresh(x)

    def _changes(self, x: Tensor) -> Change:
        """Where the input moved from the reference by more than the threshold."""
        assert self._x is not None
        x = self._positions(x)
        if self._magnitude is None or self._magnitude.shape != self._x.shape:
            self._magnitude = torch.empty_like(self._x)
        # In place into a kept buffer: a fresh one per call is a page-faulting allocation.
        magnitude = torch.sub(x, self._x, out=self._magnitude).abs_()
        changed = self._peak(magnitude).gt(self.policy.threshold)
        index = changed.nonzero().squeeze(1)
        kept = magnitude.index_select(self.axis, index).gt(self.policy.threshold).sum()
        t = self._tally
        t.checked += 1
        t.entries += x.numel()
        t.dropped += x.numel() - int(kept)
        t.positions += x.shape[self.axis]
        t.changed += index.numel()
        return Change(x, magnitude, changed, index)

    def _over_limit(self, change: Change) -> bool:
        """Whether the differences left out after this step would pass the refresh limit."""
        if self.policy.threshold == 0:
            return False  # nothing is ever dropped
        left = change.magnitude.square().sum(1 - self.axis)
        left = left.masked_fill(change.changed, 0).sum()
        truncation = self.gain * float(left.sqrt()) / max(self._scale, 1e-12)
        if truncation <= self.policy.refresh_limit:
            return False
        self._tally.refreshes += 1
        return True

    def _sparse_done(self, num_outputs: int, macs: int) -> Tensor:
        self._backoff = 0
        t = self._tally
        t.outputs += self._num_outputs()
        t.recomputed += num_outputs
        t.macs += macs
        t.dense_macs += self._macs
        return self._output()

    def _prepare(self, x: Tensor) -> Tensor:
        return x

    def _peak(self, magnitude: Tensor) -> Tensor:
        """Per position, the largest entry of ``magnitude`` (bool masks would cost 4x more)."""
        return magnitude.amax(1 - self.axis)

    def _positions(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _output_state(self, y: Tensor) -> Tensor:
        return self._positions(y)

    def _output(self) -> Tensor:
        raise NotImplementedError

    def _dense(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _step(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _num_outputs(self) -> int:
        raise NotImplementedError

    def _count_macs(self, x: Tensor, y: Tensor) -> int:
        raise NotImplementedError


def spectral_gain(weight: Tensor, groups: int, overlap: int) -> float:
    """An upper bound on ``||W * r|| / ||r||``: the largest singular value of a group's matrix
    from one receptive field to one output position, times sqrt(most fields sharing a position)."""
    matrices = weight.detach().reshape(groups, weight.shape[0] // groups, -1).float()
    return float(torch.linalg.matrix_norm(matrices, ord=2).max()) * math.sqrt(overlap)
