"""A run folder under misuse: two drivers at once, a driver killed, damaged lineage parts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import small_search

from tvnsearch.cli.main import main
from tvnsearch.inspect.journal import JOURNAL_FILE, load_trials
from tvnsearch.inspect.report import REPORT_FILE
from tvnsearch.search.lineage import read_lineage, scan_lineage
from tvnsearch.search.runs import run_status


def tvnsearch(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tvnsearch", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_a_second_driver_is_refused_and_a_killed_driver_s_lease_is_taken_over(
    tmp_path: Path,
) -> None:
    recipe = small_search(tmp_path, budget=60)
    first = subprocess.Popen(
        [sys.executable, "-m", "tvnsearch", "search", str(recipe), "--results", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its Ray goes with it when the test kills the group
    )
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("small-*/lineage/part-*.parquet")):
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
        time.sleep(0.5)
    (run_dir,) = tmp_path.glob("small-*")

    second = tvnsearch("resume", str(run_dir), timeout=60)
    assert second.returncode == 2, second.stderr
    (line,) = second.stderr.strip().splitlines()
    assert f"being searched by another driver: pid {first.pid} on " in line
    assert f"running in pid {first.pid}" in tvnsearch("status", str(run_dir)).stdout

    os.kill(first.pid, signal.SIGKILL)  # kill -9 of the driver alone
    first.wait(timeout=30)
    try:
        third = tvnsearch("resume", str(run_dir))
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # what Ray the first driver left
    assert third.returncode == 0, third.stderr
    told = read_lineage(run_dir)
    assert sorted(told["candidate_id"]) == list(range(60))  # each once, nothing lost
    assert run_status(run_dir)["complete"] and not (run_dir / "lease.json").exists()
    # The views the killed driver's child kept were brought up to date by the resume.
    trials = load_trials(run_dir / JOURNAL_FILE)
    assert [t.user_attrs["candidate_id"] for t in trials] == told["candidate_id"].tolist()
    assert '<span id="state">complete</span>' in (run_dir / REPORT_FILE).read_text()


def damage(run_dir: Path) -> list[str]:
    """A torn copy of a part, an empty part and a duplicated part, as a bad copy or a full disk
    would leave them; their names."""
    folder = run_dir / "lineage"
    parts = sorted(folder.glob("part-*.parquet"))
    data = parts[0].read_bytes()
    names = ["part-900001-aa.parquet", "part-900002-aa.parquet", "part-900003-aa.parquet"]
    (folder / names[0]).write_bytes(data[: len(data) // 2])
    (folder / names[1]).write_bytes(b"")
    (folder / names[2]).write_bytes(data)
    return names


def test_status_pareto_lineage_and_resume_work_on_damaged_parts_and_name_them(
    searched_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / searched_run.name
    shutil.copytree(searched_run, run_dir)
    before = run_status(run_dir)
    names = damage(run_dir)
    commands = {
        "status": [],
        "pareto": [],
        "lineage": ["--id", "3"],
        "export": ["--best", "--out", str(tmp_path / "exports")],
        "resume": [],
    }
    for command, options in commands.items():
        assert main([command, str(run_dir), *options]) == 0, command
        err = capsys.readouterr().err
        assert "Traceback" not in err
        for name in names:
            (line,) = [line for line in err.splitlines() if name in line]
            assert line.startswith(f"tvnsearch {command}: note: ")
    # resume moved them aside, and every later reader finds a clean folder, counts unchanged
    assert sorted(p.name for p in (run_dir / "quarantine").iterdir()) == names
    assert scan_lineage(run_dir)[1] == []
    after = run_status(run_dir)
    assert {k: after[k] for k in ("done", "trained", "best")} == {
        k: before[k] for k in ("done", "trained", "best")
    }


def test_a_torn_profile_log_and_roofline_are_rebuilt_not_fatal(
    searched_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / searched_run.name
    shutil.copytree(searched_run, run_dir)
    (run_dir / "lineage" / sorted(os.listdir(run_dir / "lineage"))[-1]).unlink()  # unfinished
    log = run_dir / "profiles-cpu.jsonl"
    text = log.read_text()
    log.write_text(text[: len(text) // 2])  # cut mid-line
    (run_dir / "roofline-cpu.json").write_text('{"device": ')
    assert main(["resume", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "profiles-cpu.jsonl: 1 line(s) that are no profile record left out" in err
    assert "roofline-cpu.json: not valid JSON" in err and "measured again" in err
    assert run_status(run_dir)["complete"]
