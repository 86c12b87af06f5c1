"""A profiler for one device and runtime: one measurement at a time, repeats answered from a cache.

The cache is keyed by genome id, classifier width and device signature, so that a runtime is only
ever reused on the device type, thread count, torch build and runtime it was taken with. A run
keeps its profiles in a ``ProfileLog`` (JSON lines, appended by the driver as they arrive) and
seeds the cache of a resumed search with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import queue
import threading
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tvnsearch.errors import InputError, Notice, Problem
from tvnsearch.files import atomic_write_text
from tvnsearch.genome.genes import PLAIN_BLOCK, Genome
from tvnsearch.measure.device import DeviceSignature, check_device, device_signature
from tvnsearch.measure.measurement import measure
from tvnsearch.measure.neighbours import Neighbours
from tvnsearch.measure.profile import DEFAULT_SETTINGS, Profile, Settings, profile_from_dict
from tvnsearch.measure.roofline import Roofline, device_roofline
from tvnsearch.measure.runtimes import check_runtime
from tvnsearch.status import Status

if TYPE_CHECKING:
    from tvnsearch.measure.gate import Measurer

CacheKey = tuple[str, int, str]
# What a profiler with a command times first (``Profiler._identify``): a 3x3 convolution.
IDENTIFY_GENOME = Genome(
    resolution=16, num_frames=2, frame_stride=1, pipeline_depth=0, blocks=(PLAIN_BLOCK,)
)


class ProfileCache:
    """Profiles by (genome id, num_classes, device signature). Failures and out-of-memory
    verdicts are not kept (``keeps``): they depend on the moment (a passing fault, memory that
    training workers held), so a later ask measures again."""

    def __init__(self, profiles: Iterable[Profile] = ()) -> None:
        self._profiles: dict[CacheKey, Profile] = {}
        for profile in profiles:
            self.put(profile)

    def __len__(self) -> int:
        return len(self._profiles)

    @staticmethod
    def keeps(profile: Profile) -> bool:
        return profile.status != Status.FAILED and not profile.out_of_memory

    def get(self, genome_id: str, num_classes: int, device: DeviceSignature) -> Profile | None:
        return self._profiles.get((genome_id, num_classes, device.key))

    def put(self, profile: Profile) -> None:
        if self.keeps(profile):
            self._profiles[(profile.genome_id, profile.num_classes, profile.device.key)] = profile


class ProfileLog:
    """The profiles of a run, one JSON line each, appended by the driver as they arrive: a
    resume after any crash, ``kill -9`` included, measures none of them again."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> list[Profile]:
        """Every profile written. A line that is no profile record (cut short by a crash, edited
        by hand) is left out with a ``Notice``: a cache is never fatal, what it lacks is
        measured again."""
        profiles, bad = self._parse()
        if bad:
            warnings.warn(
                f"{self.path}: {len(bad)} line(s) that are no profile record left out (line "
                f"{bad[0]} first); their genomes are measured again",
                Notice,
                stacklevel=2,
            )
        return profiles

    def repair(self) -> None:
        """Rewrite the log with its whole records only, so that appends start on a line of
        their own (after a crash mid-line, the next record would be glued to the torn one)."""
        if not self.path.is_file():
            return
        profiles, bad = self._parse()
        if bad or not self.path.read_bytes().endswith(b"\n"):
            self.read()  # says what is left out
            text = "".join(json.dumps(p.to_dict()) + "\n" for p in profiles)
            atomic_write_text(self.path, text)

    def _parse(self) -> tuple[list[Profile], list[int]]:
        if not self.path.is_file():
            return [], []
        profiles, bad = [], []
        for number, line in enumerate(self.path.read_text(errors="replace").splitlines(), 1):
            try:
                profiles.append(profile_from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                bad.append(number)
        return profiles, bad

    def append(self, profiles: Iterable[Profile]) -> None:
        kept = [json.dumps(p.to_dict()) + "\n" for p in profiles if ProfileCache.keeps(p)]
        if kept:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.writelines(kept)


class Profiler:
    """Measures genomes on one device, serially; ``num_measurements`` counts real measurements."""

    def __init__(
        self,
        settings: Settings = DEFAULT_SETTINGS,
        *,
        cache: ProfileCache | None = None,
        neighbours: Neighbours | None = None,
        node: str = "",
    ) -> None:
        check_device(settings.device, threads=settings.threads, source="profiler")
        check_runtime(settings.runtime, settings.device, source="profiler")
        self.settings = settings
        self.signature = device_signature(settings.device, settings.threads, settings.runtime, node)
        if settings.command:  # the device the command times on names the measurements
            self.signature = self._identify()
        self.cache = cache if cache is not None else ProfileCache()
        self.num_measurements = 0
        self._lock = threading.Lock()  # one measurement at a time on this device
        self.neighbours = neighbours  # paused while measuring
        if neighbours is not None:
            neighbours.resume_all()  # a profiler before this one may have died pausing them

    def _identify(self) -> DeviceSignature:
        """The signature of the device that the settings' command times on: one small network
        timed through it, which also shows the command works before any candidate needs it."""
        probe = measure(IDENTIFY_GENOME, 2, self.settings, signature=self.signature)
        if probe.status != Status.ADMITTED:
            why = f"did not time a small network: {probe.reason}"
            raise InputError("profiler", [Problem("profiler.command", why)])
        return probe.device

    @functools.cached_property
    def roofline(self) -> Roofline:
        """This device's roofline: measured once per device signature, then read back."""
        with self._lock:
            return device_roofline(self.settings)

    def measure(
        self,
        genome: Genome,
        num_classes: int,
        *,
        stop_above_ms: float | None = None,
        again: bool = False,
    ) -> Profile:
        """The cached profile if it answers; else a measurement. ``again`` measures once more
        and pools the runs with the cached ones (for a runtime within noise of a budget)."""
        with self._lock:
            cached = self.cache.get(genome.id, num_classes, self.signature)
            if cached is not None and answers(cached, stop_above_ms) and not again:
                return cached
            quiet = self.neighbours.paused() if self.neighbours else contextlib.nullcontext()
            with quiet:
                profile = measure(
                    genome,
                    num_classes,
                    self.settings,
                    stop_above_ms=stop_above_ms,
                    signature=self.signature,
                )
            self.num_measurements += 1
            if again and cached is not None and cached.status == profile.status == Status.ADMITTED:
                profile = pooled(cached, profile)
            self.cache.put(profile)
            return profile


class ProfilerPool:
    """Several profilers of one device kind (on cores or nodes of their own) as one: each
    measurement takes whichever is free, so that as many run at once as there are profilers."""

    def __init__(self, profilers: Sequence[Measurer]) -> None:
        if not profilers:
            raise ValueError("a profiler pool needs at least one profiler")
        self.profilers = tuple(profilers)
        self._free: queue.SimpleQueue[Measurer] = queue.SimpleQueue()
        for profiler in self.profilers:
            self._free.put(profiler)

    def measure(
        self,
        genome: Genome,
        num_classes: int,
        *,
        stop_above_ms: float | None = None,
        again: bool = False,
    ) -> Profile:
        profiler = self._free.get()
        try:
            return profiler.measure(genome, num_classes, stop_above_ms=stop_above_ms, again=again)
        finally:
            self._free.put(profiler)


def pooled(first: Profile, second: Profile) -> Profile:
    """One profile of two measurements of the same genome: every timed run of both."""
    return dataclasses.replace(
        second,
        runs_ms=first.runs_ms + second.runs_ms,
        frame_runs_ms=first.frame_runs_ms + second.frame_runs_ms,
        seconds=first.seconds + second.seconds,
    )


def answers(cached: Profile, stop_above_ms: float | None) -> bool:
    """Whether a cached profile answers: an early stop only for a budget that it still breaks."""
    if not cached.stopped_early:
        return True
    return stop_above_ms is not None and min(cached.runs_ms) > stop_above_ms
