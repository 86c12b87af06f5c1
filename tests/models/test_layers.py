"""The layers against the implementation they replaced, kept below as the reference.

The channels-last layers (``tvnsearch.models.layers``, issue 15) must compute the same function as
the layers they replaced: the same outputs and the same gradients for inputs and parameters, over
kernels, strides and sizes that give every kind of SAME padding (none, even, uneven, wider than
the input), on contiguous and channels-last inputs, batches of one (inference) included, and
whole networks built either way from the same weights, in training and in evaluation. 1x1
convolutions large enough for oneDNN (``layers._conv2d``) are among them. Exported graphs keep
plain reshapes. ``bench/data_scale_bench.py`` times ``reference_model`` beside ``build_model``.
"""

from __future__ import annotations

import itertools
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from conftest import SPACES_DIR
from genomes import block, genome
from networks import with_trained_statistics
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from tvnsearch.genome.genes import Genome
from tvnsearch.genome.space import load_space
from tvnsearch.genome.tvn_format import PUBLISHED, published_genome
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
LARGE = (8, 32)  # 1x1 convolutions go to oneDNN (``layers._conv2d``)
SPATIAL = list(itertools.product(range(1, 6), range(1, 4)))  # (kernel, stride)
TEMPORAL = list(itertools.product(range(1, 5), range(1, 3)))
# (channels-last, batch): contiguous clips; a network's layout; and that with the batch of one of
# inference, whose views PyTorch once read as NCHW.
LAYOUTS = [(False, 2), (True, 2), (True, 1)]
LAYOUT_IDS = ["contiguous", "channels-last", "channels-last-batch-1"]


def _pair(new: nn.Module, ref: nn.Module) -> tuple[nn.Module, nn.Module]:
    ref.load_state_dict(new.state_dict())
    return new, ref


def _assert_same_function(new: nn.Module, ref: nn.Module, x: Tensor) -> None:
    """Same output and the same gradients of the input and of every parameter; the same output
    in inference mode, which takes other kernels (oneDNN's, without autograd)."""
    # A weight's gradient sums over every position, in another order in other kernels: float32
    # rounding grows with the positions (LARGE's 16384).
    tol = 1e-4 if x[:, 0].numel() > 10_000 else 1e-5
    with torch.inference_mode():
        torch.testing.assert_close(new(x), ref(x), rtol=tol, atol=tol)
    outputs, grads = [], []
    probe = torch.randn(new(x).shape, generator=torch.Generator().manual_seed(1))
    for module in (new, ref):
        xi = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        y = module(xi)
        (y * probe).sum().backward()
        outputs.append(y)
        grads.append([xi.grad] + [p.grad for p in module.parameters()])
        module.zero_grad(set_to_none=True)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=tol, atol=tol)
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _clip(
    t: int, s: int, channels: int = 4, *, channels_last: bool, ties: bool = False, batch: int = 2
) -> Tensor:
    seed = torch.Generator().manual_seed(t * 100 + s)
    x = torch.randn(batch, channels, t, s, s, generator=seed)
    if ties:  # few distinct values: a max pool must route its gradient to the same element
        x = x.mul(2).round().clamp(-1, 2)
    return layers.to_channels_last(x) if channels_last else x


@pytest.mark.parametrize(("channels_last", "batch"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(("kernel", "stride"), SPATIAL)
@pytest.mark.parametrize("groups", [1, 4])
def test_spatial_conv_matches_reference(
    kernel: int, stride: int, groups: int, channels_last: bool, batch: int
) -> None:
    new, ref = _pair(
        layers.SpatialConv(4, 4, kernel, stride, groups=groups),
        RefSpatialConv(4, 4, kernel, stride, groups=groups),
    )
    for t, s in [*SIZES, LARGE]:
        _assert_same_function(new, ref, _clip(t, s, channels_last=channels_last, batch=batch))


@pytest.mark.parametrize(("channels_last", "batch"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(("kernel", "stride"), SPATIAL)
@pytest.mark.parametrize("mode", ["maxpool", "avgpool"])
def test_spatial_pool_matches_reference(
    mode: str, kernel: int, stride: int, channels_last: bool, batch: int
) -> None:
    new, ref = layers.SpatialPool(mode, kernel, stride), RefSpatialPool(mode, kernel, stride)
    for (t, s), ties in itertools.product(SIZES, [False, True]):
        x = _clip(t, s, channels_last=channels_last, ties=ties, batch=batch)
        _assert_same_function(new, ref, x)


@pytest.mark.parametrize(("channels_last", "batch"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(("kernel", "stride"), TEMPORAL)
def test_temporal_conv_matches_reference(
    kernel: int, stride: int, channels_last: bool, batch: int
) -> None:
    new, ref = _pair(
        layers.TemporalConv(4, 3, kernel, stride), RefTemporalConv(4, 3, kernel, stride)
    )
    # LARGE unstrided, which oneDNN takes (dilated if 1x1): its backward of a strided 1x1 on
    # this few channels crashes (PyTorch 2.13's oneDNN, any layers).
    for t, s in [*SIZES, LARGE] if stride == 1 else SIZES:
        _assert_same_function(new, ref, _clip(t, s, channels_last=channels_last, batch=batch))


@pytest.mark.parametrize(("channels_last", "batch"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(("kernel", "stride"), TEMPORAL)
@pytest.mark.parametrize("mode", ["maxpool", "avgpool"])
def test_temporal_pool_matches_reference(
    mode: str, kernel: int, stride: int, channels_last: bool, batch: int
) -> None:
    new, ref = layers.TemporalPool(mode, kernel, stride), RefTemporalPool(mode, kernel, stride)
    for (t, s), ties in itertools.product(SIZES, [False, True]):
        x = _clip(t, s, channels_last=channels_last, ties=ties, batch=batch)
        _assert_same_function(new, ref, x)


@pytest.mark.parametrize(("channels_last", "batch"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels", [4, 3])  # 3: a network's input
def test_pointwise_matches_reference(
    stride: int, bias: bool, channels: int, channels_last: bool, batch: int
) -> None:
    new, ref = _pair(
        layers.Pointwise(channels, 5, stride=stride, bias=bias),
        RefPointwise(channels, 5, stride=stride, bias=bias),
    )
    for t, s in [*SIZES, LARGE]:
        x = _clip(t, s, channels, channels_last=channels_last, batch=batch)
        _assert_same_function(new, ref, x)


@pytest.mark.parametrize(("channels_last", "batch"), LAYOUTS, ids=LAYOUT_IDS)
def test_gates_and_head_match_reference(channels_last: bool, batch: int) -> None:
    pairs = [
        _pair(layers.SqueezeExcite(6, 3), RefSqueezeExcite(6, 3)),
        _pair(layers.ContextGate(6), RefContextGate(6)),
        _pair(layers.Head(6, 3, 0.0), RefHead(6, 3, 0.0)),
    ]
    for (new, ref), (t, s) in itertools.product(pairs, SIZES):
        _assert_same_function(new, ref, _clip(t, s, 6, channels_last=channels_last, batch=batch))


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


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("g", _network_cases(), ids=lambda g: g.id)
def test_networks_match_reference_in_evaluation(g: Genome, batch: int) -> None:
    """Whole networks in evaluation (running statistics), as inference runs them: a batch of
    one included, outputs and every gradient."""
    torch.manual_seed(0)
    model = with_trained_statistics(build_model(g, 5))
    ref = reference_model(model, g, 5)
    size = min(g.resolution, 24)
    seed = torch.Generator().manual_seed(0)
    _assert_same_function(
        model, ref, torch.randn(batch, 3, g.num_frames, size, size, generator=seed)
    )


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_networks_match_reference(name: str) -> None:
    """The six published TVNs as inference runs them: one clip, evaluation, inference mode (the
    gradients are the smaller networks' above). At 48 pixels a side (the function, not the
    cost), their first 1x1 convolutions still go to oneDNN."""
    g = published_genome(name)
    torch.manual_seed(0)
    model = with_trained_statistics(build_model(g, 5))
    ref = reference_model(model, g, 5)
    x = torch.randn(1, 3, g.num_frames, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


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


def _recognised_channels_last(y: Tensor) -> bool:
    """Channels-last with the strides PyTorch's kernels take for it: those of a new channels-last
    tensor. A batch of one with the stride of one pixel is channels-last contiguous too, yet
    convolutions and batch norms read it as NCHW (and return NCHW)."""
    return y.stride() == torch.empty(y.shape, memory_format=torch.channels_last_3d).stride()


# (batch, inference mode): training batches, and inference's, a batch of one included (a batch of
# one under autograd takes the plain views, as before: ``layers._as_stored``).
LAYOUT_RUNS = [(2, False), (2, True), (1, True)]


@pytest.mark.parametrize(("batch", "inference"), LAYOUT_RUNS)
@pytest.mark.parametrize("make", LAYOUT_KEEPERS)
def test_layers_keep_channels_last(
    make: Callable[[], nn.Module], batch: int, inference: bool
) -> None:
    """Speed depends on it: an op that returned another layout would make every later fold a
    copy and every later convolution a reorder."""
    layer = make()
    for t, s in [(6, 7), LARGE]:
        x = _clip(t, s, channels_last=True, batch=batch)
        with torch.inference_mode(inference):
            assert _recognised_channels_last(layer(x))


@pytest.mark.parametrize(("batch", "inference"), LAYOUT_RUNS)
def test_network_runs_channels_last_from_its_input(batch: int, inference: bool) -> None:
    model = build_model(EDGE_GENOMES[2], 5)
    seen: list[bool] = []
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.register_forward_hook(lambda m, i, o: seen.append(_recognised_channels_last(o)))
    with torch.inference_mode(inference):
        model(torch.randn(batch, 3, 5, 13, 13))
    assert seen and all(seen)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch without oneDNN")
def test_large_1x1_convolutions_run_on_onednn() -> None:
    """Speed depends on it: PyTorch's own path for 1x1 convolutions (``_slow_conv2d_forward``,
    a GEMM) is 10-20% slower on one thread, and 3x on the 3 channels of a clip."""
    x = layers.to_channels_last(torch.randn(1, 3, 8, 32, 32))
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as p:
        layers.Pointwise(3, 8)(x)
        layers.TemporalConv(3, 8, 1, 1)(x)
    ops = {e.key for e in p.key_averages()}
    assert "aten::mkldnn_convolution" in ops and "aten::_slow_conv2d_forward" not in ops


def test_exported_graphs_keep_plain_reshapes(tmp_path: Path) -> None:
    """A graph exported for another runtime has no strides: views in channels-last order would
    be transposes there, each a copy (ONNX Runtime ran TVN-1 20% slower). With the TorchScript
    -based ONNX exporter, which also refuses memory formats: the file runs as the module does,
    with no more transposes than the reference's."""
    g = EDGE_GENOMES[2]
    model = with_trained_statistics(build_model(g, 5))
    ref = reference_model(model, g, 5)
    x = torch.randn(2, 3, g.num_frames, g.resolution, g.resolution)
    check = torch.randn(3, 3, g.num_frames, g.resolution, g.resolution)
    transposes = []
    for m in (model, ref):
        path = tmp_path / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings: sizes read as Python numbers
            torch.onnx.export(
                m, (x,), str(path), input_names=["clip"], dynamic_axes={"clip": {0: "batch"}},
                dynamo=False,
            )  # fmt: skip
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"clip": check.numpy()})
        with torch.inference_mode():
            torch.testing.assert_close(torch.from_numpy(got), m(check), rtol=1e-4, atol=1e-5)
        nodes = onnx.load(str(path)).graph.node
        transposes.append(sum(n.op_type == "Transpose" for n in nodes))
    assert transposes[0] <= transposes[1]
