"""The delta fully connected layer: changed input features times their columns of ``W``.

Unlike the convolutions, which recompute their changed outputs, this one adds
``W[:, changed] @ (x - reference)[changed]`` to its last output (the recurrent residual of Pan et
al.): every output depends on every feature, so only the residual form skips work. A TVN's head
sees the global mean of its features, which moves a little in every channel whenever anything
moves, so with threshold 0 this layer is dense in practice; a threshold makes it sparse.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from tvnsearch.delta.layers import MAX_SHARE, DeltaLayer, DeltaPolicy, spectral_gain

# Rounding errors of the added residuals add up as a random walk; a dense step this often keeps
# them near one rounding.
DRIFT_STEPS = 1000


class DeltaLinear(DeltaLayer):
    """``nn.Linear`` on ``(..., C)``; a position is one input feature, gathered across rows."""

    kind, axis = "linear", 1

    def __init__(self, linear: nn.Linear, policy: DeltaPolicy) -> None:
        super().__init__(linear.weight, linear.bias, policy, spectral_gain(linear.weight, 1, 1))
        # Rows of W^T: gathering the columns of changed features is then a contiguous copy.
        self.register_buffer("weight_t", self.weight.t().contiguous())
        self._steps = 0

    def _refresh(self, x: Tensor, *, keep: bool = True) -> Tensor:
        self._steps = 0
        return super()._refresh(x, keep=keep)

    def _positions(self, x: Tensor) -> Tensor:
        return x.reshape(-1, x.shape[-1])

    def _output(self) -> Tensor:
        assert self._y is not None and self._out_shape is not None
        return self._y.view(self._out_shape)

    def _dense(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def _step(self, x: Tensor) -> Tensor:
        change = self._changes(x)
        index, num = change.index, change.index.numel()
        if self._steps >= DRIFT_STEPS or self._over_limit(change):
            return self._refresh(x)
        if num == 0:
            return self._sparse_done(0, 0)
        if num > MAX_SHARE[self.kind] * change.x.shape[1]:
            return self._fallback(x)
        assert self._x is not None and self._y is not None
        rows = change.x.index_select(1, index)
        d = rows - self._x.index_select(1, index)
        self._y = self._y + d @ self.weight_t.index_select(0, index)
        self._x.index_copy_(1, index, rows)
        self._steps += 1
        return self._sparse_done(self._num_outputs(), num * self._y.numel())

    def _num_outputs(self) -> int:
        assert self._out_shape is not None
        return math.prod(self._out_shape[:-1])

    def _count_macs(self, x: Tensor, y: Tensor) -> int:
        return y.numel() * x.shape[-1]
