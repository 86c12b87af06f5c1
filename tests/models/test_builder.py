from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import PUBLISHED_DIR
from genomes import block, genome
from reference_count import reference_walk
from torch import nn

from tvnsearch import build_model, published_genome, summarize
from tvnsearch.genome.plan import plan_network
from tvnsearch.models.builder import count_params
from tvnsearch.models.layers import NonLocal, SpatialPool, TemporalPool, same_padding

# Trainable parameters with a 400-class head (Kinetics-400), as built; see the issue note.
PUBLISHED_PARAMS = {
    "tvn1": 26_539_710,
    "tvn2": 109_565_916,
    "tvn3": 67_865_442,
    "tvn4": 43_793_994,
    "tvn_mobile_1": 7_360_476,
    "tvn_mobile_2": 5_536_329,
}


def block_output_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    shapes = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
        for b in model.blocks
    ]
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


def test_published_networks_match_the_reference_reading(published_name: str) -> None:
    cfg = json.loads((PUBLISHED_DIR / f"{published_name}.json").read_text())
    g = published_genome(published_name)
    model = build_model(g, 400).eval()
    x = torch.randn(1, 3, g.num_frames, g.resolution, g.resolution)
    ref_params, ref_shapes = reference_walk(cfg, 400)
    assert block_output_shapes(model, x) == ref_shapes
    assert count_params(model) == ref_params == PUBLISHED_PARAMS[published_name]
    assert [b.output_shape for b in summarize(g, 400).blocks] == ref_shapes


def test_published_forward_at_own_input_size(published_name: str) -> None:
    g = published_genome(published_name)
    model = build_model(g, 7).eval()
    with torch.inference_mode():
        y = model(torch.randn(2, 3, g.num_frames, g.resolution, g.resolution))
    assert y.shape == (2, 7) and torch.isfinite(y).all()


def test_summary_parameters_equal_the_built_model(published_name: str) -> None:
    g = published_genome(published_name)
    s = summarize(g, 10)
    model = build_model(g, 10)
    assert s.params == count_params(model)
    assert [b.params for b in s.blocks] == [count_params(b) for b in model.blocks]


def test_order_of_operations_in_one_instance() -> None:
    """SEMANTICS: 1x1+BN+act, kxk+BN+act, temporal+BN+act, expand+BN, SE, gate; then add, act."""
    g = genome(
        block(temporal_kernel=3, expansion=2, squeeze_ratio=0.5, context_gate=True, skip=True)
    )
    instance = build_model(g, 5).blocks[0][0]
    names = [type(m).__name__ for m in instance.body]
    assert names == [
        "Pointwise",
        "BatchNorm3d",
        "ReLU",
        "SpatialConv",
        "BatchNorm3d",
        "ReLU",
        "TemporalConv",
        "BatchNorm3d",
        "ReLU",
        "Pointwise",
        "BatchNorm3d",
        "SqueezeExcite",
        "ContextGate",
    ]
    assert [type(m).__name__ for m in instance.shortcut] == ["Pointwise", "BatchNorm3d"]


def test_inverted_bottleneck_order_and_widths() -> None:
    g = genome(
        block(
            spatial_type="depth",
            expansion=4,
            inverted_bottleneck=True,
            temporal_kernel=2,
            num_filters=8,
        )
    )
    body = build_model(g, 5).blocks[0][0].body
    widths = [m.conv.out_channels for m in body if hasattr(m, "conv")]
    assert widths == [32, 32, 32, 32, 8]  # expand, pointwise, depthwise, temporal, project
    depthwise = [m for m in body if type(m).__name__ == "SpatialConv"]
    assert [m.conv.groups for m in depthwise] == [32]


def test_flops_of_one_convolution_are_exact() -> None:
    # std 3x3 stride 2 on 16x16, 4 frames: 1x1 conv 3->8, then 3x3 conv 8->8 on 8x8.
    s = summarize(genome(block(spatial_stride=2)), 10)
    pointwise = 2 * 3 * 8 * (4 * 16 * 16)
    spatial = 2 * 8 * 8 * 9 * (4 * 8 * 8)
    assert s.blocks[0].flops == pointwise + spatial
    assert s.head_flops == 2 * 8 * 10


@pytest.mark.parametrize(("size", "kernel", "stride"), [(7, 3, 2), (8, 4, 3), (5, 1, 3), (2, 5, 1)])
def test_same_padding_gives_ceil_output(size: int, kernel: int, stride: int) -> None:
    before, after = same_padding(size, kernel, stride)
    assert (size + before + after - kernel) // stride + 1 == math.ceil(size / stride)


def test_average_pool_counts_only_real_pixels() -> None:
    """TF SAME average pooling divides by the number of real (not padded) elements."""
    x = torch.arange(1.0, 6.0).reshape(1, 1, 5, 1, 1)  # T = 5: 1..5
    y = TemporalPool("avgpool", 2, 2)(x).flatten().tolist()
    assert y == [1.5, 3.5, 5.0]  # windows [1,2], [3,4], [5] (the pad is not counted)
    img = torch.ones(1, 1, 1, 3, 3)
    assert torch.equal(SpatialPool("avgpool", 3, 1)(img), img)


def test_max_pool_ignores_padding() -> None:
    x = -torch.ones(1, 1, 1, 3, 3)
    assert torch.equal(SpatialPool("maxpool", 2, 2)(x), -torch.ones(1, 1, 1, 2, 2))


def test_non_local_attends_over_all_positions_and_starts_as_identity() -> None:
    layer = NonLocal(8, 4)
    x = torch.randn(2, 8, 3, 4, 4)
    assert torch.equal(layer(x), x)  # BN scale initialised to zero (built model does this)
    nn.init.ones_(layer.norm.weight)
    layer.eval()
    y = layer(x)
    x2 = x.clone()
    x2[:, :, 0, 0, 0] += 1.0  # one position changes every other position's output
    assert not torch.allclose(layer(x2)[:, :, 2, 3, 3], y[:, :, 2, 3, 3])


def test_non_local_is_built_and_zero_initialised() -> None:
    model = build_model(genome(block(non_local_width=4)), 3)
    layers = [m for m in model.modules() if isinstance(m, NonLocal)]
    assert len(layers) == 1 and torch.count_nonzero(layers[0].norm.weight) == 0


def test_residual_is_a_projection_even_when_shapes_match() -> None:
    model = build_model(genome(block(skip=True, num_filters=3)), 3)
    assert model.blocks[0][0].shortcut is not None


def test_residual_dropped_when_frame_count_changes() -> None:
    g = genome(block(skip=True, temporal_kernel=2, temporal_stride=2, num_repeats=2))
    instances = plan_network(g).instances
    assert instances[0].residual_stride is None  # T 4 -> 2
    assert instances[1].residual_stride == 1


def test_repeats_alternate_the_temporal_op_and_use_stride_one() -> None:
    g = genome(
        block(temporal_kernel=3, temporal_stride=2, spatial_stride=2, num_repeats=4), num_frames=8
    )
    plans = plan_network(g).instances
    assert [p.temporal is not None for p in plans] == [True, False, True, False]
    assert [p.out_shape[1:] for p in plans] == [(4, 8, 8), (4, 8, 8), (4, 8, 8), (4, 8, 8)]


def test_kernel_one_skips_the_op_and_its_stride() -> None:
    g = genome(block(spatial_kernel=1, spatial_stride=4, temporal_kernel=1, temporal_stride=2))
    assert plan_network(g).out_shape[1:] == (4, 16, 16)


def test_squeeze_excite_width_follows_the_actual_width() -> None:
    """expansion 0 with pooling keeps the input width; SE must still build and run."""
    g = genome(
        block(
            spatial_type="maxpool",
            temporal_type="maxpool",
            temporal_kernel=2,
            squeeze_ratio=0.5,
            context_gate=True,
        )
    )
    model = build_model(g, 4).eval()
    assert model(torch.randn(1, 3, 4, 16, 16)).shape == (1, 4)


def test_head_is_pool_dropout_linear() -> None:
    model = build_model(genome(block()), 11)
    assert model.head.dropout.p == 0.5
    assert model.head.fc.out_features == 11
    assert model.head.fc.weight.std().item() == pytest.approx(0.01, rel=0.5)


@pytest.mark.parametrize("act", ["relu", "swish", "hswish"])
def test_activations_build_and_train_one_step(act: str) -> None:
    g = genome(
        block(
            spatial_act=act,
            temporal_act=act,
            act=act,
            temporal_kernel=2,
            squeeze_ratio=0.3,
            skip=True,
            non_local_width=4,
        )
    )
    model = build_model(g, 3)
    loss = model(torch.randn(2, 3, 4, 16, 16)).logsumexp(dim=1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
