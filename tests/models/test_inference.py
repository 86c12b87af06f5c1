"""Batch norms folded into the convolutions before them: the same network, one pass less."""

from __future__ import annotations

import pytest
import torch
from genomes import block
from genomes import genome as make_genome
from networks import with_trained_statistics
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


@pytest.mark.parametrize("name", GENOMES)
def test_folding_keeps_the_output_and_leaves_no_batch_norm_after_a_convolution(name) -> None:
    genome = GENOMES[name]
    model = with_trained_statistics(build_model(genome, 7))
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
