"""The layers against the implementation they replaced, kept below as the reference.

The channels-last layers (``tvnsearch.models.layers``, issue 15) must compute the same function as
the layers they replaced: the same outputs and the same gradients for inputs and parameters, over
kernels, strides and sizes that give every kind of SAME padding (none, even, uneven, wider than
the input), on contiguous and channels-last inputs, and whole networks built either way from the
same weights. ``bench/data_scale_bench.py`` times ``reference_model`` beside ``build_model``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from conftest import SPACES_DIR
from genomes import block, genome
from torch import Tensor, nn

from tvnsearch.genome.genes import Genome
from tvnsearch.genome.space import load_space
from tvnsearch.models import layers
from tvnsearch.models.builder import TVN, build_model
from tvnsearch.models.layers import same_padding

# --- The reference: tvnsearch.models.layers as of commit 7f732b1, names prefixed with Ref. ---


def _ref_fold_frames(x: Tensor) -> Tensor:
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def _ref_unfold_frames(y: Tensor, batch: int) -> Tensor:
    bt, c, h, w = y.shape
    return y.reshape(batch, bt // batch, c, h, w).transpose(1, 2)


class RefSpatialConv(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, *, groups: int = 1
    ) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = _ref_fold_frames(x)
        pad_h = same_padding(y.shape[-2], self.kernel, self.stride)
        pad_w = same_padding(y.shape[-1], self.kernel, self.stride)
        y = self.conv(F.pad(y, (*pad_w, *pad_h)))
        return _ref_unfold_frames(y, x.shape[0])


class RefSpatialPool(nn.Module):
    def __init__(self, mode: str, kernel: int, stride: int) -> None:
        super().__init__()
        self.mode, self.kernel, self.stride = mode, kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        y = _ref_fold_frames(x)
        pad = (
            *same_padding(y.shape[-1], self.kernel, self.stride),
            *same_padding(y.shape[-2], self.kernel, self.stride),
        )
        y = _ref_same_pool(y, self.mode, self.kernel, self.stride, pad)
        return _ref_unfold_frames(y, x.shape[0])


class RefTemporalConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(in_channels, out_channels, (kernel, 1), (stride, 1), bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        y = F.pad(x.reshape(b, c, t, h * w), (0, 0, *same_padding(t, self.kernel, self.stride)))
        y = self.conv(y)
        return y.reshape(b, -1, y.shape[2], h, w)


class RefTemporalPool(nn.Module):
    def __init__(self, mode: str, kernel: int, stride: int) -> None:
        super().__init__()
        self.mode, self.kernel, self.stride = mode, kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        pad = (0, 0, *same_padding(t, self.kernel, self.stride))
        y = _ref_same_pool(
            x.reshape(b, c, t, h * w), self.mode, (self.kernel, 1), (self.stride, 1), pad
        )
        return y.reshape(b, c, y.shape[2], h, w)


def _ref_same_pool(
    x: Tensor,
    mode: str,
    kernel: int | tuple[int, int],
    stride: int | tuple[int, int],
    pad: tuple[int, ...],
) -> Tensor:
    if mode == "maxpool":
        return F.max_pool2d(F.pad(x, pad, value=float("-inf")), kernel, stride)
    pooled = F.avg_pool2d(F.pad(x, pad), kernel, stride)
    if not any(pad):
        return pooled
    valid = F.avg_pool2d(F.pad(x.new_ones((1, 1, *x.shape[2:])), pad), kernel, stride)
    return pooled / valid


class RefPointwise(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int = 1, bias: bool = False
    ) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :, :: self.stride, :: self.stride]
        b, c, t, h, w = x.shape
        return self.conv(x.reshape(b, c, t * h, w)).reshape(b, -1, t, h, w)


class RefSqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv3d(channels, hidden, 1)
        self.expand = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3, 4), keepdim=True)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(s))))


class RefContextGate(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = nn.Conv3d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.gate(x.mean(dim=(2, 3, 4), keepdim=True)))


class RefHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(x.mean(dim=(2, 3, 4))))


class RefTVN(TVN):
    def features(self, x: Tensor) -> Tensor:  # clips stay in the layout they come in
        for instances in self.blocks:
            x = instances(x)
        return x


REFERENCE: dict[str, type[nn.Module]] = {
    "SpatialConv": RefSpatialConv,
    "SpatialPool": RefSpatialPool,
    "TemporalConv": RefTemporalConv,
    "TemporalPool": RefTemporalPool,
    "Pointwise": RefPointwise,
    "SqueezeExcite": RefSqueezeExcite,
    "ContextGate": RefContextGate,
}


def reference_model(model: TVN, g: Genome, num_classes: int) -> nn.Module:
    """``g``'s network built from the reference layers, with ``model``'s weights and mode."""
    with (
        mock.patch.multiple("tvnsearch.models.instances", **REFERENCE),
        mock.patch.multiple("tvnsearch.models.builder", TVN=RefTVN, Head=RefHead),
    ):
        ref = build_model(g, num_classes)
    ref.load_state_dict(model.state_dict())
    return ref.train(model.training)


# --- The tests. ---

SIZES = [(1, 1), (2, 5), (4, 6), (5, 7), (8, 8)]  # (T, H = W): odd, even, smaller than kernels
SPATIAL = list(itertools.product(range(1, 6), range(1, 4)))  # (kernel, stride)
TEMPORAL = list(itertools.product(range(1, 5), range(1, 3)))


def _pair(new: nn.Module, ref: nn.Module) -> tuple[nn.Module, nn.Module]:
    ref.load_state_dict(new.state_dict())
    return new, ref


def _assert_same_function(new: nn.Module, ref: nn.Module, x: Tensor) -> None:
    """Same output and the same gradients of the input and of every parameter."""
    outputs, grads = [], []
    probe = torch.randn(new(x).shape, generator=torch.Generator().manual_seed(1))
    for module in (new, ref):
        xi = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        y = module(xi)
        (y * probe).sum().backward()
        outputs.append(y)
        grads.append([xi.grad] + [p.grad for p in module.parameters()])
        module.zero_grad(set_to_none=True)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _clip(t: int, s: int, channels: int = 4, *, channels_last: bool, ties: bool = False) -> Tensor:
    x = torch.randn(2, channels, t, s, s, generator=torch.Generator().manual_seed(t * 100 + s))
    if ties:  # few distinct values: a max pool must route its gradient to the same element
        x = x.mul(2).round().clamp(-1, 2)
    return layers.to_channels_last(x) if channels_last else x


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("kernel", "stride"), SPATIAL)
@pytest.mark.parametrize("groups", [1, 4])
def test_spatial_conv_matches_reference(
    kernel: int, stride: int, groups: int, channels_last: bool
) -> None:
    new, ref = _pair(
        layers.SpatialConv(4, 4, kernel, stride, groups=groups),
        RefSpatialConv(4, 4, kernel, stride, groups=groups),
    )
    for t, s in SIZES:
        _assert_same_function(new, ref, _clip(t, s, channels_last=channels_last))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("kernel", "stride"), SPATIAL)
@pytest.mark.parametrize("mode", ["maxpool", "avgpool"])
def test_spatial_pool_matches_reference(
    mode: str, kernel: int, stride: int, channels_last: bool
) -> None:
    new, ref = layers.SpatialPool(mode, kernel, stride), RefSpatialPool(mode, kernel, stride)
    for (t, s), ties in itertools.product(SIZES, [False, True]):
        _assert_same_function(new, ref, _clip(t, s, channels_last=channels_last, ties=ties))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("kernel", "stride"), TEMPORAL)
def test_temporal_conv_matches_reference(kernel: int, stride: int, channels_last: bool) -> None:
    new, ref = _pair(
        layers.TemporalConv(4, 3, kernel, stride), RefTemporalConv(4, 3, kernel, stride)
    )
    for t, s in SIZES:
        _assert_same_function(new, ref, _clip(t, s, channels_last=channels_last))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("kernel", "stride"), TEMPORAL)
@pytest.mark.parametrize("mode", ["maxpool", "avgpool"])
def test_temporal_pool_matches_reference(
    mode: str, kernel: int, stride: int, channels_last: bool
) -> None:
    new, ref = layers.TemporalPool(mode, kernel, stride), RefTemporalPool(mode, kernel, stride)
    for (t, s), ties in itertools.product(SIZES, [False, True]):
        _assert_same_function(new, ref, _clip(t, s, channels_last=channels_last, ties=ties))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_pointwise_matches_reference(stride: int, bias: bool, channels_last: bool) -> None:
    new, ref = _pair(
        layers.Pointwise(4, 5, stride=stride, bias=bias),
        RefPointwise(4, 5, stride=stride, bias=bias),
    )
    for t, s in SIZES:
        _assert_same_function(new, ref, _clip(t, s, channels_last=channels_last))


@pytest.mark.parametrize("channels_last", [False, True])
def test_gates_and_head_match_reference(channels_last: bool) -> None:
    pairs = [
        _pair(layers.SqueezeExcite(6, 3), RefSqueezeExcite(6, 3)),
        _pair(layers.ContextGate(6), RefContextGate(6)),
        _pair(layers.Head(6, 3, 0.0), RefHead(6, 3, 0.0)),
    ]
    for (new, ref), (t, s) in itertools.product(pairs, SIZES):
        _assert_same_function(new, ref, _clip(t, s, 6, channels_last=channels_last))


EDGE_GENOMES = [
    genome(block(spatial_type="depth", spatial_kernel=4, spatial_stride=2, expansion=2)),
    genome(block(spatial_kernel=2, temporal_kernel=2, skip=True, squeeze_ratio=0.5)),
    genome(block(spatial_type="maxpool", spatial_kernel=4, temporal_type="avgpool",
                 temporal_kernel=3, temporal_stride=2, skip=True, context_gate=True),
           block(spatial_type="avgpool", spatial_kernel=2, spatial_stride=3, num_filters=16,
                 skip=True, non_local_width=4, num_repeats=2), num_frames=5, resolution=13),
]  # fmt: skip


def _network_cases() -> list[Genome]:
    space = load_space(SPACES_DIR / "tiny.toml")
    # The step benchmark's 8-frame, 3-block genome (tiny-space seed 84) and smaller ones.
    return EDGE_GENOMES + [space.sample(random.Random(seed)) for seed in (84, 0, 1, 2, 3, 4)]


@pytest.mark.parametrize("g", _network_cases(), ids=lambda g: g.id)
def test_networks_match_reference(g: Genome) -> None:
    """Whole networks in training mode (batch statistics), outputs and every gradient."""
    torch.manual_seed(0)
    model = build_model(g, 5).train()
    ref = reference_model(model, g, 5)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in ref.state_dict().items()
    ]
    model.head.dropout.p = ref.head.dropout.p = 0.0  # no random masks to line up
    size = min(g.resolution, 24)  # the function, not the cost: small clips are enough
    x = torch.randn(2, 3, g.num_frames, size, size, generator=torch.Generator().manual_seed(0))
    _assert_same_function(model, ref, x)


LAYOUT_KEEPERS: list[Callable[[], nn.Module]] = [
    lambda: layers.SpatialConv(4, 4, 4, 2, groups=4),
    lambda: layers.SpatialConv(4, 4, 3, 1),
    lambda: layers.SpatialPool("maxpool", 2, 1),
    lambda: layers.SpatialPool("avgpool", 3, 2),
    lambda: layers.TemporalConv(4, 4, 2, 1),
    lambda: layers.TemporalPool("avgpool", 2, 1),
    lambda: layers.TemporalPool("maxpool", 3, 2),
    lambda: layers.Pointwise(4, 4, stride=2),
    lambda: layers.Pointwise(4, 4),
    lambda: layers.SqueezeExcite(4, 2),
    lambda: layers.ContextGate(4),
]


@pytest.mark.parametrize("make", LAYOUT_KEEPERS)
def test_layers_keep_channels_last(make: Callable[[], nn.Module]) -> None:
    """Speed depends on it: an op that returned another layout would make every later fold a
    copy and every later convolution a reorder."""
    y = make()(_clip(6, 7, channels_last=True))
    assert y.is_contiguous(memory_format=torch.channels_last_3d)


def test_network_runs_channels_last_from_its_input() -> None:
    model = build_model(EDGE_GENOMES[2], 5)
    seen: list[bool] = []
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.register_forward_hook(
                lambda m, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last_3d))
            )
    model(torch.randn(2, 3, 5, 13, 13))
    assert seen and all(seen)
