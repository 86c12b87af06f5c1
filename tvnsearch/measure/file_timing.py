"""Timing a runtime's file on a device that cannot run Ray (a phone over ``adb``, a board over
``ssh``): the profiler writes the file here, checks it against the PyTorch module here, then runs
the recipe's ``[profiler] command`` to time it there.

The command is a shell command line; ``{file}``, ``{shape}`` (C,T,H,W), ``{threads}``, ``{runs}``
and ``{warmup}`` are filled in (each quoted for the shell). Whatever it does (copy the file, run a
benchmark tool, convert that tool's output), the last line it prints must be one JSON object::

    {"runs_ms": [12.1, 12.0, ...], "device": "Pixel 8 (Tensor G3)", "runtime_version": "1.20.0"}

``python -m tvnsearch.measure.file_timing FILE --runtime NAME --shape C,T,H,W ...`` prints that
line: the runner itself, on a device with Python and the runtime, and the local stand-in that the
tests use. For a device without Python, a wrapper around the runtime's own benchmark tool
(``onnxruntime_perf_test``, ExecuTorch's ``executor_runner``) prints it instead.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tvnsearch.measure.profile import Settings

TIMEOUT_SECONDS = 600.0


class CommandFailed(RuntimeError):
    """The profiler's command failed, or printed no timing line."""


@dataclass(frozen=True)
class TimedElsewhere:
    runs_ms: tuple[float, ...]
    device: str
    runtime_version: str


PLACEHOLDERS = ("file", "shape", "threads", "runs", "warmup")


def command_problem(command: str) -> str | None:
    """Why ``command`` cannot be filled in (an unknown ``{name}``, a lone brace); None if fine."""
    try:
        command.format(**dict.fromkeys(PLACEHOLDERS, ""))
    except (KeyError, IndexError, ValueError) as exc:
        known = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
        return f"cannot be filled in ({exc!r}): it may use {known}; write a literal brace twice"
    return None


def time_elsewhere(
    command: str, path: Path, shape: tuple[int, ...], settings: Settings
) -> TimedElsewhere:
    """Run ``command`` on the file at ``path`` and read its timing line."""
    filled = command.format(
        file=shlex.quote(str(path)),
        shape=",".join(map(str, shape)),
        threads=settings.threads,
        runs=settings.runs,
        warmup=settings.warmup,
    )
    try:
        done = subprocess.run(
            filled, shell=True, capture_output=True, text=True, timeout=TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        raise CommandFailed(
            f"the profiler's command gave no answer in {TIMEOUT_SECONDS:g} s"
        ) from None
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(nothing on stderr)"]
        raise CommandFailed(f"the profiler's command exited {done.returncode}: {tail[0]}")
    return read_timing_line(done.stdout)


def read_timing_line(stdout: str) -> TimedElsewhere:
    lines = stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1])
        runs = tuple(float(ms) for ms in data["runs_ms"])
        timed = TimedElsewhere(runs, str(data["device"]), str(data.get("runtime_version", "")))
    except (IndexError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        last = lines[-1][:200] if lines else "nothing"
        why = 'its last line must be JSON: {"runs_ms": [...], "device": "...", ...}'
        raise CommandFailed(f"the profiler's command printed {last!r}; {why}") from None
    if not runs or min(runs) <= 0:
        raise CommandFailed(f"the profiler's command timed no run: {runs}")
    return timed


def main(argv: list[str] | None = None) -> int:
    """Time a runtime's file here and print the timing line (see the module's docstring)."""
    import torch

    from tvnsearch.measure.device import cpu_model
    from tvnsearch.measure.runtimes import RUNTIMES

    parser = argparse.ArgumentParser(prog="python -m tvnsearch.measure.file_timing")
    parser.add_argument("file")
    parser.add_argument("--runtime", required=True, choices=[n for n in RUNTIMES if n != "eager"])
    parser.add_argument("--shape", required=True, help="C,T,H,W of one clip")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    runtime = RUNTIMES[args.runtime]
    torch.set_num_threads(args.threads)
    forward = runtime.load(Path(args.file), "cpu", args.threads)
    clip = torch.randn(1, *(int(n) for n in args.shape.split(",")))
    runs = []
    with torch.inference_mode():
        for i in range(args.warmup + args.runs):
            start = time.perf_counter_ns()
            forward(clip)
            if i >= args.warmup:
                runs.append((time.perf_counter_ns() - start) / 1e6)
    line = {"runs_ms": runs, "device": cpu_model(), "runtime_version": runtime.version()}
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
