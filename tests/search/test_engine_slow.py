"""The engine's process-level checks, slow (CI skips them): the driver killed with SIGKILL and
resumed; a search across a two-node Ray cluster on this machine with a training worker killed.
The same code runs ``bench/engine_bench.py``'s ``kill`` and ``cluster`` sections."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import engine_runs

pytestmark = pytest.mark.slow
ARGS = argparse.Namespace(iterations=20)


def test_a_driver_killed_with_sigkill_resumes_to_a_complete_lineage() -> None:
    result = engine_runs.kill(ARGS)
    assert result["rows_on_disk_after_kill"] < result["budget"]
    assert result["resume_exit_code"] == 0 and result["complete"]
    assert result["duplicate_ids"] == 0 and result["missing_ids"] == []


def test_a_search_spans_two_nodes_and_survives_a_killed_worker() -> None:
    result = engine_runs.cluster(ARGS)
    assert result["search_exit_code"] == 0 and result["complete"]
    assert len(result["nodes_that_trained"]) == 2
    assert result["rows_finished_by_the_killed_pid"] == 0
