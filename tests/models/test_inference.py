"""Batch norms folded into the convolutions before them: the same network, one pass less."""

from __future__ import annotations

import pytest
import torch
from genomes import block
from genomes import genome as make_genome
from torch import nn

from tvnsearch.genome.tvn_format import published_genome
from tvnsearch.measure.runtimes import relative_error
from tvnsearch.models.builder import build_model
from tvnsearch.models.inference import inference_copy

GENOMES = {
    "every op": make_genome(
        block(spatial_type="depth", temporal_kernel=3, squeeze_ratio=0.25, skip=True),
        block(num_filters=16, spatial_stride=2, expansion=2, inverted_bottleneck=True),
        block(temporal_type="pool", temporal_kernel=2, context_gate=True, non_local_width=8),
        num_frames=4,
        resolution=32,
    ),
    "tvn_mobile_2": published_genome("tvn_mobile_2"),
}


def trained_statistics(model: nn.Module) -> nn.Module:
    """Batch norms with the statistics and affine terms of a trained network, not 0/1."""
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", GENOMES)
def test_folding_keeps_the_output_and_leaves_no_batch_norm_after_a_convolution(name) -> None:
    genome = GENOMES[name]
    model = trained_statistics(build_model(genome, 7))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = inference_copy(model)
    clip = torch.randn(2, 3, genome.num_frames, genome.resolution, genome.resolution)
    with torch.inference_mode():
        assert relative_error(folded(clip), model(clip)) < 1e-5
    norms = lambda m: sum(isinstance(x, nn.BatchNorm3d) for x in m.modules())  # noqa: E731
    assert norms(folded) < norms(model)
    for sequence in (m for m in folded.modules() if isinstance(m, nn.Sequential)):
        pairs = zip(list(sequence)[:-1], list(sequence)[1:], strict=True)
        assert not any(hasattr(a, "conv") and isinstance(b, nn.BatchNorm3d) for a, b in pairs)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the original is untouched
    assert model.training is False and any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
