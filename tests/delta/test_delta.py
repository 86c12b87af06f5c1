from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from genomes import block, genome
from torch import Tensor, nn

from tvnsearch import build_model
from tvnsearch.delta import linear as delta_linear
from tvnsearch.delta.conv import DeltaConv2d
from tvnsearch.delta.layers import DeltaPolicy
from tvnsearch.delta.linear import DeltaLinear
from tvnsearch.delta.network import DeltaNetwork, enable_delta, fold_batch_norms
from tvnsearch.genome.genes import Genome

HAND_MADE = {
    "depthwise inverted SE skip": genome(
        block(
            spatial_type="depth",
            expansion=2,
            inverted_bottleneck=True,
            squeeze_ratio=0.5,
            skip=True,
            act="hswish",
            num_repeats=2,
        ),
        resolution=32,
        num_frames=1,
    ),
    "pools gate strided skip": genome(
        block(spatial_type="maxpool", spatial_stride=2, context_gate=True, skip=True),
        block(spatial_type="avgpool", num_filters=16, skip=True, expansion=3),
        resolution=32,
        num_frames=1,
    ),
    "5x5/3 non-local swish": genome(
        block(spatial_kernel=5, spatial_stride=3, non_local_width=4, act="swish"),
        block(num_filters=16, spatial_kernel=4, spatial_stride=2, skip=True),
        resolution=32,
        num_frames=1,
    ),
}
TEMPORAL = genome(
    block(temporal_kernel=3, temporal_stride=2, temporal_act="swish", skip=True),
    block(temporal_kernel=2, temporal_type="maxpool", spatial_type="depth", expansion=2),
    block(temporal_kernel=2, num_filters=16, squeeze_ratio=0.3),
    resolution=32,
    num_frames=6,
)


def make_model(g: Genome, seed: int = 0) -> nn.Module:
    """Built with seeded weights, then batch norms and head given non-trivial values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(g, 5).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)
        model.head.fc.weight.normal_(generator=gen)  # 0.01 at init: logits too small to judge
    return model


def moving_frames(num: int, size: int, *, seed: int = 0, noise: float = 0.0) -> Tensor:
    """``(num, 3, size, size)``: a fixed random background, a 5x5 patch moving over it."""
    gen = torch.Generator().manual_seed(seed)
    background = torch.randn(3, size, size, generator=gen)
    patch = torch.randn(3, 5, 5, generator=gen)
    frames = []
    for t in range(num):
        x = background.clone()
        row, col = (2 * t) % (size - 5), (3 * t + 7) % (size - 5)
        x[:, row : row + 5, col : col + 5] = patch
        if noise:
            x += noise * torch.randn(x.shape, generator=gen)
        frames.append(x)
    return torch.stack(frames)


def stream(net: nn.Module, clips: Tensor) -> Tensor:
    with torch.inference_mode():
        return torch.stack([net(c[None]) for c in clips])


def as_clips(frames: Tensor) -> Tensor:
    return frames[:, :, None]  # one frame per clip: (T, 3, 1, H, W)


def relative_error(got: Tensor, expected: Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


def tiny_genomes(tiny_space, count: int) -> list[Genome]:
    rng = random.Random(3)
    return [
        dataclasses.replace(tiny_space.sample(rng), num_frames=1, resolution=32)
        for _ in range(count)
    ]


@pytest.mark.parametrize("name", HAND_MADE)
def test_exact_at_threshold_zero_on_hand_made_genomes(name: str) -> None:
    model = make_model(HAND_MADE[name])
    net = enable_delta(model, all_layers=True)
    clips = as_clips(moving_frames(30, 32))
    assert relative_error(stream(net, clips), stream(model, clips)) < 1e-5
    assert any(s.num_dense < s.num_calls for s in net.summary().layers)  # sparse steps ran


def test_exact_at_threshold_zero_on_random_tiny_genomes(tiny_space) -> None:
    clips = as_clips(moving_frames(20, 32))
    for i, g in enumerate(tiny_genomes(tiny_space, 6)):
        model = make_model(g, seed=i)
        net = enable_delta(model, all_layers=True)
        assert relative_error(stream(net, clips), stream(model, clips)) < 1e-5, g


def test_exact_on_temporal_convolutions_with_sliding_clips() -> None:
    frames = moving_frames(26, 32)
    clips = torch.stack([frames[t : t + 6].transpose(0, 1) for t in range(20)])
    model = make_model(TEMPORAL)
    net = enable_delta(model, all_layers=True)
    assert relative_error(stream(net, clips), stream(model, clips)) < 1e-5
    kinds = {s.kind for s in net.summary().layers}
    assert {"conv3x1", "conv2x1"} <= kinds


def test_error_does_not_build_up_over_100_frames() -> None:
    model = make_model(HAND_MADE["pools gate strided skip"])
    net = enable_delta(model, all_layers=True)
    clips = as_clips(moving_frames(100, 32))
    got, expected = stream(net, clips), stream(model, clips)
    assert relative_error(got[-10:], expected[-10:]) < 1e-5
    assert relative_error(got, expected) < 1e-5


def test_channels_last_input_keeps_its_layout_and_stays_exact() -> None:
    model = make_model(HAND_MADE["depthwise inverted SE skip"])
    net = enable_delta(model, all_layers=True)
    clips = as_clips(moving_frames(15, 32)).contiguous(memory_format=torch.channels_last_3d)
    assert relative_error(stream(net, clips), stream(model, clips)) < 1e-5
    first = net.delta_layers["blocks.0.0.body.0.conv"]
    assert isinstance(first, DeltaConv2d) and first.axis == 0


def test_static_input_gives_zero_difference_and_no_work() -> None:
    net = enable_delta(make_model(HAND_MADE["depthwise inverted SE skip"]), all_layers=True)
    clip = as_clips(moving_frames(1, 32))[0]
    stream(net, clip.expand(10, -1, -1, -1, -1))
    for s in net.summary().layers:
        assert (s.num_calls, s.num_dense) == (10, 1)
        assert s.input_sparsity == 1.0 and s.changed_share == 0.0
        assert s.recomputed_share == pytest.approx(0.1) and s.work_share == pytest.approx(0.1)


def test_pointwise_statistics_on_a_hand_made_change() -> None:
    layer = DeltaConv2d(nn.Conv2d(4, 6, 1), DeltaPolicy(all_layers=True))
    x = torch.randn(1, 4, 16, 16)
    y = x.clone()
    y[0, :, 2, 3] += 1.0  # all four channels of one position
    y[0, 1, 5, 5] -= 2.0  # one channel of another
    y[0, 2:, 9, 0] += 0.5  # two channels of a third
    with torch.inference_mode():
        layer(x)
        layer.clear_stats()
        out = layer(y)
    s = layer.stats("pw")
    assert s.input_sparsity == 1 - 7 / (4 * 256)
    assert s.changed_share == 3 / 256 and s.recomputed_share == 3 / 256
    assert s.work_share == 3 / 256 and s.num_dense == 0
    assert torch.allclose(out, nn.functional.conv2d(y, layer.weight, layer.bias), atol=1e-6)


def test_spatial_statistics_count_whole_tiles() -> None:
    conv = nn.Conv2d(2, 3, 3, padding=1)
    layer = DeltaConv2d(conv, DeltaPolicy(all_layers=True))
    x = torch.randn(1, 2, 32, 32)
    y = x.clone()
    y[0, 0, 12, 12] += 1.0  # padded (13, 13): inside one 8 x 8 tile's 10 x 10 window only
    with torch.inference_mode():
        layer(x)
        layer.clear_stats()
        out = layer(y)
        assert torch.allclose(out, conv(y), atol=1e-6)
    s = layer.stats("conv")
    assert s.changed_share == 1 / 34**2 and s.input_sparsity == 1 - 1 / (2 * 34**2)
    assert s.recomputed_share == 64 / 1024


def test_linear_gathers_changed_features() -> None:
    linear = nn.Linear(10, 3)
    layer = DeltaLinear(linear, DeltaPolicy(all_layers=True))
    x = torch.randn(1, 10)
    y = x.clone()
    y[0, [2, 7]] += torch.tensor([0.5, -1.0])
    with torch.inference_mode():
        layer(x)
        layer.clear_stats()
        assert torch.allclose(layer(y), linear(y), atol=1e-6)
    s = layer.stats("fc")
    assert (s.changed_share, s.input_sparsity, s.work_share) == (0.2, 0.8, pytest.approx(0.2))


def test_dropped_differences_are_caught_up_once_they_add_past_the_threshold() -> None:
    conv = nn.Conv2d(2, 2, 1)
    layer = DeltaConv2d(conv, DeltaPolicy(threshold=0.1, refresh_limit=1e9, all_layers=True))
    x = torch.randn(1, 2, 8, 8)
    with torch.inference_mode():
        layer(x)
        for step in range(1, 4):
            x = x.clone()
            x[0, :, 0, 0] += 0.04  # each step below the threshold, three steps past it
            out = layer(x)
            moved = not torch.allclose(out[0, :, 0, 0], conv(x)[0, :, 0, 0], atol=1e-6)
            assert moved == (step < 3), step
    assert layer.stats("pw").changed_share == pytest.approx(1 / 3 / 64)


def test_threshold_error_stays_bounded_and_refreshes_bring_it_down() -> None:
    model = make_model(HAND_MADE["pools gate strided skip"])
    clips = as_clips(moving_frames(60, 32, noise=0.01))
    expected = stream(model, clips)
    errors, refreshes = {}, {}
    for limit in (1e9, 0.02):
        net = enable_delta(model, threshold=0.05, refresh_limit=limit, all_layers=True)
        got = stream(net, clips)
        errors[limit] = [relative_error(got[t], expected[t]) for t in range(len(clips))]
        refreshes[limit] = net.summary().num_refreshes
        assert net.summary().layers[0].input_sparsity > 0.9  # the noise was dropped
    assert refreshes[1e9] == 0 and refreshes[0.02] > 0
    assert max(errors[1e9][30:]) < 2 * max(errors[1e9][:30]) + 1e-3  # no build-up
    assert max(errors[1e9]) < 0.1
    assert max(errors[0.02]) < 0.01 and sum(errors[0.02]) < sum(errors[1e9]) / 3


def test_reset_starts_a_new_stream_densely() -> None:
    model = make_model(HAND_MADE["5x5/3 non-local swish"])
    net = enable_delta(model, all_layers=True)
    first, second = as_clips(moving_frames(5, 32)), as_clips(moving_frames(5, 32, seed=1))
    stream(net, first)
    net.reset()
    net.clear_stats()
    got = stream(net, second[:1])
    assert all((s.num_checked, s.num_dense) == (0, 1) for s in net.summary().layers)
    got = torch.cat([got, stream(net, second[1:])])
    assert relative_error(got, stream(model, second)) < 1e-5


def test_a_new_input_shape_is_computed_densely() -> None:
    model = make_model(HAND_MADE["depthwise inverted SE skip"])
    net = enable_delta(model, all_layers=True)
    small, large = as_clips(moving_frames(3, 32)), as_clips(moving_frames(3, 48))
    stream(net, small)
    assert relative_error(stream(net, large), stream(model, large)) < 1e-5


def test_layers_too_small_to_pay_run_densely_by_default() -> None:
    model = make_model(HAND_MADE["depthwise inverted SE skip"])
    net = enable_delta(model)
    clips = as_clips(moving_frames(5, 32))
    assert relative_error(stream(net, clips), stream(model, clips)) < 1e-5
    assert not any(s.active for s in net.summary().layers)
    assert all(s.num_dense == 5 for s in net.summary().layers)


def test_a_layer_that_keeps_changing_skips_its_checks() -> None:
    layer = DeltaConv2d(nn.Conv2d(4, 4, 1), DeltaPolicy(all_layers=True))
    frames = torch.randn(20, 1, 4, 8, 8)
    with torch.inference_mode():
        for x in frames:
            layer(x)
    s = layer.stats("pw")
    assert (s.num_calls, s.num_dense, s.recomputed_share) == (20, 20, 1.0)
    assert s.num_checked == 4  # calls 2, 4, 7 and 12: then 1, 2, 4 and 8 calls unchecked


def test_folding_keeps_the_function_and_enable_delta_keeps_the_model() -> None:
    model = make_model(HAND_MADE["pools gate strided skip"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = make_model(HAND_MADE["pools gate strided skip"])
    num_norms = sum(isinstance(m, nn.BatchNorm3d) for m in folded.modules())
    assert fold_batch_norms(folded) == num_norms  # every conv + BN pair, shortcuts included
    clips = as_clips(moving_frames(3, 32))
    assert relative_error(stream(folded, clips), stream(model, clips)) < 1e-5
    net = enable_delta(model)
    assert isinstance(net, DeltaNetwork) and not any(
        isinstance(m, nn.BatchNorm3d) for m in net.modules()
    )
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_non_local_and_squeeze_layers_are_left_dense() -> None:
    net = enable_delta(make_model(HAND_MADE["5x5/3 non-local swish"]))
    assert not any("theta" in name or "phi" in name for name in net.delta_layers)
    net = enable_delta(make_model(HAND_MADE["depthwise inverted SE skip"]))
    assert not any("reduce" in name or "expand" in name for name in net.delta_layers)


@pytest.mark.parametrize(
    ("option", "value"),
    [("threshold", -0.1), ("threshold", float("nan")), ("refresh_limit", 0.0)],
)
def test_bad_options_are_refused_by_name(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        enable_delta(nn.Linear(2, 2), **{option: value})


def test_linear_recomputes_densely_every_drift_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delta_linear, "DRIFT_STEPS", 3)
    linear = nn.Linear(10, 3)
    layer = DeltaLinear(linear, DeltaPolicy(all_layers=True))
    x = torch.randn(1, 10)
    with torch.inference_mode():
        for step in range(9):
            x = x.clone()
            x[0, step % 10] += 1.0
            assert torch.allclose(layer(x), linear(x), atol=1e-6)
    assert layer.stats("fc").num_dense == 3  # the first call, then after three residual steps


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_a_streaming_network_steps_exactly_with_delta_layers(depth) -> None:
    from tvnsearch.models.streaming import build_streaming_model

    one = block(spatial_kernel=3, temporal_kernel=2, num_filters=24, expansion=2, num_repeats=2)
    g = genome(one, resolution=48, num_frames=8, pipeline_depth=depth)
    torch.manual_seed(depth)
    model = build_streaming_model(g, 5).eval()
    delta = enable_delta(model, threshold=0.0)
    frames = torch.randn(1, 3, 1, 48, 48).repeat(1, 1, 16, 1, 1)
    frames[:, :, :, 8:14, 8:14] += torch.randn(1, 3, 16, 6, 6)  # one small moving patch
    plain_state, delta_state = model.initial_state(1), model.initial_state(1)
    with torch.no_grad():
        for frame in frames.unbind(2):
            expected, plain_state = model.step(frame, plain_state)
            got, delta_state = delta.step(frame, delta_state)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    checked = [s for s in delta.summary().layers if s.num_checked]
    assert checked and max(s.input_sparsity for s in checked) > 0.5  # sparse work was done
