"""``tvnsearch dashboard``: optuna-dashboard on a run's journal, read through its HTTP API, for a
finished run and for one whose search is running; ``tvnsearch report``."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from browser import CHROMIUM, drawn_on, screenshot
from conftest import free_port, small_search

from tvnsearch.cli.main import main
from tvnsearch.inspect.journal import JOURNAL_FILE
from tvnsearch.inspect.report import REPORT_FILE
from tvnsearch.search.lineage import read_lineage

CLI = [sys.executable, "-m", "tvnsearch"]
STATES = {"trained": "Complete", "rejected": "Pruned", "failed": "Fail"}


def dashboard(run: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "dashboard", str(run), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def api(port: int, path: str, *, timeout: float = 60.0) -> dict:
    """GET a JSON answer of the dashboard, waiting for it to listen."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
                return json.loads(answer.read())
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def trials_of(port: int) -> tuple[dict, list[dict]]:
    (study,) = api(port, "/api/studies")["study_summaries"]
    return study, api(port, f"/api/studies/{study['study_id']}?after=0")["trials"]


def attribute(trial: dict, key: str) -> str | None:
    return next((a["value"] for a in trial["user_attrs"] if a["key"] == key), None)


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    return process.returncode, out


@pytest.fixture
def finished_run(searched_run: Path, tmp_path: Path) -> Path:
    """A copy of the real finished run, without its journal: as a run made before journals."""
    run = tmp_path / searched_run.name
    shutil.copytree(searched_run, run)
    (run / JOURNAL_FILE).unlink()
    (run / REPORT_FILE).unlink()
    return run


def test_the_dashboard_of_a_finished_run_serves_its_candidates(finished_run, tmp_path) -> None:
    port = free_port()
    server = dashboard(finished_run, port)
    try:
        study, trials = trials_of(port)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard/", timeout=10).read()
        if CHROMIUM:  # as a user sees it: the study's page drawn by the dashboard's scripts
            shot = screenshot(
                f"http://127.0.0.1:{port}/dashboard/studies/{study['study_id']}",
                tmp_path / "dashboard.png",
            )
            assert drawn_on(shot) > 0.05
    finally:
        code, out = stop(server)
    assert code == 0 and f"http://127.0.0.1:{port}/dashboard/" in out
    assert b"<html" in page.lower()
    frame = read_lineage(finished_run)
    assert study["study_name"] == finished_run.name
    assert study["directions"] == ["maximize"]
    assert [int(attribute(t, "candidate_id")) for t in trials] == frame["candidate_id"].tolist()
    for trial, (_, row) in zip(trials, frame.iterrows(), strict=True):
        assert attribute(trial, "status") == row["status"]
        if row["status"] in STATES:
            assert trial["state"] == STATES[row["status"]]
        if row["status"] == "trained":
            assert trial["values"] == [pytest.approx(row["fitness"])]
            assert {p["name"] for p in trial["params"]} >= {"resolution", "b0.spatial_type"}
    assert (finished_run / REPORT_FILE).is_file()  # brought up to date with the journal


def test_the_dashboard_follows_a_running_search(tmp_path: Path) -> None:
    """Started while a real search runs: the trials grow as candidates are told; after the
    search is stopped, the journal holds exactly the lineage and the report says it stopped."""
    recipe = small_search(tmp_path, budget=400, iterations=30)
    results = tmp_path / "results"
    search = subprocess.Popen(
        [*CLI, "search", str(recipe), "--results", str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = None
    try:
        journal = _wait_for(lambda: next(results.glob(f"*/{JOURNAL_FILE}"), None), search)
        _wait_for(lambda: _trials_in(journal) >= 1, search)
        port = free_port()
        server = dashboard(journal.parent, port)
        _, first = trials_of(port)
        assert first
        _wait_for(lambda: len(trials_of(port)[1]) > len(first), search)  # live
        assert search.poll() is None
    finally:
        search.send_signal(signal.SIGINT)
        _, err = search.communicate(timeout=120)
    assert search.returncode == 130, err[-2000:]
    run = journal.parent
    try:
        told = len(read_lineage(run))
        _, trials = trials_of(port)
        assert len(trials) == told  # the views caught up before the driver ended
    finally:
        code, _ = stop(server)
    assert code == 0
    report = (run / REPORT_FILE).read_text()
    assert "interrupted" in report and f"tvnsearch resume {run}" in report


def test_report_brings_a_runs_views_up_to_date(finished_run, capsys) -> None:
    assert main(["report", str(finished_run)]) == 0
    assert (finished_run / REPORT_FILE).is_file() and (finished_run / JOURNAL_FILE).is_file()
    assert str(finished_run / REPORT_FILE) in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["dashboard", "{run}", "--port", "70000"],
        ["dashboard", "{missing}"],
        ["report", "{missing}"],
    ],
)
def test_bad_dashboard_arguments_exit_2(argv, finished_run, tmp_path, capsys) -> None:
    where = {"run": str(finished_run), "missing": str(tmp_path / "nothing")}
    try:
        code = main([a.format(**where) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    assert code == 2
    last = capsys.readouterr().err.splitlines()[-1]  # argparse's come after its usage line
    assert last.startswith(f"tvnsearch {argv[0]}: ")
    assert ("--port" if "--port" in argv else where["missing"]) in last


def _trials_in(journal: Path) -> int:
    return journal.read_text().count('"op_code":4')  # CREATE_TRIAL, one per candidate


def _wait_for(condition, search: subprocess.Popen, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if search.poll() is not None:
            raise AssertionError(f"the search ended: {search.communicate()[1][-2000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)
    return found
