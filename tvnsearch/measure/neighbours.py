"""Training workers paused while their node's profiler measures.

Pinned to other cores, a training process still shares the caches and the memory bus with the
profiler's core: it slowed the fastest run of tiny networks by 0-17 % (``bench/gate_bench.py``),
enough to turn a verdict near the budget. Workers on the profiler's node register their process
ids in a folder on that node; the profiler stops them (SIGSTOP) for the length of one measurement,
a second or two against minutes of training, and lets them go on (SIGCONT) after, whatever
happened. A profiler that starts lets every registered worker go on, in case the one before it
died while they were stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path


class Neighbours:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @contextlib.contextmanager
    def registered(self, pid: int | None = None) -> Iterator[None]:
        """This process (or ``pid``) is paused by the profiler while the block runs."""
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = self.folder / str(pid or os.getpid())
        entry.touch()
        try:
            yield
        finally:
            entry.unlink(missing_ok=True)

    def pids(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return [int(p.name) for p in self.folder.iterdir() if p.name.isdigit()]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        stopped = [
            pid for pid in self.pids() if pid != os.getpid() and _signal(pid, signal.SIGSTOP)
        ]
        try:
            yield
        finally:
            for pid in stopped:
                _signal(pid, signal.SIGCONT)

    def resume_all(self) -> None:
        for pid in self.pids():
            _signal(pid, signal.SIGCONT)


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):  # gone, or not ours: nothing to pause
        return False
    return True
