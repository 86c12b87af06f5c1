"""A search ended by a signal or a failure that would repeat: one line, a resumable run folder."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import small_search

from tvnsearch.search.lineage import read_lineage


def test_sigterm_ends_a_search_with_one_line_and_a_resumable_run(tmp_path: Path) -> None:
    recipe = small_search(tmp_path, budget=400, iterations=30)
    command = [sys.executable, "-m", "tvnsearch", "search", str(recipe)]
    search = subprocess.Popen(
        [*command, "--results", str(tmp_path / "r")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list((tmp_path / "r").glob("*/lineage/part-*.parquet")):
        assert search.poll() is None and time.monotonic() < deadline, search.stderr.read()
        time.sleep(0.5)
    search.send_signal(signal.SIGTERM)
    _, err = search.communicate(timeout=120)
    (run_dir,) = (tmp_path / "r").iterdir()
    assert search.returncode == 143, err
    assert f"terminated; resume with: tvnsearch resume {run_dir}" in err
    assert "Traceback" not in err
    told = read_lineage(run_dir)
    assert 0 < len(told) < 400 and sorted(told["candidate_id"]) == list(range(len(told)))
