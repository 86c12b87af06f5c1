"""Causal versions of the TVN ops: a whole clip at once (``forward``) or one step at a time.

Clip tensors are ``(B, C, T, H, W)``; a step is the same with ``T = 1``. Ops that see one frame at
a time (spatial ops, pointwise convolutions, batch norm, activations) are the ordinary modules of
``tvnsearch.models.layers``; the ops here see time and are causal:

- temporal convolution and pooling pad ``kernel - 1`` steps on the past side only; with stride s
  they emit on input steps 0, s, 2s, ... (``ceil(T / s)`` outputs, as many as SAME padding gives);
  average pooling divides by the number of real steps in its window;
- squeeze-excite and context gating squeeze each frame alone (mean over H and W);
- non-local attention reaches the positions of the current step and of the ``window - 1`` steps
  before it (``window`` = the step count the plan gives the layer for one clip: for a clip of the
  genome's own length, the whole past);
- the head gives logits per step (spatial mean, dropout, fully connected); the clip's logits are
  their mean, which in evaluation equals the usual global mean followed by the fully connected
  layer.

``step(x, t, old, new)`` runs an op on the step that arrives at frame ``t``: it reads its buffers
from ``old`` and writes them to ``new`` at its own ``slot`` (lists of tensors: TorchScript runs
this code as it is), and returns None on the frames where a temporal stride emits nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tvnsearch.models.layers import same_padding


class FramePool(nn.Module):
    """k x k max or average pooling of every frame, SAME; the average counts real pixels only."""

    def __init__(self, mode: str, kernel: int, stride: int) -> None:
        super().__init__()
        self.is_max, self.kernel, self.stride = mode == "maxpool", kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        y = x.transpose(1, 2).reshape(b * t, c, h, w)
        ph = same_padding(h, self.kernel, self.stride)
        pw = same_padding(w, self.kernel, self.stride)
        pad = [pw[0], pw[1], ph[0], ph[1]]
        if self.is_max:
            y = F.max_pool2d(F.pad(y, pad, value=float("-inf")), self.kernel, self.stride)
        else:
            y = F.avg_pool2d(F.pad(y, pad), self.kernel, self.stride)
            if ph[0] + ph[1] + pw[0] + pw[1] > 0:
                ones = F.pad(y.new_ones((1, 1, h, w)), pad)
                y = y / F.avg_pool2d(ones, self.kernel, self.stride)
        return y.reshape(b, t, c, y.shape[-2], y.shape[-1]).transpose(1, 2)


class CausalTemporalConv(nn.Module):
    """A full convolution over time, kernel (k, 1, 1), padded on the past side only."""

    def __init__(self, conv: nn.Conv2d, kernel: int, stride: int, in_rate: int) -> None:
        super().__init__()
        self.conv = conv  # Conv2d with kernel (k, 1): time on the height axis, H*W on the width
        self.kernel, self.stride, self.in_rate, self.slot = kernel, stride, in_rate, -1

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        y = self.conv(F.pad(x.reshape(b, c, t, h * w), [0, 0, self.kernel - 1, 0]))
        return y.reshape(b, y.shape[1], y.shape[2], h, w)

    def step(self, x: Tensor, t: int, old: list[Tensor], new: list[Tensor]) -> Tensor | None:
        b, c, _, h, w = x.shape
        window = torch.cat([old[self.slot], x.reshape(b, c, 1, h * w)], 2)
        new[self.slot] = window[:, :, 1:]
        if (t // self.in_rate) % self.stride != 0:
            return None
        return self.conv(window).reshape(b, -1, 1, h, w)

    def buffer_shape(self, h: int, w: int) -> list[int]:
        return [self.conv.in_channels, self.kernel - 1, h * w]


class CausalTemporalPool(nn.Module):
    """Max or average pooling over time, kernel k, padded on the past side only."""

    def __init__(self, mode: str, kernel: int, stride: int, in_rate: int, channels: int) -> None:
        super().__init__()
        self.is_max, self.kernel, self.stride = mode == "maxpool", kernel, stride
        self.in_rate, self.channels, self.slot = in_rate, channels, -1

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        y, pad = x.reshape(b, c, t, h * w), [0, 0, self.kernel - 1, 0]
        size, stride = [self.kernel, 1], [self.stride, 1]
        if self.is_max:
            y = F.max_pool2d(F.pad(y, pad, value=float("-inf")), size, stride)
        else:
            real = F.avg_pool2d(F.pad(y.new_ones((1, 1, t, 1)), pad), size, stride)
            y = F.avg_pool2d(F.pad(y, pad), size, stride) / real
        return y.reshape(b, c, y.shape[2], h, w)

    def step(self, x: Tensor, t: int, old: list[Tensor], new: list[Tensor]) -> Tensor | None:
        b, c, _, h, w = x.shape
        window = torch.cat([old[self.slot], x.reshape(b, c, 1, h * w)], 2)
        new[self.slot] = window[:, :, 1:]
        n = t // self.in_rate
        if n % self.stride != 0:
            return None
        real = window[:, :, self.kernel - min(self.kernel, n + 1) :]  # the zeros before step 0 go
        y = real.amax(2, keepdim=True) if self.is_max else real.mean(2, keepdim=True)
        return y.reshape(b, c, 1, h, w)

    def buffer_shape(self, h: int, w: int) -> list[int]:
        return [self.channels, self.kernel - 1, h * w]


class FrameSqueezeExcite(nn.Module):
    """Squeeze-and-excitation with each frame's own mean over (H, W)."""

    def __init__(self, reduce: nn.Module, expand: nn.Module) -> None:
        super().__init__()
        self.reduce, self.expand = reduce, expand

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(3, 4), keepdim=True)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(s))))


class FrameContextGate(nn.Module):
    """Context gating with each frame's own mean over (H, W)."""

    def __init__(self, gate: nn.Module) -> None:
        super().__init__()
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.gate(x.mean(dim=(3, 4), keepdim=True)))


class CausalNonLocal(nn.Module):
    """Embedded-Gaussian non-local block attending to the current and ``window - 1`` past steps.

    In steps, the keys and values of the past steps are kept in two buffers of ``window - 1``
    steps each, oldest first; before the buffers fill, a mask hides their empty part.
    """

    def __init__(self, parts: dict[str, nn.Module], window: int, rate: int) -> None:
        super().__init__()
        self.theta, self.phi, self.g = parts["theta"], parts["phi"], parts["g"]
        self.out, self.norm = parts["out"], parts["norm"]
        self.window, self.rate, self.slot = window, rate, -1

    def forward(self, x: Tensor) -> Tensor:
        b, _, t, h, w = x.shape
        steps = torch.arange(t, device=x.device).repeat_interleave(h * w)
        age = steps.unsqueeze(1) - steps.unsqueeze(0)  # query step minus key step
        mask = (age >= 0) & (age < self.window)
        y = F.scaled_dot_product_attention(
            _tokens(self.theta(x)), _tokens(self.phi(x)), _tokens(self.g(x)), mask, scale=1.0
        )
        return x + self.norm(self.out(y.transpose(-1, -2).reshape(b, -1, t, h, w)))

    def step(self, x: Tensor, t: int, old: list[Tensor], new: list[Tensor]) -> Tensor:
        b, _, _, h, w = x.shape
        keys, values = _tokens(self.phi(x)), _tokens(self.g(x))
        mask: Tensor | None = None
        if self.window > 1:
            keys = torch.cat([old[self.slot], keys], 2)
            values = torch.cat([old[self.slot + 1], values], 2)
            new[self.slot] = keys[:, :, h * w :]
            new[self.slot + 1] = values[:, :, h * w :]
            past = min(t // self.rate, self.window - 1)
            first = (self.window - 1 - past) * h * w
            mask = (torch.arange(keys.shape[2], device=x.device) >= first).unsqueeze(0)
        y = F.scaled_dot_product_attention(_tokens(self.theta(x)), keys, values, mask, scale=1.0)
        return x + self.norm(self.out(y.transpose(-1, -2).reshape(b, -1, 1, h, w)))

    def buffer_shapes(self, h: int, w: int) -> list[list[int]]:
        if self.window == 1:
            return []
        shape = [1, (self.window - 1) * h * w, self.g.conv.out_channels]
        return [shape, shape]


def _tokens(y: Tensor) -> Tensor:
    """(B, d, T, H, W) -> (B, 1, T*H*W, d), positions in (t, h, w) order."""
    b, d = y.shape[0], y.shape[1]
    return y.reshape(b, 1, d, -1).transpose(-1, -2)


class FrameHead(nn.Module):
    """Logits for every step: spatial mean -> dropout -> fully connected; a clip's are the mean."""

    def __init__(self, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def steps(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, T, num_classes)."""
        return self.fc(self.dropout(x.mean(dim=(3, 4)).transpose(1, 2)))

    def forward(self, x: Tensor) -> Tensor:
        return self.steps(x).mean(1)
