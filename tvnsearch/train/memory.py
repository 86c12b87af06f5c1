"""Keep freed memory in a training process instead of handing it back to the system.

By default glibc returns every freed block over 32 MB (``M_MMAP_THRESHOLD``'s ceiling) to the
system, so a training step that frees its activations pays page faults to get them back in the
next: on one thread a 130-MFLOP genome's step took 435 ms that way and 226 ms with its memory kept
(``bench/data_scale_bench.py --sections step``). A process that trains one network after
another, as a search's worker does, keeps its peak memory instead. Called where such a process
starts training (a search's worker task, ``tvnsearch train``), never from library code that
runs in a user's own process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
NEVER_TRIM = 2**31 - 1


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to serve every allocation from its heap and never trim it; False where the C
    library is not glibc (nothing changes there)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
