"""The record of one on-device measurement (``Profile``) and how it is taken (``Settings``).

One clip (batch 1) at the genome's own input size, in inference mode, on a fixed number of CPU
threads or on the GPU, in one runtime (PyTorch eager, or the file another runtime runs: see
``tvnsearch.measure.runtimes``; peak memory and a stream's frames are PyTorch eager's). A cold
run, a short probe, the rest of the warm-up, then the timed runs: the median and the
interquartile range of those are the figures. With ``stop_above_ms`` the probe decides early:
when even its fastest run is slower than that, the measurement stops there.

``tvnsearch.measure.measurement.measure`` takes one.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from tvnsearch.measure.device import DeviceSignature
from tvnsearch.measure.runtimes import RUNTIMES
from tvnsearch.status import Status

PROBE_RUNS = 2  # after the cold run: enough to see a clear violator, cheap for everyone else


@dataclass(frozen=True)
class Settings:
    """How to measure; the defaults aim at medians that repeat within a few percent on an idle
    core, in about 30 forward passes."""

    device: str = "cpu"  # "cpu" or "cuda"
    threads: int = 1  # one core: the most repeatable figure, and what the profiler reserves
    warmup: int = 5  # the cold run and the probe included, so never fewer than 1 + PROBE_RUNS
    runs: int = 25  # at least this many timed runs ...
    # ... and at least this much timing: 25 runs of a 15 ms network gave a CV of 5-7 % between
    # repeated measurements on an idle core, a second of runs keeps it near 1 %.
    min_seconds: float = 1.0
    seed: int = 0  # weights and clip; runtime barely depends on them, but repeats should not
    runtime: str = "eager"  # what runs the network (``tvnsearch.measure.runtimes.RUNTIMES``)
    # A shell command that times the runtime's file on another device (``file_timing``); "":
    # timed in this process.
    command: str = ""

    def __post_init__(self) -> None:
        assert self.device in ("cpu", "cuda"), self.device
        assert self.runtime in RUNTIMES, self.runtime
        assert self.threads >= 1 and self.runs >= 1 and self.warmup >= 1, self
        assert self.min_seconds >= 0, self


DEFAULT_SETTINGS = Settings()


@dataclass(frozen=True)
class Profile:
    """One measurement; the median and spread are computed from ``runs_ms``, the timed runs.

    ``status`` is ``ADMITTED`` when measured in full (the gate then judges the figures),
    ``REJECTED`` when it ran out of memory or ``stopped_early`` (the probe alone was over
    ``stop_above_ms``), ``FAILED`` when it raised; ``reason`` says why.
    """

    genome_id: str
    num_classes: int
    device: DeviceSignature
    status: Status
    params: int
    flops: int
    runs_ms: tuple[float, ...] = ()
    peak_memory_mb: float | None = None
    reason: str = ""
    seconds: float = 0.0  # wall time of the whole measurement, building the model included
    # A live stream (``tvnsearch.measure.stream_timing``, stages concurrent on ``threads`` cores):
    # milliseconds per new frame, one entry per timed run, for a pipelined genome
    # (pipeline_depth > 0); empty for a clip network, which reruns its clip per frame.
    frame_runs_ms: tuple[float, ...] = ()
    latency_frames: int = 0  # how many frames behind its input a pipeline's output is
    stopped_early: bool = False
    log: str = ""  # the traceback of a measurement that raised; ``reason`` is its first line

    @property
    def out_of_memory(self) -> bool:
        return self.status == Status.REJECTED and not self.stopped_early

    @property
    def runtime_ms(self) -> float | None:
        """The figure a budget is judged on: the fastest timed run, what the network costs when
        nothing disturbs it. Medians move with whatever else the machine does (10-35 % between
        processes on a shared 2-core VM); the fastest run repeats within a few percent."""
        return min(self.runs_ms) if self.runs_ms else None

    @property
    def noise_ms(self) -> float | None:
        """The uncertainty of ``runtime_ms``: how far the fastest tenth of the runs spreads."""
        if not self.runs_ms:
            return None
        fastest = sorted(self.runs_ms)
        return fastest[len(fastest) // 10] - fastest[0]

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.runs_ms) if self.runs_ms else None

    @property
    def iqr_ms(self) -> float | None:
        if len(self.runs_ms) < 2:
            return 0.0 if self.runs_ms else None
        q1, _, q3 = statistics.quantiles(self.runs_ms, n=4, method="inclusive")
        return q3 - q1

    @property
    def frame_ms(self) -> float | None:
        """Milliseconds per new frame of a live stream, its fastest run (a clip network: its clip
        runtime)."""
        return min(self.frame_runs_ms) if self.frame_runs_ms else self.runtime_ms

    @property
    def frames_per_second(self) -> float | None:
        frame_ms = self.frame_ms
        return None if frame_ms is None or frame_ms <= 0 else 1000.0 / frame_ms

    @property
    def runs(self) -> int:
        return len(self.runs_ms)

    @property
    def threads(self) -> int:
        return self.device.threads

    def to_dict(self) -> dict[str, Any]:
        return {
            "genome_id": self.genome_id,
            "num_classes": self.num_classes,
            "status": str(self.status),
            "runtime_ms": self.runtime_ms,
            "noise_ms": self.noise_ms,
            "median_ms": self.median_ms,
            "iqr_ms": self.iqr_ms,
            "runs": self.runs,
            "threads": self.threads,
            "peak_memory_mb": self.peak_memory_mb,
            "params": self.params,
            "flops": self.flops,
            "reason": self.reason,
            "seconds": self.seconds,
            "runs_ms": list(self.runs_ms),
            "frame_ms": self.frame_ms,
            "frame_runs_ms": list(self.frame_runs_ms),
            "latency_frames": self.latency_frames,
            "stopped_early": self.stopped_early,
            "log": self.log,
            "device": self.device.to_dict(),
        }


def profile_from_dict(data: dict[str, Any]) -> Profile:
    """The inverse of ``Profile.to_dict`` (derived figures are recomputed, not read)."""
    return Profile(
        genome_id=data["genome_id"],
        num_classes=data["num_classes"],
        device=DeviceSignature(**data["device"]),
        status=Status(_LEGACY_STATUS.get(data["status"], data["status"])),
        params=data["params"],
        flops=data["flops"],
        runs_ms=tuple(data["runs_ms"]),
        peak_memory_mb=data["peak_memory_mb"],
        reason=data["reason"],
        seconds=data["seconds"],
        frame_runs_ms=tuple(data.get("frame_runs_ms", ())),  # caches from before streaming
        latency_frames=data.get("latency_frames", 0),
        stopped_early=data.get("stopped_early", data["status"] == "stopped_early"),
        log=data.get("log", ""),
    )


# A profile cache written before profiles shared the candidate vocabulary (``tvnsearch.status``).
_LEGACY_STATUS = {"measured": "admitted", "stopped_early": "rejected", "out_of_memory": "rejected"}


def describe_profile(p: Profile) -> str:
    """A few lines for people: the figures, or the reason there are none."""
    d = p.device
    runtime = "PyTorch eager" if d.runtime == "eager" else f"{d.runtime} {d.runtime_version}"
    lines = [
        f"genome {p.genome_id} on {d.kind} ({d.name}), {d.threads} thread(s), "
        f"torch {d.torch_version}, in {runtime}" + (f", on {d.node}" if d.node else "")
    ]
    if p.status == Status.ADMITTED:
        lines += [
            f"  runtime  {p.runtime_ms:.3f} ms per clip (+{p.noise_ms:.3f} ms noise), the fastest "
            f"of {p.runs} runs; median {p.median_ms:.3f} ms (IQR {p.iqr_ms:.3f} ms)",
            f"  memory   {p.peak_memory_mb:.1f} MiB peak (weights, clip and forward pass)",
        ]
        if p.frame_runs_ms:
            lines.append(
                f"  stream   {p.frame_ms:.3f} ms per frame ({p.frames_per_second:.0f} frames/s), "
                f"stages concurrent; output {p.latency_frames} frame(s) behind"
            )
    else:
        lines.append(f"  {p.status}: {p.reason or f'{p.runs} runs'}")
    return "\n".join([*lines, f"  params   {p.params:,}", f"  FLOPs    {p.flops / 1e9:.3f} G"])
