"""Runs of the real engine for ``engine_bench.py``: the synthetic benchmark, recipes, the pace of
a run, and the process-level sections: the driver killed with SIGKILL then resumed, and a search
across a two-node Ray cluster on this machine with a training worker killed.

Ray processes of ours are found by the temp dir given to them (in their command line, environment
or open files) and killed by id, never by name: the machine may run other people's Ray.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from tvnsearch.data.synth import write_synth
from tvnsearch.search.lineage import read_lineage
from tvnsearch.search.recipe import recipe_from_dict, recipe_toml

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "out" / "engine"
TINY = ROOT / "search_spaces" / "tiny.toml"
CLI = [sys.executable, "-m", "tvnsearch"]


def synth() -> Path:
    data = WORK / "synth"
    if not (data / "synth.json").exists():
        write_synth(data)  # the benchmark as `make search` writes it: 360 videos, 64 px
    return data


def recipe(
    path: Path,
    *,
    strategy: str = "random",
    options: dict | None = None,
    budget: int,
    seed: int = 0,
    iterations: int,
    num_workers: int,
    max_retries: int = 1,
    max_flops: int = 50_000_000,
) -> Path:
    data = synth()
    tables = {
        "search": {
            "space": str(TINY),
            "strategy": strategy,
            "budget": budget,
            "seed": seed,
            "name": path.stem,
            "options": options or {},
        },
        "data": {"path": str(data), "cache_dir": str(WORK / "frames"), "cache_size": 64},
        "train": {"iterations": iterations, "batch_size": 8},
        "constraints": {"max_flops": max_flops},
        "resources": {"num_workers": num_workers, "max_retries": max_retries},
    }
    path.write_text(recipe_toml(recipe_from_dict(tables, source=str(path))))
    return path


def pace(run_dir: Path) -> dict[str, Any]:
    frame = read_lineage(run_dir)
    seconds = (frame["finished_at"].max() - frame["asked_at"].min()).total_seconds()
    trained = int((frame["status"] == "trained").sum())
    return {
        "candidates": len(frame),
        "trained": trained,
        "seconds": seconds,
        "trained_per_hour": 3600 * trained / seconds,
        "best_fitness": float(frame["fitness"].max()) if trained else None,
    }


def quiet() -> Any:
    return open(os.devnull, "w")  # the progress lines of a run, not wanted here


# kill -9 and resume -----------------------------------------------------------------------------


def kill(args: argparse.Namespace) -> dict[str, Any]:
    budget = 24
    path = recipe(WORK / "kill.toml", budget=budget, iterations=args.iterations, num_workers=2)
    env = {**os.environ, "RAY_TMPDIR": f"/tmp/rk{os.getpid()}"}
    cmd = [*CLI, "search", str(path), "--results", str(WORK / "results")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=quiet(), text=True, env=env)
    run_dir = Path(proc.stdout.readline().split("run folder: ")[1].strip())
    rows_before = _wait_rows(run_dir, 8, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _kill_leftovers(env["RAY_TMPDIR"])
    rows_after_kill = len(read_lineage(run_dir))
    resumed = subprocess.run(
        [*CLI, "resume", str(run_dir)], capture_output=True, text=True, env=env, check=False
    )
    _kill_leftovers(env["RAY_TMPDIR"])
    frame = read_lineage(run_dir)
    ids = list(frame["candidate_id"])
    return {
        "budget": budget,
        "rows_seen_before_kill": rows_before,
        "rows_on_disk_after_kill": rows_after_kill,
        "resume_exit_code": resumed.returncode,
        "rows_after_resume": len(ids),
        "duplicate_ids": len(ids) - len(set(ids)),
        "missing_ids": sorted(set(range(budget)) - set(ids)),
        "complete": sorted(ids) == list(range(budget)),
    }


def _wait_rows(run_dir: Path, num: int, proc: subprocess.Popen, timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        rows = len(read_lineage(run_dir))
        if rows >= num:
            return rows
        time.sleep(0.2)
    raise RuntimeError(f"{run_dir}: fewer than {num} rows before the search ended or timed out")


def _kill_leftovers(marker: str) -> int:
    """Kill the processes of one Ray session of ours (by its temp dir), and no others."""
    victims = []
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    for p in psutil.process_iter(["cmdline"]):
        if p.pid in me:
            continue
        text = " ".join(p.info["cmdline"] or [])
        try:  # not psutil's environ: Ray's renamed processes read as empty there
            env = Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0")
        except OSError:
            env = []
        if marker in text or f"RAY_TMPDIR={marker}".encode() in env or _has_open(p, marker):
            victims.append(p)
    for p in victims:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(victims, timeout=10)
    return len(victims)


def _has_open(process: psutil.Process, marker: str) -> bool:
    """Whether the process holds a file under ``marker`` open (Ray's agents: their logs)."""
    try:
        return any(marker in f.path for f in process.open_files())
    except psutil.Error:
        return False


# cluster ----------------------------------------------------------------------------------------


def cluster(args: argparse.Namespace) -> dict[str, Any]:
    port = 6390 + os.getpid() % 100
    temp = f"/tmp/rc{os.getpid()}"
    # A cluster started with `ray start` checks tokens (~/.ray/auth_token); its nodes and
    # drivers must be told to send it.
    env = {**os.environ, "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "token"}
    ray = str(Path(sys.executable).with_name("ray"))
    head = [ray, "start", "--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={temp}"]
    node = [ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1"]
    budget = 16
    path = recipe(
        WORK / "cluster.toml", budget=budget, iterations=args.iterations * 2, num_workers=2
    )
    try:
        for cmd in ([*head, "--include-dashboard=false"], node):
            subprocess.run(cmd, env=env, check=True, capture_output=True)
        search = [*CLI, "search", str(path), "--results", str(WORK / "results")]
        search += ["--address", f"127.0.0.1:{port}"]
        proc = subprocess.Popen(search, stdout=subprocess.PIPE, stderr=quiet(), text=True, env=env)
        run_dir = Path(proc.stdout.readline().split("run folder: ")[1].strip())
        killed = _kill_a_training_worker(proc)
        proc.wait(timeout=1200)
    finally:
        leftovers = _kill_leftovers(temp)
    frame = read_lineage(run_dir)
    ids = list(frame["candidate_id"])
    nodes = frame["worker_node"].dropna().str.extract(r"node (\w+)")[0]
    killed_rows = frame[frame["worker_node"].str.contains(f":{killed} ", na=False)]
    return {
        "budget": budget,
        "search_exit_code": proc.returncode,
        "rows_in_lineage": len(ids),
        "complete": sorted(ids) == list(range(budget)),
        "nodes_that_trained": sorted(nodes.unique()),
        "trained_per_node": {k: int(v) for k, v in nodes.value_counts().items()},
        "killed_worker_pid": killed,
        "rows_finished_by_the_killed_pid": len(killed_rows),
        "failed": frame[frame["status"] == "failed"][["candidate_id", "reason"]].values.tolist(),
        "processes_cleaned_up": leftovers,
    }


def _kill_a_training_worker(proc: subprocess.Popen, after_seconds: float = 2.0) -> int:
    """SIGKILL a process running a training task once it has trained for a moment."""
    seen: dict[int, float] = {}
    while proc.poll() is None:
        for p in psutil.process_iter(["pid", "cmdline"]):
            title = " ".join(p.info["cmdline"] or [])
            if title.startswith("ray::_train"):
                started = seen.setdefault(p.pid, time.monotonic())
                if time.monotonic() - started >= after_seconds:
                    p.kill()
                    return p.pid
        time.sleep(0.2)
    raise RuntimeError("the search ended before a training worker could be killed")
