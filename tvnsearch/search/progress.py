"""Live progress of a search: counts by status, the best so far, candidates per hour; and the
progress bars of long work before and outside a search (decoding videos, training one network).

On a terminal one line is redrawn in place; otherwise (a log file, a batch job) a plain line is
printed every ``interval_seconds``, so that logs stay readable. The rate counts this session only,
so that a resumed search reports its own speed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from tvnsearch.status import FINAL, Status
from tvnsearch.train.fidelity import rank_key

MIN_RATE_SECONDS = 5.0


@dataclass
class Tally:
    """Candidates told, by status, and the fittest one (of those trained longest, with
    multi-fidelity training: ``tvnsearch.train.fidelity.rank_key``); a search is ``finished``
    when it has told ``budget`` candidates, or trained ``num_trained`` when it says how many it
    wants."""

    budget: int
    counts: Counter[str] = field(default_factory=Counter)
    best_fitness: float | None = None
    best_id: int | None = None
    num_trained: int | None = None
    best_iterations: int | None = None  # how long the best trained

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    @property
    def trained(self) -> int:
        return self.counts[Status.TRAINED]

    @property
    def finished(self) -> bool:
        wanted = self.num_trained is not None and self.trained >= self.num_trained
        return wanted or self.done >= self.budget

    def add(
        self,
        candidate_id: int,
        status: Status,
        fitness: float | None,
        iterations: int | None = None,
    ) -> None:
        self.counts[str(status)] += 1
        if fitness is None:
            return
        now = rank_key(iterations, fitness)
        if self.best_fitness is None or now > rank_key(self.best_iterations, self.best_fitness):
            self.best_fitness, self.best_id, self.best_iterations = (
                fitness,
                candidate_id,
                iterations,
            )

    def line(self, per_hour: float | None = None) -> str:
        best = "-" if self.best_id is None else f"{self.best_fitness:.4f} (#{self.best_id})"
        rate = "" if per_hour is None else f" | {per_hour:,.1f} candidates/h"
        wanted = "" if self.num_trained is None else f", {self.trained}/{self.num_trained} trained"
        return f"[{self.done}/{self.budget}{wanted}] {counts_line(self.counts)} | best {best}{rate}"


def counts_line(counts: Mapping[str, int]) -> str:
    """``trained 8, rejected 9, failed 0, duplicate 0``: every final status, in one order."""
    return ", ".join(f"{status} {counts.get(status, 0)}" for status in FINAL)


class Progress:
    def __init__(
        self,
        tally: Tally,
        *,
        stream: TextIO | None = None,
        interval_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tally = tally
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty()
        self.interval_seconds = 0.5 if self.interactive else interval_seconds
        self._clock = clock
        self._started = clock()
        self._start_done = tally.done
        self._shown_at = -float("inf")

    def per_hour(self) -> float | None:
        elapsed = self._clock() - self._started
        done = self.tally.done - self._start_done
        # Not before a few seconds: the first rejections come in milliseconds, a silly rate.
        return 3600.0 * done / elapsed if done and elapsed >= MIN_RATE_SECONDS else None

    def update(self, *, force: bool = False) -> None:
        if not force and self._clock() - self._shown_at < self.interval_seconds:
            return
        self._shown_at = self._clock()
        line = self.tally.line(self.per_hour())
        if self.interactive:
            self.stream.write(f"\r\033[K{line}")
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()

    def close(self) -> None:
        self.update(force=True)
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


PROGRESS_ENV = "TVNSEARCH_PROGRESS"  # "1": bars whatever stderr is, "0": none; unset: a terminal's


@contextlib.contextmanager
def progress_bar(
    description: str, *, total: int | None = None, unit: str = "it"
) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr with the time elapsed and an estimate of the time left, as the
    callback ``report(done, total)`` that long work (training, decoding videos) is given.

    It is drawn on a terminal only, and gone when the work is done: a log file, a pipe and the
    ``--json`` output on stdout stay clean. ``TVNSEARCH_PROGRESS=1`` draws it anyway, ``0`` never.
    """
    from tqdm import tqdm  # a dependency of the commands that draw bars only

    forced = os.environ.get(PROGRESS_ENV)
    disable = None if forced is None else forced == "0"  # None: tqdm's own terminal check
    bar = tqdm(
        desc=description,
        total=total,
        unit=unit,
        file=sys.stderr,
        disable=disable,
        leave=False,
        mininterval=0.5,
    )
    with bar:

        def report(done: int, total: int) -> None:
            if bar.total != total:  # known once the work has begun (the videos of a dataset)
                bar.total = total
                bar.refresh()
            bar.update(done - bar.n)
            if done == total:  # drawn complete, however little time the last steps took
                bar.refresh()

        yield report
