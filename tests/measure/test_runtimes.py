"""Runtimes: each measures the file it writes, the file agrees with the PyTorch module (by a
relative error), the signature names the runtime and its version, and what is timed on one
thread is the work of the thread that times it."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import torch
from genomes import block
from genomes import genome as make_genome

from tvnsearch.errors import InputError
from tvnsearch.genome.tvn_format import published_genome
from tvnsearch.measure.device import DeviceSignature, device_signature
from tvnsearch.measure.measurement import measure
from tvnsearch.measure.profile import PROBE_RUNS, Settings, profile_from_dict
from tvnsearch.measure.profiler import ProfileCache, Profiler
from tvnsearch.measure.runtimes import (
    RUNTIMES,
    Mismatch,
    check_agrees,
    check_runtime,
    prepare,
    relative_error,
)
from tvnsearch.models.builder import build_model
from tvnsearch.status import Status

FAST = Settings(warmup=PROBE_RUNS + 1, runs=3, min_seconds=0.0)
INSTALLED = [name for name, r in RUNTIMES.items() if r.missing("cpu") is None]
GENOME = make_genome(
    block(spatial_type="depth", temporal_kernel=3, squeeze_ratio=0.25, skip=True),
    block(num_filters=16, spatial_stride=2, temporal_type="pool", temporal_kernel=2),
    num_frames=4,
    resolution=32,
)


@pytest.mark.parametrize("name", INSTALLED)
def test_every_installed_runtime_measures_and_signs_its_measurement(name) -> None:
    profile = measure(GENOME, 5, dataclasses.replace(FAST, runtime=name))
    assert profile.status == Status.ADMITTED, profile.log
    assert profile.runtime_ms > 0 and profile.peak_memory_mb > 0
    d = profile.device
    assert d.runtime == name
    if name == "eager":  # the key profiles had before runtimes were chosen
        assert d.key == d.hardware_key and d.runtime_version == ""
    else:
        assert d.key.endswith(f"|{name}={RUNTIMES[name].version()}") and d.runtime_version
    assert profile_from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


@pytest.mark.parametrize("name", [n for n in INSTALLED if n != "eager"])
def test_a_runtime_file_agrees_with_the_module_on_another_batch_size(name, tmp_path) -> None:
    model = build_model(GENOME, 5).eval()
    clip = torch.randn(1, 3, GENOME.num_frames, GENOME.resolution, GENOME.resolution)
    forward, error = prepare(RUNTIMES[name], model, clip, tmp_path, threads=1)
    assert (tmp_path / RUNTIMES[name].file_name).is_file()  # the file that is timed
    assert error <= 1e-5
    with torch.inference_mode():
        assert relative_error(forward(clip), model(clip)) <= 1e-5


def test_torchscript_folds_batch_norm_into_the_convolutions(tmp_path) -> None:
    model = build_model(published_genome("tvn_mobile_1"), 10).eval()
    clip = torch.randn(1, 3, 2, 224, 224)
    forward, _ = prepare(RUNTIMES["torchscript"], model, clip, tmp_path, threads=1)
    graph = str(forward.graph)
    assert "batch_norm" not in graph and "conv" in graph


def test_agreement_is_judged_relative_to_the_size_of_the_output() -> None:
    want = torch.tensor([[1e-6, -2e-6, 3e-6]])
    # Near-zero logits 10 % off: an absolute difference of 3e-7 would pass any absolute check.
    with pytest.raises(
        Mismatch, match=r"onnxruntime's output differs .* relative error 1.00e-01 over 1e-03"
    ):
        check_agrees("onnxruntime", want * 1.1, want, "cpu")
    # Large logits that agree to 1e-7 of their size: an absolute difference of 1e-3.
    big = torch.tensor([[1e4, -2e4, 3e4]])
    assert check_agrees("onnxruntime", big + 1e-3, big, "cpu") < 1e-6
    assert relative_error(torch.zeros(1, 3), torch.zeros(1, 3)) == 0.0
    assert relative_error(torch.zeros(1, 2), torch.zeros(1, 3)) == float("inf")
    with pytest.raises(Mismatch):
        check_agrees("torchscript", torch.full((1, 3), float("nan")), big, "cpu")


def test_a_runtime_whose_file_disagrees_fails_the_candidate_with_the_reason(monkeypatch) -> None:
    onnx = RUNTIMES["onnxruntime"]

    def wrong_load(path: Path, device: str, threads: int):
        right = onnx.loader(path, device, threads)
        return lambda clip: right(clip) * 1.01

    monkeypatch.setitem(RUNTIMES, "onnxruntime", dataclasses.replace(onnx, loader=wrong_load))
    profile = measure(GENOME, 5, dataclasses.replace(FAST, runtime="onnxruntime"))
    assert profile.status == Status.FAILED
    assert "onnxruntime's output differs from the PyTorch module's" in profile.reason
    assert "Traceback" in profile.log and profile.runs_ms == ()


@pytest.mark.parametrize("name", [n for n in INSTALLED if n != "eager"])
def test_on_one_thread_the_runtime_runs_in_the_thread_that_times_it(name, tmp_path) -> None:
    """One-thread runs are timed by the thread's CPU time (``timing._clock``): a runtime that
    worked on threads of its own would look nearly free."""
    model = build_model(published_genome("tvn_mobile_1"), 10).eval()
    clip = torch.randn(1, 3, 2, 224, 224)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        forward, _ = prepare(RUNTIMES[name], model, clip, tmp_path, threads=1)
        with torch.inference_mode():
            forward(clip)
            ratios = []
            for _ in range(3):
                cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
                forward(clip)
                ratios.append((time.thread_time_ns() - cpu) / (time.perf_counter_ns() - wall))
    finally:
        torch.set_num_threads(previous)
    assert max(ratios) > 0.5, ratios


def test_a_profiler_keeps_each_runtime_apart() -> None:
    cache = ProfileCache()
    eager = Profiler(FAST, cache=cache)
    onnx = Profiler(dataclasses.replace(FAST, runtime="onnxruntime"), cache=cache, node="n2")
    first, second = eager.measure(GENOME, 5), onnx.measure(GENOME, 5)
    assert first.device.runtime == "eager" and second.device.runtime == "onnxruntime"
    assert second.device.node == "n2" and second.device.label.endswith("|node=n2")
    assert len(cache) == 2 and onnx.measure(GENOME, 5) is second  # answered from its cache
    assert onnx.num_measurements == 1


def test_signatures_from_before_runtimes_read_back_with_their_old_key() -> None:
    old = {"kind": "cpu", "name": "Some CPU", "threads": 1, "torch_version": "2.5.0"}
    signature = DeviceSignature(**old)
    assert signature.key == "cpu|Some CPU|threads=1|torch=2.5.0" == signature.label
    assert signature.runtime == "eager"
    assert device_signature("cpu", 1).key == device_signature("cpu", 1, "eager").hardware_key


def test_a_runtime_that_cannot_run_here_is_named_with_the_reason(monkeypatch) -> None:
    with pytest.raises(InputError, match=r"profiler.runtime: must be one of .*'tensorrt'"):
        check_runtime("tensorrt", "cpu", source="r.toml", field="profiler.runtime")
    absent = dataclasses.replace(RUNTIMES["onnxruntime"], package="no-such-package-here")
    monkeypatch.setitem(RUNTIMES, "onnxruntime", absent)
    with pytest.raises(InputError, match="needs the no-such-package-here package"):
        check_runtime("onnxruntime", "cpu", source="r.toml")
    cpu_only = dataclasses.replace(RUNTIMES["eager"], name="cpu-only", devices=("cpu",))
    monkeypatch.setitem(RUNTIMES, "cpu-only", cpu_only)
    with pytest.raises(InputError, match="cpu-only runs on cpu only, not cuda"):
        check_runtime("cpu-only", "cuda", source="r.toml")


def test_a_figure_s_runtime_axis_names_the_runtime_it_was_measured_in() -> None:
    import pandas as pd

    from tvnsearch.inspect.figures import axis_label
    from tvnsearch.measure.device import runtime_of

    onnx = DeviceSignature("cpu", "X", 1, "2.13.0", "onnxruntime", "1.32.0", node="h node ab")
    old = DeviceSignature("cpu", "X", 1, "2.5.0")
    assert runtime_of(onnx.label) == "onnxruntime 1.32.0" and runtime_of(old.key) == "PyTorch eager"
    frame = pd.DataFrame({"cpu_device": [onnx.label, None], "cpu_ms": [1.0, None]})
    assert axis_label("cpu_ms", frame) == "CPU runtime per clip (ms), onnxruntime 1.32.0"
    assert axis_label("cpu_ms", frame.iloc[1:]) == "CPU runtime per clip (ms)"
