"""Robustness benchmark: what a run folder, a cluster and the command line do under misuse.

Sections (each prints a table and adds its figures to the JSON):
- ``fuzz``: every subcommand against a table of bad inputs: cases, exit codes, tracebacks;
- ``lease``: two drivers started on one run (the second refuses), then kill -9 of the first and a
  third that takes the lease over;
- ``damage``: a torn, an empty and a duplicated lineage part: ``status``, ``pareto`` and
  ``resume`` all work and report them;
- ``listen``: ``ss -ltnp`` during an embedded search: every socket Ray's processes listen on;
- ``sigterm``: SIGTERM at every moment of a search's first 10 s: exit codes and lines said;
- ``address``: ``--address`` to a closed port: seconds to a one-line error.

    .venv/bin/python bench/robustness_bench.py [--sections fuzz lease ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "robustness_bench.json"
WORK = Path(__file__).parent / "out" / "robustness"
RECIPE = """
[search]
name = "robust"
space = "{space}"
budget = {budget}
seed = 0
[data]
path = "{data}"
cache_dir = "{cache}"
cache_size = 64
[train]
iterations = 20
batch_size = 4
[constraints]
max_flops = 20_000_000
[resources]
num_workers = 1
"""

# name -> a function printing its table and returning its figures (filled in below)
SECTIONS: dict[str, Callable[[], dict[str, Any]]] = {}


def tvnsearch(*args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    """Run the command line in its own process: what it did, and its wall-clock seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tvnsearch", *args], capture_output=True, text=True, timeout=timeout
    )
    return done, time.perf_counter() - started


def small_search(folder: Path, budget: int) -> Path:
    """A recipe for a small real search (tiny space, synthetic clips) in ``folder``."""
    from tvnsearch.data.synth import SynthConfig, write_synth

    shutil.rmtree(folder, ignore_errors=True)
    write_synth(folder / "synth", SynthConfig(num_videos=18, size=32, num_frames=8))
    recipe = folder / "recipe.toml"
    space, data, cache = ROOT / "search_spaces" / "tiny.toml", folder / "synth", folder / "frames"
    recipe.write_text(RECIPE.format(space=space, data=data, cache=cache, budget=budget))
    return recipe


def lease() -> dict[str, Any]:
    """Two drivers on one run: the second refuses; after kill -9 of the first, a third takes
    the lease over and finishes the run, every candidate told once."""
    from tvnsearch.search.lineage import read_lineage

    folder = WORK / "lease"
    recipe = small_search(folder, budget=60)
    first = subprocess.Popen(
        [sys.executable, "-m", "tvnsearch", "search", str(recipe), "--results", str(folder / "r")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    while not list(folder.glob("r/*/lineage/part-*.parquet")):
        assert first.poll() is None, first.stderr.read()
        time.sleep(0.2)
    (run_dir,) = (folder / "r").iterdir()
    rows = []
    second, seconds = tvnsearch("resume", str(run_dir))
    rows.append(("second driver (resume) while the first runs", second, seconds))
    status, seconds = tvnsearch("status", str(run_dir))
    rows.append(("status while the first runs", status, seconds))
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    third, seconds = tvnsearch("resume", str(run_dir))
    os.killpg(first.pid, signal.SIGKILL)
    rows.append(("resume after kill -9 of the first", third, seconds))
    ids = read_lineage(run_dir)["candidate_id"].tolist()
    print(f"{'step':<46} {'exit':>4} {'seconds':>8}  first line")
    figures: dict[str, Any] = {"steps": []}
    for step, done, seconds in rows:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        line = next((x for x in said if "driver" in x or "running" in x), said[0] if said else "")
        print(f"{step:<46} {done.returncode:>4} {seconds:>8.1f}  {line}")
        figures["steps"].append(
            {"step": step, "exit": done.returncode, "seconds": round(seconds, 2), "line": line}
        )
    figures.update(budget=60, rows=len(ids), unique_ids=len(set(ids)))
    print(f"lineage after the takeover: {len(ids)} rows, {len(set(ids))} distinct ids (budget 60)")
    return figures


def run_status(run_dir: Path) -> dict[str, Any]:
    """The run's status, read here without the notes (the commands timed say them)."""
    import warnings

    from tvnsearch.search.runs import run_status as status

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return status(run_dir)


def damage() -> dict[str, Any]:
    """A finished run with a torn, an empty and a duplicated part: status, pareto and resume."""

    folder = WORK / "damage"
    recipe = small_search(folder, budget=20)
    done, _ = tvnsearch("search", str(recipe), "--results", str(folder / "r"))
    assert done.returncode == 0, done.stderr
    (run_dir,) = (folder / "r").iterdir()
    before = run_status(run_dir)
    parts = sorted((run_dir / "lineage").glob("part-*.parquet"))
    data = parts[0].read_bytes()
    names = {"torn": "part-900001-aa.parquet", "empty": "part-900002-aa.parquet"}
    names["duplicated"] = "part-900003-aa.parquet"
    (run_dir / "lineage" / names["torn"]).write_bytes(data[: len(data) // 2])
    (run_dir / "lineage" / names["empty"]).write_bytes(b"")
    (run_dir / "lineage" / names["duplicated"]).write_bytes(data)
    print(f"{'command':<8} {'exit':>4} {'tracebacks':>10} {'notes':>5}  counts")
    figures: dict[str, Any] = {"commands": []}
    options = {"status": [], "pareto": ["--x", "flops"], "resume": []}  # no runtime measured
    for command, extra in options.items():
        done, _ = tvnsearch(command, str(run_dir), *extra)
        notes = [x for x in done.stderr.splitlines() if ": note: " in x]
        status = run_status(run_dir)
        counts = f"{status['done']} of {status['budget']} told, {status['trained']} trained"
        tracebacks = done.stderr.count("Traceback")
        print(f"{command:<8} {done.returncode:>4} {tracebacks:>10} {len(notes):>5}  {counts}")
        for note in notes:
            print(f"    {note}")
        figures["commands"].append(
            {"command": command, "exit": done.returncode, "tracebacks": tracebacks, "notes": notes}
        )
    quarantined = sorted(p.name for p in (run_dir / "quarantine").iterdir())
    print(f"quarantine/ after resume: {quarantined}")
    after = run_status(run_dir)
    figures.update(
        quarantined=quarantined,
        counts_before={k: before[k] for k in ("done", "trained")},
        counts_after={k: after[k] for k in ("done", "trained")},
    )
    return figures


def fuzz() -> dict[str, Any]:
    """The suite's fuzz table (``tests/cli/test_fuzz.py``): every subcommand against bad inputs,
    each case's exit code and tracebacks, as the test saw them."""
    from collections import Counter

    log = WORK / "fuzz.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*command, str(ROOT / "tests" / "cli" / "test_fuzz.py")],
        cwd=ROOT,
        env={**os.environ, "TVNSEARCH_FUZZ_LOG": str(log)},
        capture_output=True,
        text=True,
    )
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    by_command = Counter(row["case"].split()[0] for row in rows)
    codes = Counter(str(row["exit"]) for row in rows)
    tracebacks = sum(row["tracebacks"] for row in rows)
    print(f"{'command':<10} {'cases':>5}")
    for name, n in sorted(by_command.items()):
        print(f"{name:<10} {n:>5}")
    print(f"{len(rows)} cases; exit codes {dict(sorted(codes.items()))}; tracebacks {tracebacks}")
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    print(f"pytest: {summary}")
    return {
        "cases": len(rows),
        "by_command": dict(sorted(by_command.items())),
        "exit_codes": dict(sorted(codes.items())),
        "tracebacks": tracebacks,
        "pytest": summary,
    }


def sigterm() -> dict[str, Any]:
    """SIGTERM at every moment of a search's start and first seconds (1 to 10 s, every 0.5 s):
    exit codes, and the lines said on stderr besides the progress line."""
    from collections import Counter

    folder = WORK / "sigterm"
    recipe = small_search(folder, budget=400)
    rows = []
    for i in range(19):
        delay = 1.0 + 0.5 * i
        command = ["search", str(recipe), "--results", str(folder / "r")]
        search = subprocess.Popen(
            [sys.executable, "-m", "tvnsearch", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        time.sleep(delay)
        search.send_signal(signal.SIGTERM)
        _, err = search.communicate(timeout=300)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(search.pid, signal.SIGKILL)
        said = [x for x in err.splitlines() if x.strip() and not x.startswith("[")]
        rows.append({"after_s": delay, "exit": search.returncode, "lines": said})
        print(f"{delay:>5.1f} s  exit {search.returncode:>4}  {len(said)} line(s): {said[-1:]}")
    codes = Counter(str(r["exit"]) for r in rows)
    tracebacks = sum("Traceback" in " ".join(r["lines"]) for r in rows)
    extra = sum(len(r["lines"]) > 1 for r in rows)
    print(f"exit codes {dict(codes)}; tracebacks {tracebacks}; more than one line: {extra}")
    return {"runs": rows, "exit_codes": dict(codes), "tracebacks": tracebacks, "noisy": extra}


SECTIONS.update(fuzz=fuzz, lease=lease, damage=damage, sigterm=sigterm)


LOOPBACK_HOSTS = ("127.", "[::ffff:127.", "[::1]")


def _listening(pids: set[int]) -> list[tuple[str, int, str, str]]:
    """``ss -ltnp`` rows of ``pids``: (process, pid, local address, the line)."""
    import re

    rows = []
    for line in subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout.splitlines():
        fields = line.split()
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if int(pid) in pids:
                rows.append((name, int(pid), fields[3], " ".join(fields)))
    return rows


def listen() -> dict[str, Any]:
    """``ss -ltnp`` sampled during a real embedded search: every socket its processes listen on
    (the driver, Ray's GCS, raylet, agents and workers), loopback or not."""
    import contextlib

    import psutil

    folder = WORK / "listen"
    recipe = small_search(folder, budget=60)
    command = [sys.executable, "-m", "tvnsearch", "search", str(recipe)]
    search = subprocess.Popen(
        [*command, "--results", str(folder / "r")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen: dict[str, tuple[str, int, str]] = {}  # local address -> process, pid, line
    samples, deadline = 0, time.monotonic() + 300
    while samples < 10 and search.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):  # a process that ended meanwhile
            driver = psutil.Process(search.pid)
            pids = {search.pid, *(p.pid for p in driver.children(recursive=True))}
            rows = _listening(pids)
            samples += bool(list(folder.glob("r/*/lineage/part-*.parquet")))
            seen.update({local: (name, pid, line) for name, pid, local, line in rows})
        time.sleep(0.5)
    search.send_signal(signal.SIGINT)
    _, err = search.communicate(timeout=120)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(search.pid, signal.SIGKILL)
    print(f"{'process':<22} {'pid':>7}  local address")
    for local, (name, pid, _) in sorted(seen.items(), key=lambda item: item[1][:2]):
        print(f"{name:<22} {pid:>7}  {local}")
    outside = [local for local in seen if not local.startswith(LOOPBACK_HOSTS)]
    print(f"{len(seen)} listening sockets in {samples} samples; beyond loopback: {outside}")
    return {
        "sockets": len(seen),
        "non_loopback": len(outside),
        "samples": samples,
        "search_exit": search.returncode,
        "search_stderr": err.strip().splitlines()[-1:],
        "lines": [line for _, _, line in seen.values()],
    }


def address() -> dict[str, Any]:
    """``tvnsearch search --address``: seconds to its one line where nothing listens, where a
    service that is not Ray listens, and where a Ray cluster needs a token this machine lacks."""
    import socket
    import tempfile

    folder = WORK / "address"
    recipe = small_search(folder, budget=4)
    temp_dir = tempfile.mkdtemp(prefix="tvnb-", dir="/tmp")  # short: Ray's sockets go there
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    rows = []
    try:
        with socket.create_server(("127.0.0.1", 0)) as other:
            cases = {
                "closed port": "127.0.0.1:1",
                "not Ray (a TCP listener)": f"127.0.0.1:{other.getsockname()[1]}",
                "Ray cluster, no token here": _token_cluster(temp_dir, env),
            }
            for case, where in cases.items():
                started = time.perf_counter()
                command = [sys.executable, "-m", "tvnsearch", "search", str(recipe)]
                done = subprocess.run(
                    [*command, "--address", where, "--results", str(folder / "r")],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=600,
                )
                rows.append((case, where, done, time.perf_counter() - started))
    finally:
        _kill_processes_of(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    print(f"{'case':<28} {'address':<17} {'exit':>4} {'seconds':>7} {'lines':>5}  stderr")
    figures: dict[str, Any] = {"cases": []}
    for case, where, done, seconds in rows:
        lines = done.stderr.strip().splitlines()
        print(f"{case:<28} {where:<17} {done.returncode:>4} {seconds:>7.1f} {len(lines):>5}")
        for line in lines:
            print(f"    {line}")
        figures["cases"].append(
            {"case": case, "exit": done.returncode, "seconds": round(seconds, 2), "stderr": lines}
        )
    return figures


def _token_cluster(temp_dir: str, env: dict[str, str]) -> str:
    """A `ray start --head` on loopback that requires a token of its own; its address."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray = Path(sys.executable).parent / "ray"
    own = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(32).hex()}
    own["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # else Ray takes 127.0.0.1 for the host's IP
    command = [str(ray), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    subprocess.run(
        [*command, "--temp-dir", temp_dir, "--num-cpus", "1", "--include-dashboard", "false"],
        env=env | own,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return f"127.0.0.1:{port}"


def _kill_processes_of(temp_dir: str) -> None:
    """The processes of the cluster in ``temp_dir`` (they name it) and theirs, no other Ray's."""
    import contextlib

    import psutil

    roots = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.pid != os.getpid() and any(temp_dir in arg for arg in p.info["cmdline"] or ())
    ]
    doomed = {p for root in roots for p in (root, *root.children(recursive=True))}
    for process in doomed:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(doomed, timeout=10)


SECTIONS.update(listen=listen, address=address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = {"platform": platform.platform(), "python": platform.python_version()}
    for name in args.sections:
        print(f"\n## {name}")
        results[name] = SECTIONS[name]()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
