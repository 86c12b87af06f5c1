from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest
import torch
from conftest import SPACE_NAMES, SPACES_DIR
from genomes import small_genome
from torch import nn

from tvnsearch.cli.main import main
from tvnsearch.errors import InputError
from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.space import load_space
from tvnsearch.measure import timing
from tvnsearch.measure.device import check_device
from tvnsearch.measure.measurement import measure
from tvnsearch.measure.profile import (
    PROBE_RUNS,
    Settings,
    Status,
    describe_profile,
    profile_from_dict,
)
from tvnsearch.measure.runtimes import relative_error
from tvnsearch.models.builder import build_model
from tvnsearch.models.layers import NonLocal

FAST = Settings(warmup=PROBE_RUNS + 1, runs=5, min_seconds=0.0)


class Raising(nn.Module):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.exc


def test_a_measurement_has_every_figure_and_the_device() -> None:
    g = small_genome()
    p = measure(g, 10, FAST)
    cost = count_cost(g, 10)
    assert p.status == Status.ADMITTED and p.reason == ""
    assert p.runs == FAST.runs and all(ms > 0 for ms in p.runs_ms)
    assert min(p.runs_ms) == p.runtime_ms <= p.median_ms <= max(p.runs_ms) and p.iqr_ms >= 0
    assert 0 <= p.noise_ms <= p.median_ms - p.runtime_ms + p.iqr_ms
    assert (p.params, p.flops) == (cost.params, cost.flops)
    assert p.threads == FAST.threads == p.device.threads
    assert p.device.kind == "cpu" and p.device.torch_version == torch.__version__
    assert p.device.name and p.genome_id == g.id
    assert cost.min_memory_bytes / 2**20 <= p.peak_memory_mb < 64


def test_thread_count_is_fixed_while_measuring_and_restored_after(monkeypatch) -> None:
    seen = []
    real = timing._time_cpu
    monkeypatch.setattr(
        timing, "_time_cpu", lambda *a: seen.append(torch.get_num_threads()) or real(*a)
    )
    before = torch.get_num_threads()
    measure(small_genome(), 10, Settings(threads=2, warmup=PROBE_RUNS + 1, runs=2, min_seconds=0.0))
    assert set(seen) == {2} and torch.get_num_threads() == before


def test_peak_memory_includes_the_attention_matrix_inside_the_kernel() -> None:
    # 16x16 after the stride, 4 frames: the non-local layer's N x N matrix alone is 4 MiB. The
    # math kernel holds it (in channels-last inference PyTorch picks a flash kernel, without).
    from torch.nn.attention import SDPBackend, sdpa_kernel

    without = measure(small_genome(), 10, FAST)
    with sdpa_kernel(SDPBackend.MATH):
        with_attention = measure(small_genome(non_local_width=4), 10, FAST)
    n = 4 * 16 * 16
    assert with_attention.peak_memory_mb - without.peak_memory_mb >= 4 * n * n / 2**20


def test_probe_over_the_limit_stops_early_without_the_full_measurement() -> None:
    p = measure(small_genome(), 10, FAST, stop_above_ms=1e-6)
    assert p.status == Status.REJECTED and p.stopped_early and not p.out_of_memory
    assert p.runs == 1 < FAST.runs and p.peak_memory_mb is None  # the cold run was over
    full = measure(small_genome(), 10, FAST, stop_above_ms=1e6)
    assert full.status == Status.ADMITTED and full.runs == FAST.runs


@pytest.mark.parametrize(
    ("exc", "status", "out_of_memory"),
    [
        (ValueError("broken layer"), Status.FAILED, False),
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
            Status.REJECTED,
            True,
        ),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory"), Status.REJECTED, True),
        (MemoryError(), Status.REJECTED, True),
    ],
)
def test_errors_while_measuring_become_records(monkeypatch, exc, status, out_of_memory) -> None:
    monkeypatch.setattr(timing, "build_model", lambda genome, num_classes: Raising(exc))
    p = measure(small_genome(), 10, FAST)
    assert p.status == status and p.median_ms is None and p.runs == 0
    assert p.out_of_memory == out_of_memory
    assert type(exc).__name__ in p.reason
    assert p.params == count_cost(small_genome(), 10).params


def test_a_network_too_large_for_memory_is_not_built(monkeypatch) -> None:
    monkeypatch.setattr(timing, "available_bytes", lambda device: 1000)
    monkeypatch.setattr(timing, "build_model", lambda *a: pytest.fail("must not be built"))
    p = measure(small_genome(), 10, FAST)
    assert p.out_of_memory and "MiB free" in p.reason


def test_records_survive_a_round_trip_through_json_data() -> None:
    p = measure(small_genome(), 10, FAST)
    again = profile_from_dict(p.to_dict())
    assert again == p and again.to_dict()["median_ms"] == p.median_ms


def test_runtime_median_spread_and_noise_are_computed_from_the_runs() -> None:
    p = measure(small_genome(), 10, FAST)
    fake = profile_from_dict({**p.to_dict(), "runs_ms": [4.0, 1.0, 3.0, 2.0, 100.0]})
    assert fake.median_ms == 3.0 and fake.iqr_ms == 2.0
    assert fake.runtime_ms == 1.0 and fake.noise_ms == 0.0  # the fastest tenth is one run
    many = profile_from_dict({**p.to_dict(), "runs_ms": [1.0 + i / 100 for i in range(20)]})
    assert many.runtime_ms == 1.0 and many.noise_ms == pytest.approx(0.02)


def test_asking_for_a_missing_gpu_names_the_field() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InputError, match="device: cuda was asked for, but no CUDA GPU"):
        check_device("cuda", source="profiler")
    with pytest.raises(InputError, match="threads: must be >= 1"):
        check_device("cpu", threads=0, source="profiler")


def test_one_device_check_names_the_field_for_every_kind_of_name() -> None:
    check_device("cpu", source="command line")
    with pytest.raises(InputError, match=r"--device: must be cpu, cuda or cuda:N, but got 'tpu'"):
        check_device("tpu", source="command line", field="--device")
    with pytest.raises(InputError, match="must be cpu, cuda or cuda:N, but got 'cpu:1'"):
        check_device("cpu:1", source="command line")
    with pytest.raises(InputError, match="was asked for, but"):
        check_device(f"cuda:{torch.cuda.device_count()}", source="command line")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_cuda_measurement_times_kernels_and_reports_the_gpu() -> None:
    g = small_genome(num_filters=32, resolution=64)
    p = measure(g, 10, Settings(device="cuda", warmup=PROBE_RUNS + 2, runs=10, min_seconds=0.0))
    assert p.status == Status.ADMITTED and p.device.kind == "cuda"
    assert p.device.name == torch.cuda.get_device_name()
    assert p.median_ms > 0 and p.peak_memory_mb >= count_cost(g, 10).min_memory_bytes / 2**20


def test_cli_prints_the_figures_and_json_with_the_median(capsys, tmp_path) -> None:
    path = tmp_path / "g.json"
    path.write_text(small_genome().to_json())
    code = main(
        [
            "profile",
            str(path),
            "--runs",
            "3",
            "--min-seconds",
            "0",
            "--warmup",
            "1",
            "--num-classes",
            "10",
        ]
    )
    out = capsys.readouterr().out
    assert (
        code == 0 and "ms per clip" in out and "the fastest of 3 runs" in out and "MiB peak" in out
    )
    code = main(
        ["profile", str(path), "--json", "--runs", "3", "--min-seconds", "0", "--threads", "2"]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["median_ms"] > 0 and data["runs"] == 3 and data["threads"] == 2
    assert data["params"] == count_cost(small_genome(), 400).params
    assert data["device"]["torch_version"] == torch.__version__


def test_cli_without_a_gpu_exits_2_naming_the_option(capsys, tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    path = tmp_path / "g.json"
    path.write_text(small_genome().to_json())
    assert main(["profile", str(path), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "tvnsearch profile: command line: device: cuda was asked for, "
        "but no CUDA GPU is available\n"
    )


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--min-seconds", "nan"], "--min-seconds: must be a number of seconds from 0 to 600"),
        (["--min-seconds", "1e9"], "--min-seconds: must be a number of seconds from 0 to 600"),
        (["--threads", "999"], "--threads: this machine lets this process use"),
    ],
)
def test_cli_settings_out_of_range_exit_2_naming_the_option(
    capsys, tmp_path, option: list[str], expected: str
) -> None:
    path = tmp_path / "g.json"
    path.write_text(small_genome().to_json())
    try:
        code = main(["profile", str(path), *option])
    except SystemExit as exc:  # argparse's own refusals exit by themselves
        code = exc.code
    assert code == 2 and expected in capsys.readouterr().err


def test_short_networks_are_timed_for_at_least_min_seconds() -> None:
    settings = Settings(warmup=PROBE_RUNS + 1, runs=3, min_seconds=0.1)
    p = measure(small_genome(), 10, settings)
    assert p.runs > 3 and sum(p.runs_ms) >= 0.1 * 1000 * 0.8


def test_a_pipelined_genome_is_also_timed_frame_by_frame() -> None:
    settings = Settings(warmup=PROBE_RUNS + 1, runs=3, min_seconds=0.0)
    clip = measure(small_genome(), 10, settings)
    piped = measure(dataclasses.replace(small_genome(), pipeline_depth=1), 10, settings)
    assert clip.frame_runs_ms == () and clip.frame_ms == clip.runtime_ms  # reruns its clip
    assert piped.status == Status.ADMITTED and len(piped.frame_runs_ms) >= 3
    assert piped.frame_ms == min(piped.frame_runs_ms) != piped.runtime_ms
    assert piped.frames_per_second == pytest.approx(1000 / piped.frame_ms)
    assert profile_from_dict(piped.to_dict()) == piped
    assert "ms per frame" in describe_profile(piped)


class Script:
    """A timer and a cold run of made-up milliseconds, counting the runs asked for."""

    def __init__(self, cold_ms: float, run_ms: float, complete: bool = True) -> None:
        self.cold_ms, self.run_ms, self.complete = cold_ms, run_ms, complete
        self.runs = 0

    def timer(self, n: int) -> tuple[float, ...]:
        self.runs += n
        return (self.run_ms,) * n

    def cold(self, limit_ms: float | None) -> tuple[float, bool]:
        return self.cold_ms, self.complete


@pytest.mark.parametrize(
    ("script", "runs", "stopped"),
    [
        (Script(cold_ms=50.0, run_ms=1.0), 1, True),  # the cold run alone is over 4x
        (Script(cold_ms=5.0, run_ms=1.0, complete=False), 1, True),  # stopped part-way
        (Script(cold_ms=30.0, run_ms=12.0), PROBE_RUNS, True),  # the probe is over
        (Script(cold_ms=30.0, run_ms=8.0), FAST.runs, False),  # measured in full
    ],
)
def test_an_early_stop_costs_a_few_times_the_budget_at_most(script, runs, stopped) -> None:
    runs_ms, early = timing.schedule_runs(script.timer, FAST, 10.0, script.cold)
    assert early == stopped and len(runs_ms) == runs
    assert script.runs <= (PROBE_RUNS if stopped else script.runs)


def test_a_slow_network_s_cold_run_stops_part_way(monkeypatch) -> None:
    g = small_genome()
    model, clip = timing._prepare(g, 10, FAST, count_cost(g, 10))
    instances = [i for block in model.blocks for i in block]
    seen = []
    for instance in instances:
        instance.register_forward_hook(lambda *a, i=instance: seen.append(i))
    with torch.inference_mode():
        elapsed, complete = timing._cold_prefix(model, clip, limit_ms=0.0)
    assert not complete and len(seen) == 1 < len(instances) and elapsed > 0
    with torch.inference_mode():
        assert timing._cold_prefix(model, clip, limit_ms=None)[1]


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_tiled_weights_leave_nothing_of_an_empty_model_unwritten(name: str) -> None:
    space, rng = load_space(SPACES_DIR / f"{name}.toml"), random.Random(0)
    drawn = (space.sample(rng) for _ in range(100))
    small = [g for g in drawn if count_cost(g, 10).params < 2_000_000][:5]  # memory of a test
    for genome in [*small, small_genome()]:
        with torch.device("meta"):
            model = build_model(genome, 10)
        model = model.to_empty(device="cpu")
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                tensor.fill_(math.nan if tensor.is_floating_point() else -1)
        timing.tile_weights(model, seed=0)
        for tensor in [*model.parameters(), *model.buffers()]:
            written = torch.isfinite(tensor) if tensor.is_floating_point() else tensor >= 0
            assert written.all()
        drawn = build_model(genome, 10)  # the usual initialisation, for the scales
        for tiled, usual in zip(model.modules(), drawn.modules(), strict=True):
            if isinstance(tiled, nn.Conv2d | nn.Conv3d | nn.Linear) and tiled.weight.numel() > 99:
                want = usual.weight.std().item()
                assert tiled.weight.std().item() == pytest.approx(want, rel=0.3)
            if isinstance(tiled, NonLocal):  # a non-local block starts as the identity
                assert not tiled.norm.weight.any()


def test_a_large_network_timed_with_tiled_weights_keeps_its_scale(tmp_path) -> None:
    """Logits that grow without bound would turn the rounding of two runtimes into O(1)
    differences: tiled weights must keep a network as tame as its usual initialisation."""
    genome = small_genome(non_local_width=8, num_filters=32)
    with torch.device("meta"):
        model = build_model(genome, 10)
    model = model.to_empty(device="cpu").eval()
    timing.tile_weights(model, seed=0)
    clip = torch.randn(3, 3, genome.num_frames, genome.resolution, genome.resolution)
    with torch.inference_mode():
        logits = model(clip)
        assert logits.abs().max() < 10
        assert relative_error(model(clip[:1]), logits[:1]) < 1e-4


def test_a_large_network_is_timed_with_tiled_weights(monkeypatch) -> None:
    tiled = []
    monkeypatch.setattr(timing, "TILED_WEIGHTS_PARAMS", 0)
    monkeypatch.setattr(
        timing, "tile_weights", lambda m, seed: tiled.append(seed) or _tile(m, seed)
    )
    profile = measure(small_genome(), 10, FAST)
    assert tiled == [FAST.seed] and profile.status == Status.ADMITTED and profile.runtime_ms > 0


_tile = timing.tile_weights


def test_cli_profiles_in_each_runtime_asked_for(capsys, tmp_path) -> None:
    path = tmp_path / "g.json"
    path.write_text(small_genome().to_json())
    fast = ["--runs", "2", "--min-seconds", "0", "--warmup", "3", "--num-classes", "10"]
    code = main(["profile", str(path), "--runtime", "eager,onnxruntime", "--json", *fast])
    records = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["device"]["runtime"] for r in records] == ["eager", "onnxruntime"]
    assert records[1]["device"]["runtime_version"] and records[1]["runtime_ms"] > 0
    assert main(["profile", str(path), "--runtime", "torchscript", *fast]) == 0
    assert f"in torchscript {torch.__version__}" in capsys.readouterr().out
    assert main(["profile", str(path), "--runtime", "tflite"]) == 2
    err = capsys.readouterr().err
    assert "--runtime: must be one of ['eager', 'torchscript', 'onnxruntime'" in err
