from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tvnsearch.search.lease import (
    LEASE_FILE,
    STALE_SECONDS,
    Lease,
    LeaseLost,
    RunLeased,
    is_stale,
    read_holder,
)


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def plant(run_dir: Path, *, host: str, pid: int, age: float = 0.0, token: str = "0ld") -> None:
    now = time.time() - age
    holder = {"host": host, "pid": pid, "token": token, "taken_at": now, "heartbeat_at": now}
    (run_dir / LEASE_FILE).write_text(json.dumps(holder))


def test_a_lease_names_its_holder_and_a_second_driver_is_refused_naming_it(tmp_path) -> None:
    with Lease(tmp_path) as lease:
        holder = read_holder(tmp_path)
        assert holder is not None and holder.token == lease.token
        assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
        with pytest.raises(RunLeased, match=rf"another driver: pid {os.getpid()} on "):
            Lease(tmp_path).acquire()
        lease.check()  # still held
    assert not (tmp_path / LEASE_FILE).exists()


def test_a_lease_whose_process_is_gone_is_taken_over(tmp_path) -> None:
    plant(tmp_path, host=socket.gethostname(), pid=dead_pid())
    with Lease(tmp_path) as lease:
        assert lease.took_over is not None and lease.took_over.token == "0ld"
        assert read_holder(tmp_path).token == lease.token


def test_another_host_s_lease_is_respected_until_its_heartbeat_is_stale(tmp_path) -> None:
    plant(tmp_path, host="elsewhere", pid=1, age=STALE_SECONDS / 2)
    with pytest.raises(RunLeased, match="pid 1 on elsewhere"):
        Lease(tmp_path).acquire()
    plant(tmp_path, host="elsewhere", pid=1, age=STALE_SECONDS + 1)
    with Lease(tmp_path) as lease:
        assert lease.took_over.host == "elsewhere"


def test_an_unreadable_lease_is_taken_over(tmp_path) -> None:
    (tmp_path / LEASE_FILE).write_text("{half")
    with Lease(tmp_path):
        assert read_holder(tmp_path) is not None


def test_the_heartbeat_keeps_the_lease_fresh(tmp_path) -> None:
    with Lease(tmp_path, heartbeat_seconds=0.05):
        first = read_holder(tmp_path).heartbeat_at
        time.sleep(0.3)
        holder = read_holder(tmp_path)
        assert holder.heartbeat_at > first
        assert not is_stale(holder, time.time() + STALE_SECONDS - 1, host="elsewhere")
        assert is_stale(holder, time.time() + STALE_SECONDS + 1, host="elsewhere")


def test_a_driver_taken_over_stops_before_it_writes_and_leaves_the_new_lease(tmp_path) -> None:
    lease = Lease(tmp_path, heartbeat_seconds=0.05)
    lease.acquire()
    plant(tmp_path, host="elsewhere", pid=1, token="n3w")  # what a taker would leave
    with pytest.raises(LeaseLost, match="taken over by pid 1 on elsewhere"):
        lease.check()
    lease.release()
    assert read_holder(tmp_path).token == "n3w"


def _race(run_dir: str, start: object, hold: object, results: object) -> None:
    start.wait()
    try:
        lease = Lease(run_dir)
        lease.acquire()
        results.put("took")
        hold.wait()
        lease.release()
    except RunLeased:
        results.put("refused")
        hold.wait()


def test_of_many_drivers_taking_a_stale_lease_at_once_exactly_one_wins(tmp_path) -> None:
    plant(tmp_path, host=socket.gethostname(), pid=dead_pid())
    context = multiprocessing.get_context("fork")
    n = 8
    start, hold, results = context.Barrier(n), context.Barrier(n), context.Queue()
    workers = [
        context.Process(target=_race, args=(str(tmp_path), start, hold, results)) for _ in range(n)
    ]
    for w in workers:
        w.start()
    outcomes = sorted(results.get(timeout=30) for _ in range(n))
    for w in workers:
        w.join(timeout=30)
    assert outcomes == ["refused"] * (n - 1) + ["took"]
