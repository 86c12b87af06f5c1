from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tvnsearch import PUBLISHED, load_space
from tvnsearch.genome.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
SPACES_DIR = ROOT / "search_spaces"
PUBLISHED_DIR = ROOT / "tvnsearch" / "genome" / "published"
SPACE_NAMES = ("tvn", "tvn_mobile", "tiny", "tiny_streaming")


@pytest.fixture(scope="session", params=SPACE_NAMES)
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return load_space(SPACES_DIR / f"{request.param}.toml")


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return load_space(SPACES_DIR / "tiny.toml")


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture(params=PUBLISHED)
def published_name(request: pytest.FixtureRequest) -> str:
    return request.param


SMALL_RECIPE = """
[search]
name = "small"
space = "{space}"
budget = {budget}
seed = 0
[data]
path = "{data}"
cache_dir = "{cache}"
cache_size = 64
[train]
iterations = {iterations}
batch_size = 4
[constraints]
max_flops = 20_000_000
[resources]
num_workers = 1
"""


def small_search(folder: Path, *, budget: int, iterations: int = 20) -> Path:
    """A recipe for a small real search in ``folder`` (the tiny space on 18 synthetic clips,
    one worker, candidates refused by counted FLOPs only: nothing is timed); its path."""
    from tvnsearch.data.synth import SynthConfig, write_synth

    write_synth(folder / "synth", SynthConfig(num_videos=18, size=32, num_frames=8))
    recipe = folder / "recipe.toml"
    space, data, cache = SPACES_DIR / "tiny.toml", folder / "synth", folder / "frames"
    text = SMALL_RECIPE.format(
        space=space, data=data, cache=cache, budget=budget, iterations=iterations
    )
    recipe.write_text(text)
    return recipe


SEARCHED_RECIPE = """
[search]
name = "fixture"
space = "{space}"
strategy = "evolution"
budget = 20
num_trained = 8
seed = 3
inherit_weights = true      # mutated children start from their parent's weights
[search.options]
initial_size = 4
tournament_size = 2
[data]
path = "{data}"
cache_dir = "{cache}"
cache_size = 64
[train]
iterations = 4
batch_size = 4
rungs = 2                   # multi-fidelity: scored at 2 iterations, the better half go on to 4
reduction_factor = 2.0
[constraints]
max_flops = 20_000_000
max_cpu_ms = 10_000.0
max_memory_mb = 1.0
[resources]
num_workers = 1
max_retries = 1
"""


@pytest.fixture(scope="session")
def searched_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a real small search (evolution on embedded Ray, real training), made
    once per test session by the command line in its own process; tests must not change it.

    Every candidate is measured, but its runtime budget is one no tiny candidate breaks on any
    machine; candidates are rejected by their measured peak memory (the allocator's count, the
    same on every machine with this torch), so which are rejected, trained and mutated is the
    same everywhere. Training is multi-fidelity: candidates below the median at the first rung
    stop there."""
    from tvnsearch.data.synth import SynthConfig, write_synth

    root = tmp_path_factory.mktemp("searched")
    write_synth(root / "synth", SynthConfig(num_videos=18, size=32, num_frames=8))
    recipe = root / "recipe.toml"
    recipe.write_text(
        SEARCHED_RECIPE.format(
            space=SPACES_DIR / "tiny.toml", data=root / "synth", cache=root / "frames"
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "tvnsearch", "search", str(recipe), "--results", str(root / "r")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (root / "r").iterdir()
    return run_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_processes_of(temp_dir: str) -> None:
    """A test cluster's processes (they name its temp dir) and theirs, never another Ray's."""
    roots = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.pid != os.getpid() and any(temp_dir in arg for arg in p.info["cmdline"] or ())
    ]
    doomed = {p for root in roots for p in (root, *root.children(recursive=True))}
    for process in doomed:
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs(doomed, timeout=10)
