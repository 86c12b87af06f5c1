"""A network prepared for inference only: what the compiled runtimes are written from, and what
delta inference starts from.

Every eval-mode batch norm that directly follows a convolution in a block is folded into that
convolution (its weights scaled, a bias added) and removed: one pass over the activations less
per pair. The exporters' own fusions miss these pairs, because a TVN's convolutions fold frames
into the batch and back around each one, so that the batch norm does not follow the convolution
in their graph.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tvnsearch.models.layers import (
    ContextGate,
    Pointwise,
    SpatialConv,
    SqueezeExcite,
    TemporalConv,
)

_CONV_WRAPPERS = (Pointwise, SpatialConv, TemporalConv)  # channels stay on axis 1


def inference_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with its batch norms folded and its gates' weights
    stored as matrices; ``model`` is left as it was."""
    folded = copy.deepcopy(model).eval()
    fold_batch_norms(folded)
    gate_weights_as_matrices(folded)
    return folded


@torch.no_grad()
def gate_weights_as_matrices(module: nn.Module) -> None:
    """Store the 1x1x1 weights of squeeze-and-excitation and context gates as the matrices their
    ``F.linear`` multiplies by (``tvnsearch.models.layers._linear`` flattens them on every call):
    an exported graph then holds a constant matrix, which XNNPACK takes into its delegate, where
    a flattened weight is a computed input that it leaves to the portable kernels."""
    for m in module.modules():
        if isinstance(m, SqueezeExcite | ContextGate):
            for conv in (c for c in m.children() if isinstance(c, nn.Conv3d)):
                conv.weight = nn.Parameter(conv.weight.flatten(1))


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every eval-mode batch norm that directly follows a convolution inside an
    ``nn.Sequential`` into that convolution (replacing the norm by ``nn.Identity``); in place.
    Returns how many were folded."""
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, norm = _conv_of(seq[i]), seq[i + 1]
            if conv is not None and _foldable(norm, conv):
                _fold(conv, norm)
                seq[i + 1] = nn.Identity()
                folded += 1
    return folded


def _conv_of(m: nn.Module) -> nn.Conv2d | None:
    if isinstance(m, _CONV_WRAPPERS):
        return m.conv
    return m if isinstance(m, nn.Conv2d) else None


def _foldable(norm: nn.Module, conv: nn.Conv2d) -> bool:
    return (
        isinstance(norm, _BatchNorm)
        and not norm.training
        and norm.running_mean is not None
        and norm.num_features == conv.out_channels
    )


@torch.no_grad()
def _fold(conv: nn.Conv2d, norm: _BatchNorm) -> None:
    assert norm.running_mean is not None and norm.running_var is not None
    scale = torch.rsqrt(norm.running_var + norm.eps)
    shift = -norm.running_mean * scale
    if norm.affine:
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(bias * scale + shift)
