"""Measuring one genome on this machine: runtime (in the settings' runtime) and peak memory of a
clip, and for a pipelined genome its per-frame stream timing, as one ``Profile``
(``tvnsearch.measure.profile``).

``measure`` never raises because of the genome: an error or an out-of-memory while building or
running becomes a ``Profile`` with a ``FAILED`` status, or ``REJECTED`` for an out-of-memory, and
its reason.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from typing import Any

from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Genome
from tvnsearch.measure import timing
from tvnsearch.measure.device import DeviceSignature, device_signature
from tvnsearch.measure.file_timing import TimedElsewhere
from tvnsearch.measure.profile import DEFAULT_SETTINGS, Profile, Settings
from tvnsearch.measure.stream_timing import measure_stream
from tvnsearch.status import Status


def measure(
    genome: Genome,
    num_classes: int,
    settings: Settings = DEFAULT_SETTINGS,
    *,
    stop_above_ms: float | None = None,
    signature: DeviceSignature | None = None,
) -> Profile:
    """Runtime and peak memory of one clip; stops after the probe if over ``stop_above_ms``.
    ``signature``: the one to record (a profiler's, naming its machine); default: this
    device's."""
    start = time.perf_counter()
    cost = count_cost(genome, num_classes)
    with timing.fixed_threads(settings.threads):
        try:
            fields = timing.time_genome(genome, num_classes, settings, cost, stop_above_ms)
            if fields["status"] == Status.ADMITTED and genome.pipeline_depth > 0:
                fields.update(_stream_fields(genome, num_classes, settings))
        except Exception as exc:  # any failure of a candidate is a result, never a crash
            fields = timing.failure(exc, settings.device)
    device = signature or device_signature(settings.device, settings.threads, settings.runtime)
    elsewhere = fields.pop("elsewhere", None)
    if elsewhere is not None:  # timed by the profiler's command, on the device it names
        device = signed_elsewhere(device, elsewhere, settings.command)
    return Profile(
        genome_id=genome.id,
        num_classes=num_classes,
        device=device,
        params=cost.params,
        flops=cost.flops,
        seconds=time.perf_counter() - start,
        **fields,
    )


def _stream_fields(genome: Genome, num_classes: int, settings: Settings) -> dict[str, Any]:
    stream = measure_stream(genome, num_classes, settings, mode="concurrent")
    return {"frame_runs_ms": stream.runs_ms, "latency_frames": stream.latency_frames}


def signed_elsewhere(
    local: DeviceSignature, timed: TimedElsewhere, command: str
) -> DeviceSignature:
    """The signature of a measurement that ``command`` took on another device."""
    how = f"via {shlex.split(command)[0]}"
    return dataclasses.replace(
        local, name=timed.device, runtime_version=timed.runtime_version, node=how
    )
