from __future__ import annotations

import dataclasses
import json
import random
import threading

import pytest
import torch
from genomes import block, genome

from tvnsearch.genome.genes import Genome
from tvnsearch.measure.profile import Settings
from tvnsearch.measure.stream_timing import StreamTiming, measure_stream, stream_timing_from_dict
from tvnsearch.measure.timing import fixed_threads
from tvnsearch.models.pipeline import (
    OneAfterAnother,
    StreamPipeline,
    ThreadedPipeline,
    assign_stages,
    worker_loads,
)
from tvnsearch.models.stream_script import script_stream
from tvnsearch.models.streaming import StreamingTVN, build_streaming_model

QUICK = Settings(warmup=3, runs=3, min_seconds=0.0)


@pytest.fixture(autouse=True)
def one_thread():
    # The stage workers use one intra-op thread each; the references must compute the same way.
    with fixed_threads(1):
        yield


def pipelined(depth: int = 1, *, num_frames: int = 6) -> Genome:
    units = (
        block(temporal_kernel=2, temporal_stride=2, squeeze_ratio=0.5),
        block(num_filters=16, temporal_type="maxpool", temporal_kernel=2, skip=True),
        block(context_gate=True, non_local_width=4, num_repeats=2),
    )
    return dataclasses.replace(genome(*units, num_frames=num_frames), pipeline_depth=depth)


def model_of(g: Genome, *, skips: bool = False) -> StreamingTVN:
    torch.manual_seed(0)
    return build_streaming_model(g, 5, temporal_skips=skips).eval()


def frames_of(g: Genome, batch: int = 2) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    clip = torch.randn(g.num_frames, batch, 3, g.resolution, g.resolution, generator=generator)
    return list(clip.unbind(0))


def test_assignment_evens_out_the_workers() -> None:
    costs = [5.0, 1.0, 1.0, 2.0, 3.0, 4.0]
    two = assign_stages(costs, 2)
    assert sorted(s for stages in two for s in stages) == list(range(6))
    assert max(worker_loads(costs, two)) == 8.0
    assert assign_stages(costs, 1) == ((0, 1, 2, 3, 4, 5),)
    assert len(assign_stages([1.0, 2.0], 4)) == 2  # never more workers than stages
    many = [float(c) for c in random.Random(0).choices(range(1, 20), k=40)]
    greedy = worker_loads(many, assign_stages(many, 3))
    assert max(greedy) <= sum(many) / 3 + max(many)


@pytest.mark.parametrize("skips", [False, True])
@pytest.mark.parametrize("num_workers", [2, 3])
def test_threads_give_what_one_after_another_gives(num_workers: int, skips: bool) -> None:
    g = pipelined()
    model, frames = model_of(g, skips=skips), frames_of(g)
    want, want_state = OneAfterAnother(model).run(frames, model.initial_state(2))
    assignment = assign_stages([1.0] * model.num_stages, num_workers)
    with ThreadedPipeline(model, assignment) as pipeline:
        got, state = pipeline.run(frames, model.initial_state(2))
        again, _ = pipeline.run(frames[:2], model.initial_state(2))  # the pool is reused
        one, _ = pipeline.step(frames[0], model.initial_state(2))
    assert len(got) == len(frames) and all(map(torch.equal, got, want))
    assert all(map(torch.equal, state, want_state))
    assert all(map(torch.equal, again, want[:2])) and torch.equal(one, want[0])


def test_threads_run_the_compiled_model_the_same() -> None:
    g = pipelined(2)
    model, frames = model_of(g), frames_of(g)
    want, _ = OneAfterAnother(model).run(frames, model.initial_state(2))
    compiled = script_stream(model).model
    with ThreadedPipeline(compiled, assign_stages([1.0] * model.num_stages, 2)) as pipeline:
        got, _ = pipeline.run(frames, compiled.initial_state(2))
    assert all(map(torch.equal, got, want))


def test_the_workers_are_threads_of_a_persistent_pool() -> None:
    g = pipelined()
    model = model_of(g)
    before = threading.active_count()
    with ThreadedPipeline(model, assign_stages([1.0] * model.num_stages, 2)) as pipeline:
        assert threading.active_count() == before + 1  # the caller is worker 0
        pipeline.run(frames_of(g), model.initial_state(2))
        assert threading.active_count() == before + 1
    assert threading.active_count() == before


class Failing:
    """A model whose stage 1 raises on its third frame."""

    num_stages = 2

    def __init__(self) -> None:
        self.calls = 0

    def run_stage(self, stage: int, frame: torch.Tensor, state: list) -> list:
        if stage == 1:
            self.calls += 1
            if self.calls == 3:
                raise ValueError("stage 1 broke")
        return [frame]

    def assemble(self, state: list, parts: list) -> tuple[torch.Tensor, list]:
        return parts[-1][0], state


def test_a_failing_stage_raises_in_the_caller_and_the_pool_still_closes() -> None:
    frames = [torch.zeros(1)] * 5
    with ThreadedPipeline(Failing(), ((0,), (1,))) as pipeline:
        with pytest.raises(ValueError, match="stage 1 broke"):
            pipeline.run(frames, [])
        outputs, _ = pipeline.run(frames[:2], [])
    assert len(outputs) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_streams_give_what_one_after_another_gives() -> None:
    g = pipelined()
    model = model_of(g, skips=True).cuda()
    frames = [f.cuda() for f in frames_of(g)]
    want, want_state = OneAfterAnother(model).run(frames, model.initial_state(2))
    got, state = StreamPipeline(model).run(frames, model.initial_state(2))
    for a, b in zip([*got, *state], [*want, *want_state], strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("mode", ["one_after_another", "concurrent"])
def test_measure_stream_records_frame_time_and_throughput(mode: str) -> None:
    g = pipelined(1, num_frames=4)
    threads = 2 if mode == "concurrent" else 1  # the stage workers use one thread each
    timing = measure_stream(g, 5, dataclasses.replace(QUICK, threads=threads), mode=mode)
    assert isinstance(timing, StreamTiming) and timing.mode == mode
    assert timing.runs_ms and timing.frame_ms > 0
    assert timing.frames_per_second == pytest.approx(1000 / timing.frame_ms)
    assert timing.num_stages == 4 and timing.latency_frames == 2 + 2 + 2
    assert timing.num_workers == threads
    assert sorted(s for w in timing.assignment for s in w) == [0, 1, 2, 3]
    assert 1.0 <= timing.worker_bound <= timing.bound <= timing.num_stages
    assert timing.device.threads == threads and timing.genome_id == g.id
    data = json.loads(json.dumps(timing.to_dict()))
    assert data["frame_ms"] == timing.frame_ms and data["device"]["kind"] == "cpu"
    assert stream_timing_from_dict(data) == timing and not timing.stopped_early


def test_measure_stream_stops_early_above_a_budget() -> None:
    g = pipelined(1, num_frames=4)
    timing = measure_stream(g, 5, QUICK, mode="one_after_another", stop_above_ms=1e-6)
    assert timing.stopped_early and len(timing.runs_ms) == 1  # the cold run alone was over


def test_measure_stream_times_at_least_min_seconds_of_frames() -> None:
    g = pipelined(1, num_frames=4)
    settings = dataclasses.replace(QUICK, min_seconds=0.2)
    timing = measure_stream(g, 5, settings, mode="one_after_another")
    frames_per_run = 8  # tvnsearch.measure.stream_timing.MIN_FRAMES_PER_RUN, output rate 1
    assert sum(timing.runs_ms) * frames_per_run >= 0.2 * 1000
    assert len(timing.runs_ms) > QUICK.runs
