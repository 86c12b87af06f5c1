"""Which CPU cores a process may run on: the profiler keeps its cores, training gets the rest.

A runtime taken on a core that a training process shares is a runtime of both; pinning the
profiler to reserved cores and the training workers to the others keeps the figures apart. Linux
only (``os.sched_setaffinity``); elsewhere pinning is skipped and says so by returning False.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path


def usable_cores() -> tuple[int, ...]:
    if not hasattr(os, "sched_getaffinity"):
        return tuple(range(os.cpu_count() or 1))
    return tuple(sorted(os.sched_getaffinity(0)))


def split_cores(num_reserved: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(reserved, rest): the last ``num_reserved`` usable cores, and the others for training."""
    cores = usable_cores()
    if not 1 <= num_reserved < len(cores):
        raise ValueError(
            f"cannot reserve {num_reserved} of {len(cores)} usable cores and leave some to train"
        )
    return cores[-num_reserved:], cores[:-num_reserved]


def pin_process(cores: Collection[int]) -> bool:
    """Pin every thread of this process (those started later inherit it); False if unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    tasks = Path("/proc/self/task")
    # The affinity call acts on one thread; threads that exist already (a runtime's pools,
    # a worker's RPC threads) are pinned one by one so that none runs on a training core.
    thread_ids = [int(t.name) for t in tasks.iterdir()] if tasks.exists() else [0]
    for thread_id in thread_ids:
        try:
            os.sched_setaffinity(thread_id, set(cores))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
    return True
