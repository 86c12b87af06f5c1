from __future__ import annotations

import dataclasses
import math
import random
import subprocess
import sys
import textwrap

import pytest
import torch
from genomes import block, genome

from tvnsearch.data.frame_cache import FrameCache
from tvnsearch.data.synth import SynthConfig, write_synth
from tvnsearch.genome.genes import Genome
from tvnsearch.genome.plan import plan_network
from tvnsearch.genome.space import SearchSpace
from tvnsearch.measure.timing import fixed_threads
from tvnsearch.models.builder import TVN, build_model, count_params, summarize
from tvnsearch.models.causal import CausalTemporalConv, CausalTemporalPool
from tvnsearch.models.stages import stage_layout
from tvnsearch.models.stream_script import export_stream
from tvnsearch.models.streaming import StreamingTVN, build_streaming_model
from tvnsearch.train.training import TrainConfig, prepare_data, train_genome

DEPTHS = (0, 1, 2, 4)
NUM_RANDOM = 10


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: a second intra-op thread only waits, and on a shared core it waits long.
    with fixed_threads(1):
        yield


def random_genomes(space: SearchSpace, num: int = NUM_RANDOM) -> list[Genome]:
    rng = random.Random(7)
    return [space.sample(rng) for _ in range(num)]


def streamed(model: StreamingTVN, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits after every frame, (B, T, classes); the clip's logits) from ``step``."""
    state, outputs = model.initial_state(clip.shape[0]), []
    with torch.no_grad():
        for t in range(clip.shape[2]):
            logits, state = model.step(clip[:, :, t], state)
            outputs.append(logits)
        return torch.stack(outputs, 1), model.clip_logits(state)


def per_frame(model: StreamingTVN, clip: torch.Tensor) -> torch.Tensor:
    """``forward_steps`` held between outputs: what a stream shows after every frame."""
    with torch.no_grad():
        steps = model.forward_steps(clip)
    frames = torch.arange(clip.shape[2]) // model.output_rate
    return steps[:, frames]


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-4) -> None:
    scale = want.abs().max().item() + 1e-6  # random weights reach very different magnitudes
    assert (got - want).abs().max().item() <= rtol * scale


def fresh(g: Genome, *, skips: bool = False, seed: int = 0) -> StreamingTVN:
    torch.manual_seed(seed)
    model = build_streaming_model(g, 5, temporal_skips=skips)
    for skip in model.skips:  # a trained skip: zero scales would hide it from the comparison
        torch.nn.init.normal_(skip.norm.weight)
    return model.eval()


def test_random_genomes_cover_every_kind_of_op(tiny_space) -> None:
    instances = [p for g in random_genomes(tiny_space) for p in plan_network(g).instances]
    kinds = {p.temporal.type for p in instances if p.temporal}
    kinds |= {p.spatial.type for p in instances if p.spatial}
    assert {"1d", "maxpool", "avgpool", "std", "depth"} <= kinds
    assert any(p.temporal and p.temporal.stride > 1 for p in instances)
    assert any(p.squeeze_width for p in instances) and any(p.context_gate for p in instances)
    assert any(p.non_local_width and p.out_shape[1] > 1 for p in instances)
    assert any(p.residual_stride is not None for p in instances)


@pytest.mark.parametrize("skips", [False, True])
@pytest.mark.parametrize("depth", DEPTHS)
def test_step_equals_the_whole_clip(tiny_space, depth: int, skips: bool) -> None:
    for i, g in enumerate(random_genomes(tiny_space)):
        model = fresh(dataclasses.replace(g, pipeline_depth=depth), skips=skips, seed=i)
        clip = torch.randn(2, 3, g.num_frames, g.resolution, g.resolution)
        outputs, clip_logits = streamed(model, clip)
        assert_close(outputs, per_frame(model, clip))
        with torch.no_grad():
            assert_close(clip_logits, model(clip))


@pytest.mark.parametrize("depth", [0, 1])
def test_an_output_never_depends_on_later_frames(depth: int) -> None:
    one = block(temporal_kernel=3, squeeze_ratio=0.5, context_gate=True, non_local_width=4)
    g = genome(one, block(temporal_type="avgpool", temporal_kernel=2, skip=True), num_frames=6)
    model = fresh(dataclasses.replace(g, pipeline_depth=depth))
    clip = torch.randn(1, 3, 6, 16, 16)
    later = clip.clone()
    later[:, :, 3:] = torch.randn(1, 3, 3, 16, 16)
    with torch.no_grad():
        before, after = model.forward_steps(clip), model.forward_steps(later)
    torch.testing.assert_close(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3:], after[:, 3:])


def test_each_stage_boundary_delays_by_one_step_of_its_rate() -> None:
    strided = block(temporal_kernel=2, temporal_stride=2)
    g = genome(strided, block(), block(), num_frames=8, resolution=8)
    layout = stage_layout(plan_network(g), 1)
    assert layout.unit_in_rate == (1, 2, 2) and layout.num_stages == 3
    assert layout.latency_frames == 2 + 2  # two boundaries at rate 2
    model = fresh(dataclasses.replace(g, pipeline_depth=1))
    clip = torch.randn(1, 3, 8, 8, 8)
    moved = clip.clone()
    moved[:, :, 2] += 1.0  # reaches the head on its step of frame 2 + 4
    with torch.no_grad():
        before, after = model.forward_steps(clip), model.forward_steps(moved)
    torch.testing.assert_close(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3], after[:, 3])


def test_temporal_skips_cut_the_latency() -> None:
    g = genome(*[block()] * 6, num_frames=8, resolution=8)
    plan = plan_network(g)
    assert stage_layout(plan, 1).latency_frames == 5
    assert stage_layout(plan, 1, temporal_skips=True).latency_frames == 2
    assert stage_layout(plan, 2).latency_frames == 2
    assert stage_layout(plan, 0).latency_frames == 0
    model = fresh(dataclasses.replace(g, pipeline_depth=1), skips=True)
    clip = torch.randn(1, 3, 8, 8, 8)
    moved = clip.clone()
    moved[:, :, 3] += 1.0  # seen first at frame 3 + 2
    with torch.no_grad():
        before, after = model.forward_steps(clip), model.forward_steps(moved)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5], after[:, 5])


def test_new_skips_leave_the_network_as_it_was() -> None:
    g = genome(block(spatial_stride=2), block(num_filters=16), block(), num_frames=4)
    g = dataclasses.replace(g, pipeline_depth=1)
    plain = build_streaming_model(g, 5).eval()
    with_skips = build_streaming_model(g, 5, temporal_skips=True).eval()
    missing, unexpected = with_skips.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(name.startswith("skips.") for name in missing) and not unexpected
    clip = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(with_skips(clip), plain(clip))


def test_causal_temporal_conv_pads_the_past_and_strides_from_step_0() -> None:
    conv = torch.nn.Conv2d(1, 1, (3, 1), (2, 1), bias=False)
    op = CausalTemporalConv(conv, 3, 2, 1)
    x = torch.randn(1, 1, 5, 1, 1)
    w = conv.weight.detach().flatten()
    padded = torch.cat([torch.zeros(2), x.flatten()])
    want = torch.stack([padded[j : j + 3] @ w for j in (0, 2, 4)])  # outputs at steps 0, 2, 4
    torch.testing.assert_close(op(x).detach().flatten(), want)


def test_causal_temporal_pooling_ignores_the_padding() -> None:
    x = -torch.rand(1, 2, 5, 2, 2) - 1.0
    avg = CausalTemporalPool("avgpool", 3, 1, 1, 2)(x)
    biggest = CausalTemporalPool("maxpool", 3, 1, 1, 2)(x)
    torch.testing.assert_close(avg[:, :, 0], x[:, :, 0])
    torch.testing.assert_close(avg[:, :, 1], x[:, :, :2].mean(2))
    torch.testing.assert_close(biggest[:, :, 0], x[:, :, 0])
    torch.testing.assert_close(biggest[:, :, 4], x[:, :, 2:].amax(2))


def test_build_model_pipelines_when_the_genome_asks() -> None:
    g = genome(block(temporal_kernel=2, squeeze_ratio=0.5), block(num_filters=16), num_frames=4)
    assert isinstance(build_model(g, 5), TVN)
    pipelined = build_model(dataclasses.replace(g, pipeline_depth=1), 5)
    assert isinstance(pipelined, StreamingTVN) and pipelined.num_stages == 2
    assert count_params(pipelined) == count_params(build_model(g, 5))
    summary = summarize(dataclasses.replace(g, pipeline_depth=1), 5)
    assert [b.output_shape for b in summary.blocks] == [
        b.output_shape for b in summarize(g, 5).blocks
    ]
    assert pipelined(torch.randn(2, 3, 4, 16, 16)).shape == (2, 5)


def test_backpropagation_through_the_pipeline(tiny_space) -> None:
    g = dataclasses.replace(random_genomes(tiny_space)[0], pipeline_depth=2)
    model = build_streaming_model(g, 5, temporal_skips=True).train()
    clip = torch.randn(3, 3, g.num_frames, g.resolution, g.resolution)
    loss = torch.nn.functional.cross_entropy(model(clip), torch.tensor([0, 1, 2]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_train_genome_trains_a_pipelined_genome(tmp_path) -> None:
    write_synth(tmp_path / "synth", SynthConfig(num_videos=18, size=32, num_frames=8))
    data = prepare_data(tmp_path / "synth", FrameCache(tmp_path / "cache", short_side=32))
    first = block(spatial_stride=2, temporal_kernel=2, squeeze_ratio=0.5, num_repeats=2)
    second = block(num_filters=16, context_gate=True, skip=True, num_repeats=2)
    g = dataclasses.replace(genome(first, second, num_frames=4, frame_stride=2), pipeline_depth=2)
    assert isinstance(build_model(g, 9), StreamingTVN) and build_model(g, 9).num_stages == 2
    result = train_genome(g, data, TrainConfig(iterations=4, batch_size=4))
    assert result.status == "trained", result.reason
    assert result.iterations == 4 and math.isfinite(result.final_loss)
    assert 0 <= result.top1 <= result.top5 <= 1


EXPORT_CHECK = """
import sys, torch

class Refuse:  # any attempt to import tvnsearch fails loudly
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tvnsearch":
            raise ImportError("tvnsearch was imported")

sys.meta_path.insert(0, Refuse())
module = torch.jit.load(sys.argv[1])
frames, want, want_clip = torch.load(sys.argv[2])
state = module.initial_state(frames[0].shape[0])
assert [list(s.shape[1:]) for s in state[1:]] == module.state_shapes
worst = 0.0
for frame, expected in zip(frames, want):
    logits, state = module(frame, state)
    worst = max(worst, (logits - expected).abs().max().item())
worst = max(worst, (module.clip_logits(state) - want_clip).abs().max().item())
assert not [m for m in sys.modules if m.startswith("tvnsearch")]
print(worst)
"""


@pytest.mark.parametrize("depth", [0, 2])
def test_export_runs_without_tvnsearch(tmp_path, tiny_space, depth: int) -> None:
    g = dataclasses.replace(random_genomes(tiny_space)[3], pipeline_depth=depth)
    model = fresh(g, skips=depth > 0)
    clip = torch.randn(2, 3, g.num_frames, g.resolution, g.resolution)
    outputs, clip_logits = streamed(model, clip)
    export_stream(model, tmp_path / "stream.pt")
    torch.save((clip.unbind(2), outputs.unbind(1), clip_logits), tmp_path / "check.pt")
    (tmp_path / "check.py").write_text(textwrap.dedent(EXPORT_CHECK))
    done = subprocess.run(
        [sys.executable, "check.py", "stream.pt", "check.pt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout) <= 1e-4
