"""The delta convolution: only output positions whose receptive field changed are computed.

The reference input is updated at the changed positions and the affected outputs are recomputed
from it, rather than updated by ``W * difference``: the same work, and no rounding error builds up
over frames. A 1x1 convolution with stride 1 gathers the changed positions, multiplies them by
``W`` and writes the results at the same positions. Any other kernel (k x k spatial, depthwise,
``(k, 1)`` temporal, 1x1 with a stride) splits its output into tiles of up to 8 x 8 positions,
picks the tiles whose input window holds a changed position, gathers those windows into a batch
and runs the dense convolution on it. Per output computed, that costs about what the dense
convolution does, where gathering k x k patches per position (im2col) cost 2-3x more (measured
on 3x3 and 5x5 kernels, 16-96 channels, 32-64 px).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tvnsearch.delta.layers import MAX_SHARE, Change, DeltaLayer, DeltaPolicy, spectral_gain

TILE = 8  # output rows and columns per tile: fewer cost more per output, more waste work


def supports_delta(conv: nn.Conv2d) -> bool:
    """Zero padding given as numbers and no dilation: the geometry the gathers assume."""
    return (
        conv.dilation == (1, 1)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


@dataclass(frozen=True)
class Tiles:
    """Output tiles of one input shape, as indices of positions in the layer's state.

    The last tile of a row or column is moved back to fit; the outputs it shares with the tile
    before it are written to a scratch column (index ``num_outputs``) so no index repeats.
    """

    window: tuple[int, int]  # input rows and columns one tile reads
    size: tuple[int, int]  # output rows and columns of one tile
    inputs: Tensor  # (num_tiles, window rows * columns)
    outputs: Tensor  # (num_tiles, tile rows * columns)
    owned: Tensor  # (num_tiles,) outputs that are the tile's own, not the scratch column


class DeltaConv2d(DeltaLayer):
    """A delta version of an ``nn.Conv2d`` (dilation 1, zero padding) on ``(B, C, H, W)``.

    State follows the memory layout of the input that started it: ``(C, B * H * W)`` for a
    contiguous input, ``(B * H * W, C)`` for a channels-last one. Reading an input in the other
    layout is a transposing copy that costs more than the convolution (20x a plain copy at 64
    channels); outputs keep the layout, so that a chain of delta layers never transposes.
    """

    def __init__(self, conv: nn.Conv2d, policy: DeltaPolicy) -> None:
        assert supports_delta(conv), conv
        (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
        overlap = math.ceil(kh / sh) * math.ceil(kw / sw)
        super().__init__(
            conv.weight, conv.bias, policy, spectral_gain(conv.weight, conv.groups, overlap)
        )
        self.groups, self.stride = conv.groups, conv.stride
        self.padding = tuple(conv.padding)
        depthwise = conv.groups == conv.in_channels and conv.groups > 1
        self.kind = f"{'dw' if depthwise else 'conv'}{kh}x{kw}"
        self.family = _family(depthwise, kh, kw)
        self._pointwise = (kh, kw) == (1, 1) and (sh, sw) == (1, 1) and conv.groups == 1
        self.register_buffer("ones", torch.ones(conv.in_channels, dtype=conv.weight.dtype))
        self._tiles: tuple[torch.Size, Tiles] | None = None
        self.axis = 1

    def _prepare(self, x: Tensor) -> Tensor:
        ph, pw = self.padding
        return F.pad(x, (pw, pw, ph, ph)) if ph or pw else x

    def _refresh(self, x: Tensor, *, keep: bool = True) -> Tensor:
        self.axis = 0 if x.shape[1] > 1 and x.stride(1) == 1 else 1
        return super()._refresh(x, keep=keep)

    def _positions(self, x: Tensor) -> Tensor:
        if self.axis == 0:
            return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        return x.transpose(0, 1).reshape(x.shape[1], -1)

    def _peak(self, magnitude: Tensor) -> Tensor:
        if self.policy.threshold > 0:
            return magnitude.amax(1 - self.axis)
        # A sum of |d| is 0 exactly when its largest entry is; a matrix-vector product is
        # 2-6x faster than a max over the short channel axis.
        return magnitude @ self.ones if self.axis == 0 else self.ones @ magnitude

    def _output_state(self, y: Tensor) -> Tensor:
        scratch = y.new_zeros((1, y.shape[1]) if self.axis == 0 else (y.shape[1], 1))
        return torch.cat([self._positions(y), scratch], self.axis)

    def _output(self) -> Tensor:
        assert self._y is not None and self._out_shape is not None
        b, o, h, w = self._out_shape
        if self.axis == 0:
            return self._y[:-1].view(b, h, w, o).permute(0, 3, 1, 2)
        return self._y[:, :-1].view(o, b, h, w).transpose(0, 1)

    def _dense(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)

    def _step(self, x: Tensor) -> Tensor:
        change = self._changes(x)
        if self._over_limit(change):
            return self._refresh(x)
        if change.index.numel() == 0:
            return self._sparse_done(0, 0)
        if self._pointwise:
            return self._pointwise_step(x, change)
        tiles = self._tile_geometry(x.shape)
        chosen = self._chosen_tiles(tiles, change)
        num = chosen.numel() * tiles.size[0] * tiles.size[1]
        if num > MAX_SHARE[self.family] * self._num_outputs():
            return self._fallback(x)
        assert self._x is not None
        self._x.index_copy_(self.axis, change.index, change.x.index_select(self.axis, change.index))
        out = self._tile_outputs(tiles, chosen)
        at = tiles.outputs.index_select(0, chosen).view(-1)
        self._write(at, out.permute(0, 2, 3, 1) if self.axis == 0 else out.transpose(0, 1))
        owned = int(tiles.owned.index_select(0, chosen).sum())
        return self._sparse_done(owned, num * self.weight.numel())

    def _chosen_tiles(self, tiles: Tiles, change: Change) -> Tensor:
        # Float: a reduction over bools per tile costs 3x more.
        hit = change.changed.to(self.weight.dtype).index_select(0, tiles.inputs.view(-1))
        return hit.view(len(tiles.inputs), -1).amax(1).nonzero().squeeze(1)

    def _tile_outputs(self, tiles: Tiles, chosen: Tensor) -> Tensor:
        """The chosen tiles' outputs ``(tiles, O, rows, columns)``, from their input windows.

        Windows one column wide (a temporal kernel's) go side by side into one image: a batch of
        many small images costs oneDNN 3-5x more per output.
        """
        assert self._x is not None
        flat = tiles.inputs.index_select(0, chosen).view(-1)
        window = self._x.index_select(self.axis, flat)
        num, (rows, cols) = chosen.numel(), tiles.window
        if self.axis == 0:
            batch = window.view(num, rows, cols, -1).permute(0, 3, 1, 2)
        else:
            batch = window.view(-1, num, rows, cols).transpose(0, 1)
        if cols > 1:
            return self._dense(batch)
        out = self._dense(batch.permute(3, 1, 2, 0))  # (1, O, output rows, tiles)
        return out.permute(3, 1, 2, 0)

    def _write(self, at: Tensor, out: Tensor) -> None:
        """Outputs (in the state's layout, positions flattened) into a copy of the state."""
        assert self._y is not None
        out = out.reshape(-1, self._y.shape[1]) if self.axis == 0 else out.reshape(len(out), -1)
        self._y = self._y.clone().index_copy_(self.axis, at, out)

    def _pointwise_step(self, x: Tensor, change: Change) -> Tensor:
        index = change.index
        if index.numel() > MAX_SHARE[self.family] * self._num_outputs():
            return self._fallback(x)
        assert self._x is not None
        taken = change.x.index_select(self.axis, index)
        self._x.index_copy_(self.axis, index, taken)
        weight, bias = self.weight.view(self.weight.shape[0], -1), self.bias
        if self.axis == 0:
            out = taken @ weight.t() if bias is None else torch.addmm(bias, taken, weight.t())
        else:
            out = weight @ taken if bias is None else torch.addmm(bias[:, None], weight, taken)
        self._write(index, out)
        return self._sparse_done(index.numel(), index.numel() * self.weight.numel())

    def _tile_geometry(self, shape: torch.Size) -> Tiles:
        if self._tiles is None or self._tiles[0] != shape:
            kernel = (self.weight.shape[2], self.weight.shape[3])
            tiles = tile_geometry(shape, kernel, self.stride, device=self.weight.device)
            self._tiles = (shape, tiles)
        return self._tiles[1]

    def _num_outputs(self) -> int:
        assert self._out_shape is not None
        b, _, h, w = self._out_shape
        return b * h * w

    def _count_macs(self, x: Tensor, y: Tensor) -> int:
        return self._num_outputs() * self.weight.numel()  # all output channels per position


def _family(depthwise: bool, kh: int, kw: int) -> str:
    if depthwise:
        return "depthwise"
    if (kh, kw) == (1, 1):
        return "pointwise"
    return "temporal" if kw == 1 else "spatial"


def tile_geometry(
    shape: torch.Size,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    *,
    device: torch.device | None = None,
) -> Tiles:
    """The tiles of a convolution without padding on inputs ``(B, C, H, W)`` of ``shape``."""
    batch, _, height, width = shape
    out_h, out_w = (height - kernel[0]) // stride[0] + 1, (width - kernel[1]) // stride[1] + 1
    # A kernel one column wide and one column of stride reads one column: tiles are columns.
    columns = kernel[1] == stride[1] == 1
    rows = _axis(out_h, out_h if columns else min(TILE, out_h), kernel[0], stride[0], device)
    cols = _axis(out_w, 1 if columns else min(TILE, out_w), kernel[1], stride[1], device)
    (in_r, out_r, own_r), (in_c, out_c, own_c) = rows, cols
    frames = torch.arange(batch, device=device).view(-1, 1, 1, 1, 1)
    in_r, out_r, own_r = (t[None, :, None, :, None] for t in (in_r, out_r, own_r))
    in_c, out_c, own_c = (t[None, None, :, None, :] for t in (in_c, out_c, own_c))
    inputs = (frames * height * width + in_r * width + in_c).flatten(0, 2).flatten(1)
    own = own_r & own_c
    outputs = frames * out_h * out_w + out_r * out_w + out_c
    outputs = outputs.masked_fill(~own, batch * out_h * out_w).flatten(0, 2).flatten(1)
    owned = own.expand(batch, -1, -1, -1, -1).flatten(0, 2).flatten(1).sum(1)
    window = (in_r.shape[3], in_c.shape[4])
    return Tiles(window, (out_r.shape[3], out_c.shape[4]), inputs, outputs, owned)


def _axis(
    num_out: int, tile: int, kernel: int, stride: int, device: torch.device | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per tile along one axis: input indices read, output indices written, which are its own."""
    nominal = torch.arange(0, num_out, tile, device=device)
    start = nominal.clamp(max=num_out - tile)
    out = start[:, None] + torch.arange(tile, device=device)
    own = out >= nominal[:, None]
    window = (tile - 1) * stride + kernel
    inputs = (start * stride)[:, None] + torch.arange(window, device=device)
    return inputs, out, own
