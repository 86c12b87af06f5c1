"""Helpers for tests of built networks."""

from __future__ import annotations

import torch
from torch import nn


def with_trained_statistics(model: nn.Module) -> nn.Module:
    """``model`` in evaluation with the batch norm statistics and affine terms of a trained
    network, not 0 and 1, that would let a layer's error pass unscaled."""
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()
