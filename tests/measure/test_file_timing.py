"""A device that cannot run Ray: the profiler writes and checks the runtime's file here and a
command times it there. The stand-in for the device is this machine, reached by the runner that
a board with Python would run (``python -m tvnsearch.measure.file_timing``)."""

from __future__ import annotations

import dataclasses
import shlex
import sys

import pytest
from genomes import block
from genomes import genome as make_genome

from tvnsearch.errors import InputError
from tvnsearch.measure.device import cpu_model
from tvnsearch.measure.file_timing import CommandFailed, command_problem, read_timing_line
from tvnsearch.measure.profile import PROBE_RUNS, Settings
from tvnsearch.measure.profiler import Profiler
from tvnsearch.measure.runtimes import RUNTIMES
from tvnsearch.status import Status

PYTHON = shlex.quote(sys.executable)
RUNNER = (
    f"{PYTHON} -m tvnsearch.measure.file_timing {{file}} --runtime onnxruntime --shape {{shape}}"
    " --threads {threads} --runs {runs} --warmup {warmup}"
)
SETTINGS = Settings(warmup=PROBE_RUNS + 1, runs=4, min_seconds=0.0, runtime="onnxruntime")
GENOME = make_genome(block(num_filters=8, temporal_kernel=3), num_frames=4, resolution=32)


def test_a_command_times_the_checked_file_and_names_the_device_it_ran_on() -> None:
    profiler = Profiler(dataclasses.replace(SETTINGS, command=RUNNER))
    profile = profiler.measure(GENOME, 5)
    assert profile.status == Status.ADMITTED, profile.log
    assert len(profile.runs_ms) == SETTINGS.runs and profile.runtime_ms > 0
    d = profile.device
    assert d.name == cpu_model() and d.runtime == "onnxruntime"
    assert d.runtime_version == RUNTIMES["onnxruntime"].version()
    assert d.node == f"via {sys.executable}" and d == profiler.signature
    assert profiler.measure(GENOME, 5) is profile  # its cache answers: the keys agree


def test_a_command_that_fails_at_start_is_named_before_any_candidate() -> None:
    failing = "echo 'adb: device offline' >&2; exit 1"
    with pytest.raises(InputError, match=r"profiler.command: did not time a small network: "):
        Profiler(dataclasses.replace(SETTINGS, command=failing))
    with pytest.raises(InputError, match="exited 1: adb: device offline"):
        Profiler(dataclasses.replace(SETTINGS, command=failing))


def test_a_command_that_fails_later_fails_that_candidate_with_its_reason(tmp_path) -> None:
    flag = tmp_path / "broken"
    # A shell group's braces are doubled: the command is filled in with str.format.
    broken = "{{ echo 'ssh: connection reset' >&2; exit 255; }}"
    profiler = Profiler(
        dataclasses.replace(SETTINGS, command=f"test -e {flag} && {broken}; {RUNNER}")
    )
    flag.touch()
    profile = profiler.measure(GENOME, 5)
    assert profile.status == Status.FAILED
    assert "exited 255: ssh: connection reset" in profile.reason and profile.log


def test_the_timing_line_is_read_strictly() -> None:
    timed = read_timing_line('pushing...\n{"runs_ms": [2.5, 2.0], "device": "Pixel 8"}\n')
    assert timed.runs_ms == (2.5, 2.0) and timed.device == "Pixel 8"
    for printed in ("", "Average inference time cost: 2.1 ms", '{"runs_ms": [], "device": "x"}'):
        with pytest.raises(CommandFailed):
            read_timing_line(printed)


def test_a_command_that_cannot_be_filled_in_is_named() -> None:
    assert command_problem(RUNNER) is None
    assert "{file}, {shape}" in command_problem("adb push {model} /data/local/tmp")
    assert command_problem("sh -c 'f() {{ true; }}; f' {file}") is None
