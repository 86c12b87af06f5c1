"""Training workers are stopped while their node's profiler measures, and always let go on."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tvnsearch.measure.neighbours import Neighbours


def state(pid: int) -> str:
    """The process's state letter in /proc: T when stopped."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def worker() -> Iterator[subprocess.Popen]:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield busy
    busy.kill()
    busy.wait()


def test_registered_workers_are_stopped_only_while_measuring(tmp_path, worker) -> None:
    neighbours = Neighbours(tmp_path / "workers")
    with neighbours.registered(worker.pid):
        assert neighbours.pids() == [worker.pid]
        with neighbours.paused():
            time.sleep(0.05)
            assert state(worker.pid) == "T"
        time.sleep(0.05)
        assert state(worker.pid) != "T"
    assert neighbours.pids() == []


def test_a_worker_is_let_go_on_even_if_the_measurement_raises(tmp_path, worker) -> None:
    neighbours = Neighbours(tmp_path / "workers")
    with neighbours.registered(worker.pid), pytest.raises(RuntimeError), neighbours.paused():
        raise RuntimeError("the measurement failed")
    time.sleep(0.05)
    assert state(worker.pid) != "T"


def test_a_new_profiler_lets_go_on_what_a_dead_one_stopped(tmp_path, worker) -> None:
    neighbours = Neighbours(tmp_path / "workers")
    with neighbours.registered(worker.pid):
        dying = neighbours.paused()
        dying.__enter__()  # the profiler dies before it lets them go on
        time.sleep(0.05)
        assert state(worker.pid) == "T"
        neighbours.resume_all()
        time.sleep(0.05)
        assert state(worker.pid) != "T"


def test_gone_processes_and_stray_files_are_ignored(tmp_path) -> None:
    neighbours = Neighbours(tmp_path / "workers")
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "999999999").touch()  # a worker that died without unregistering
    (tmp_path / "workers" / "notes.txt").touch()
    with neighbours.paused():
        pass
    assert neighbours.pids() == [999999999]
