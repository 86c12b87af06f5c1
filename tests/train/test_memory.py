from __future__ import annotations

import subprocess
import sys

import pytest

FREE_AND_MEASURE = """
import sys
import numpy as np
import psutil
from tvnsearch.train.memory import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
process = psutil.Process()
block = np.ones(64 << 20, np.uint8)  # 64 MB: above glibc's largest mmap threshold
before = process.memory_info().rss
del block
print(before - process.memory_info().rss)
"""


def freed_bytes(mode: str) -> int:
    argv = [sys.executable, "-c", FREE_AND_MEASURE, mode]
    return int(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_training_process_keeps_what_it_frees_for_the_next_step() -> None:
    assert freed_bytes("default") > 32 << 20  # handed back to the system at once
    assert freed_bytes("kept") < 8 << 20  # kept for the next step
