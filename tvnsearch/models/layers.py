"""The modules of a TVN, all on ``(B, C, T, H, W)`` tensors; plain containers of built parts.

Spatial ops fold time into the batch and temporal ops view ``H*W`` as one axis, so that both run
as 2-D kernels: on CPU these are up to 4x faster than the equivalent ``Conv3d`` (measured while
choosing this layout). Padding is TensorFlow SAME, computed per input size, as in the reference.

Every op keeps the memory layout of its input. A network feeds them clips in channels-last-3d
(``to_channels_last``): then folding and unfolding frames are views, not copies, and oneDNN's
convolutions and pools run on that layout without reordering (one CPU thread, against contiguous
``(B, C, T, H, W)``, whose folds copy: 1x1 convolutions about 2x faster, depthwise ones and pools
3-10x). In inference the views reshape tensors in the order channels-last stores them, so that a
batch of one keeps strides that PyTorch recognises as channels-last (``_reshape``). Pools and
convolutions pad as they read wherever the SAME padding allows, instead of copying a padded input
(tests/models/test_layers.py keeps the layers as they were).

Layouts and kernel choices are PyTorch's own: a graph exported for another runtime (ONNX,
``torch.export``) gets plain reshapes and convolutions (``_torch_runs``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "swish": nn.SiLU,
    "hswish": nn.Hardswish,  # x * relu6(x + 3) / 6, as in the reference
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF SAME: (before, after) so that the output has ceil(size / stride) elements. A constant
    even where ``size`` is traced (the TorchScript-based ONNX exporter): ONNX wants constant
    paddings, and a genome fixes the geometry of its network."""
    size = int(size)
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def to_channels_last(x: Tensor) -> Tensor:
    """``x`` (B, C, T, H, W) stored as (B, T, H, W, C): the layout the layers run fastest on."""
    if not _torch_runs():  # an exported graph has no layout (and the TorchScript-based ONNX
        return x  # exporter refuses ``memory_format``)
    return x.contiguous(memory_format=torch.channels_last_3d)


def _torch_runs() -> bool:
    """Whether PyTorch's own kernels run the ops (eager, TorchScript), not another runtime that a
    graph without strides is exported for (ONNX, ``torch.export``): there layouts and kernels are
    that runtime's, and each transpose that keeps a layout here would be a copy."""
    if torch.jit.is_scripting():  # TorchScript compiles this branch only
        return True
    return not (torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


def _as_stored() -> bool:
    """Whether views reshape channels-last tensors as they are stored (``_reshape``): in PyTorch's
    inference. Batches of more than one get the same strides either way, and under autograd the
    two views more of each reshape cost time (5 us against 2 on a CPU) that small networks'
    training steps on a GPU would feel."""
    return not torch.is_grad_enabled() and _torch_runs()


def _reshape(x: Tensor, shape: list[int]) -> Tensor:
    """``x.reshape(shape)`` for (N, C, ...) to (N, C, ...), the channels untouched; done as
    channels-last stores it, (N, ..., C), in inference: a plain reshape of a batch of one gives
    the batch the stride of one pixel, which PyTorch reads as NCHW, so that its convolutions and
    batch norms would copy to NCHW (batch-1 inference ran all but its input layer in NCHW)."""
    if not _as_stored():
        return x.reshape(shape)
    return _reshape_stored(x, shape[:1] + shape[2:] + shape[1:2])


def _reshape_stored(x: Tensor, stored: list[int]) -> Tensor:
    """``x`` (N, C, ...) stored as (N, ..., C), reshaped to ``stored`` (N', ..., C')."""
    return x.movedim(1, -1).reshape(stored).movedim(-1, 1)


def _fold_frames(x: Tensor) -> Tensor:
    b, c, t, h, w = x.shape
    if not _as_stored():
        return x.transpose(1, 2).reshape(b * t, c, h, w)
    return _reshape_stored(x, [b * t, h, w, c])  # (B, T, H, W, C) as stored: B*T frames


def _unfold_frames(y: Tensor, batch: int) -> Tensor:
    bt, c, h, w = y.shape
    if not _as_stored():
        return y.reshape(batch, bt // batch, c, h, w).transpose(1, 2)
    return _reshape_stored(y, [batch, bt // batch, h, w, c])


class _SameConv(nn.Module):
    """Base of the convolutions padded TF SAME (a 1x1 needs none): ``self.conv`` is an
    ``nn.Conv2d`` without padding of its own. An even SAME padding is the convolution's, read in
    place; PyTorch pads both sides alike, so an uneven one (one more after) pads a copy, as does a
    layer that replaced the conv (``tvnsearch.delta``). Padding more and cropping would count and
    cost extra FLOPs."""

    def _same(self, y: Tensor, pad_h: tuple[int, int], pad_w: tuple[int, int]) -> Tensor:
        even = pad_h[0] == pad_h[1] and pad_w[0] == pad_w[1]
        if isinstance(self.conv, nn.Conv2d) and even:  # (TorchScript decides this when compiling)
            w, b, padding = self.conv.weight, self.conv.bias, [pad_h[0], pad_w[0]]
            return _conv2d(y, w, b, self.conv.stride, padding, self.conv.groups)
        if pad_h[1] > 0 or pad_w[1] > 0:  # ``after`` >= ``before``
            y = F.pad(y, (pad_w[0], pad_w[1], pad_h[0], pad_h[1]))
        return self.conv(y)


def _conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: list[int],
    groups: int,
) -> Tensor:
    """``F.conv2d``; an unstrided 1x1 kernel on a CPU declared dilated, which a 1x1 kernel cannot
    tell. PyTorch gives undilated ones, on one thread and under 16 images, to its GEMM
    (``_slow_conv2d_forward``), and dilated ones to oneDNN: 10-20% faster, forward and backward,
    and 3x on 3 input channels. Not under 1024 pixels, where oneDNN's reordering of the weights,
    on every call, costs more than it saves (up to 1.5x slower at 64), nor where PyTorch keeps a
    single image of up to 20480 values from oneDNN (its dilated path there is 1.1-1.6x slower).
    oneDNN runs the same 1x1 kernels, dilated or not, which it already gets on more threads."""
    pixels = x.shape[2] * x.shape[3]  # not the batch, which a trace would fix
    dilated = (
        x.is_cpu
        and weight.shape[2] == weight.shape[3] == 1
        and stride[0] == stride[1] == 1
        and pixels >= 1024
        and x.shape[1] * pixels > 20480
        and _torch_runs()
    )
    return F.conv2d(x, weight, bias, stride, padding, 2 if dilated else 1, groups)


class SpatialConv(_SameConv):
    """A k x k convolution applied to every frame (depthwise when ``groups == channels``)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, *, groups: int = 1
    ) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = _fold_frames(x)
        pad_h = same_padding(y.shape[-2], self.kernel, self.stride)
        pad_w = same_padding(y.shape[-1], self.kernel, self.stride)
        return _unfold_frames(self._same(y, pad_h, pad_w), x.shape[0])


class SpatialPool(nn.Module):
    """k x k max or average pooling per frame; the average counts real pixels only (TF SAME)."""

    def __init__(self, mode: str, kernel: int, stride: int) -> None:
        super().__init__()
        self.mode, self.kernel, self.stride = mode, kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        y = _fold_frames(x)
        y = _same_pool(y, self.mode, (self.kernel, self.kernel), (self.stride, self.stride))
        return _unfold_frames(y, x.shape[0])


class TemporalConv(_SameConv):
    """A full (not depthwise) convolution over time, kernel (k, 1, 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(in_channels, out_channels, (kernel, 1), (stride, 1), bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        pad_t = same_padding(t, self.kernel, self.stride)
        y = self._same(_reshape(x, [b, c, t, h * w]), pad_t, (0, 0))
        return _reshape(y, [b, y.shape[1], y.shape[2], h, w])


class TemporalPool(nn.Module):
    """Max or average pooling over time, kernel k, stride s, SAME."""

    def __init__(self, mode: str, kernel: int, stride: int) -> None:
        super().__init__()
        self.mode, self.kernel, self.stride = mode, kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        y = _same_pool(_reshape(x, [b, c, t, h * w]), self.mode, (self.kernel, 1), (self.stride, 1))
        return _reshape(y, [b, c, y.shape[2], h, w])


def _same_pool(x: Tensor, mode: str, kernel: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """SAME pooling of (N, C, H, W), padded as it reads: the max ignores padding and the average
    counts real pixels only. PyTorch pads both sides alike, so an uneven SAME padding (one more
    after) takes ``ceil_mode``, whose last window reaches into it; with stride 1 it cannot, so
    one more step is padded before as well and the first output dropped."""
    if x.shape[1] < 8 and _strictly_channels_last(x) and _torch_runs():
        # Channels-last pools vectorise over channels: on the clip's 3, NCHW is 2x faster.
        y = _same_pool(x.contiguous(), mode, kernel, stride)
        return y.contiguous(memory_format=torch.channels_last)
    pads = [same_padding(n, k, s) for n, k, s in zip(x.shape[-2:], kernel, stride, strict=True)]
    uneven = [after > before for before, after in pads]
    drop = [int(u and s == 1) for u, s in zip(uneven, stride, strict=True)]
    padding = (pads[0][0] + drop[0], pads[1][0] + drop[1])
    # Only where needed: ONNX sizes a ceil_mode output without PyTorch's rule that the last
    # window starts inside the input, and differs where no padding meets a kernel under stride.
    ceil = any(u and s > 1 for u, s in zip(uneven, stride, strict=True))
    if mode == "maxpool":
        y = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil)
    else:
        y = F.avg_pool2d(x, kernel, stride, padding, ceil_mode=ceil, count_include_pad=False)
    if not any(drop):
        return y
    # A copy in the input's layout: later ops would copy the strided view anyway, into NCHW.
    return y[:, :, drop[0] :, drop[1] :].clone(memory_format=torch.preserve_format)


def _strictly_channels_last(x: Tensor) -> bool:
    """Channels-last and not also contiguous (both hold for one channel or one pixel)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class Pointwise(_SameConv):
    """A 1x1x1 convolution (optionally with a spatial stride, i.e. subsampling first)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int = 1, bias: bool = False
    ) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = _subsample(x, self.stride)
        b, c, t, h, w = x.shape
        y = self._same(_reshape(x, [b, c, t * h, w]), (0, 0), (0, 0))
        return _reshape(y, [b, y.shape[1], t, h, w])


def _subsample(x: Tensor, stride: int) -> Tensor:
    """``x[..., ::stride, ::stride]``; compacted in channels-last when ``x`` is, since neither the
    reshape after it nor oneDNN recognise the strided view as channels-last and would copy it
    to the contiguous layout."""
    y = x[:, :, :, ::stride, ::stride]
    if x.is_contiguous(memory_format=torch.channels_last_3d) and _torch_runs():
        return y.contiguous(memory_format=torch.channels_last_3d)
    return y


class SqueezeExcite(nn.Module):
    """Global mean -> 1x1 to ``hidden`` -> ReLU -> 1x1 back -> sigmoid -> rescale channels."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv3d(channels, hidden, 1)
        self.expand = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = F.relu(_linear(self.reduce, _clip_mean(x)))
        return x * _per_channel(torch.sigmoid(_linear(self.expand, s)))


class ContextGate(nn.Module):
    """Global mean -> 1x1 (same width) -> sigmoid -> rescale channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = nn.Conv3d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * _per_channel(torch.sigmoid(_linear(self.gate, _clip_mean(x))))


def _clip_mean(x: Tensor) -> Tensor:
    """The mean over (T, H, W), (B, C), as a sum scaled: the gradient of a sum is a broadcast
    view, where that of ``mean`` is a full-size tensor (2x faster gating, forward and backward).
    """
    return x.sum(dim=(2, 3, 4)) / (x.shape[2] * x.shape[3] * x.shape[4])


def _per_channel(s: Tensor) -> Tensor:
    """(B, C) -> (B, C, 1, 1, 1) in one view (indexing with None takes three, each an op and a
    backward node: overhead that a GPU's tiny steps feel)."""
    return s.view(s.shape[0], s.shape[1], 1, 1, 1)


def _linear(conv: nn.Conv3d, x: Tensor) -> Tensor:
    """A 1x1x1 ``conv`` on (B, C) means: a matrix product, where ``Conv3d`` on (B, C, 1, 1, 1)
    costs a oneDNN call each way (the Conv3d keeps the parameters' names and shapes)."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


class NonLocal(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. 2018) over all T*H*W positions.

    ``z = x + BN(W(softmax(theta(x)^T phi(x)) g(x)))``; BN's scale starts at zero so a new
    block starts as the identity, as in the paper.
    """

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.theta = Pointwise(channels, bottleneck, bias=True)
        self.phi = Pointwise(channels, bottleneck, bias=True)
        self.g = Pointwise(channels, bottleneck, bias=True)
        self.out = Pointwise(bottleneck, channels)
        self.norm = nn.BatchNorm3d(channels)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x: Tensor) -> Tensor:
        b, _, t, h, w = x.shape

        def tokens(m: nn.Module) -> Tensor:
            return m(x).reshape(b, 1, -1, t * h * w).transpose(-1, -2)

        # scale=1: the embedded Gaussian has no 1/sqrt(d) temperature.
        y = F.scaled_dot_product_attention(
            tokens(self.theta), tokens(self.phi), tokens(self.g), scale=1.0
        )
        y = y.transpose(-1, -2).reshape(b, -1, t, h, w)
        return x + self.norm(self.out(y))


class Residual(nn.Module):
    """``act(body(x) + shortcut(x))``; without a shortcut, ``act(body(x))``."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None, act: nn.Module) -> None:
        super().__init__()
        self.body, self.shortcut, self.act = body, shortcut, act

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.act(y)


class Head(nn.Module):
    """Global average over (T, H, W) -> dropout -> fully connected."""

    def __init__(self, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(_clip_mean(x)))
