"""The run's live views: the driver's child process follows the lineage as parts land, keeps the
journal a prefix of it, redraws the report, and ends with the driver, however the driver ends."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import small_search
from test_journal import records

from tvnsearch.errors import SearchStopped
from tvnsearch.inspect import live
from tvnsearch.inspect.journal import JOURNAL_FILE, load_trials
from tvnsearch.inspect.live import VIEWS_LOG, ViewsStopped, live_views
from tvnsearch.inspect.report import REPORT_FILE
from tvnsearch.search.lineage import LineageWriter
from tvnsearch.search.runs import LOGS_DIR, create_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder as ``tvnsearch search`` makes it, before its search starts."""
    return create_run(small_search(tmp_path, budget=12), results_dir=tmp_path / "results")


def held(run_dir: Path) -> list[int]:
    path = run_dir / JOURNAL_FILE
    return [t.user_attrs["candidate_id"] for t in load_trials(path)] if path.exists() else []


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def state_of(run_dir: Path) -> str:
    text = (run_dir / REPORT_FILE).read_text()
    return text.split('<span id="state">', 1)[1].split("</span>", 1)[0]


def test_the_child_follows_parts_as_they_land_and_ends_with_the_search(run_dir, tiny_space):
    told = records(tiny_space, 12)
    with live_views(run_dir), LineageWriter(run_dir) as writer:
        wait_until(lambda: (run_dir / REPORT_FILE).exists())
        assert (
            "running" in state_of(run_dir)
            and "location.reload" in (run_dir / REPORT_FILE).read_text()
        )
        for part in (told[:5], told[5:]):
            for record in part:
                writer.append(record)
            writer.flush()
            wait_until(lambda n=part[-1].candidate_id: held(run_dir)[-1:] == [n])
    assert held(run_dir) == list(range(12))
    assert state_of(run_dir) == "complete"  # 12 of a budget of 12 told
    assert "location.reload" not in (run_dir / REPORT_FILE).read_text()
    assert (run_dir / LOGS_DIR / VIEWS_LOG).exists()


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (KeyboardInterrupt(), "interrupted"),
        (SearchStopped("the profiler died"), "stopped: the profiler died"),
        (OSError("No space left\non device"), "stopped by an error: OSError: No space left;"),
    ],
)
def test_a_search_that_stops_says_why_in_the_last_report(run_dir, tiny_space, error, said):
    with pytest.raises(type(error)), live_views(run_dir), LineageWriter(run_dir) as writer:
        for record in records(tiny_space, 3):
            writer.append(record)
        writer.flush()
        raise error
    assert held(run_dir) == [0, 1, 2]  # what was on disk, caught up before the end
    assert state_of(run_dir).startswith(said)
    assert f"resume with: tvnsearch resume {run_dir}" in state_of(run_dir)


def test_a_driver_that_is_gone_ends_the_child(run_dir) -> None:
    """kill -9 of the driver closes the child's stdin: it draws a last report and exits."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tvnsearch.inspect.live", str(run_dir)],
        stdin=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: (run_dir / REPORT_FILE).exists())
    child.stdin.close()
    assert child.wait(timeout=60) == 0
    assert state_of(run_dir).startswith("the driver stopped before it ended the search")


def test_a_child_that_fails_leaves_the_search_alone_and_says_so(run_dir) -> None:
    (run_dir / "recipe.toml").write_text("[search\n")  # the child cannot read the run
    ran = False
    with pytest.warns(ViewsStopped, match=VIEWS_LOG), live_views(run_dir):
        ran = True
    assert ran
    assert "recipe.toml" in (run_dir / LOGS_DIR / VIEWS_LOG).read_text()


def test_the_report_is_drawn_at_most_every_few_seconds(run_dir, tiny_space, monkeypatch):
    """Parts that land close together are drawn together; a slow draw spaces draws further."""
    views = live.Views(run_dir, live.load_run(run_dir))
    assert views.draw(live=True)  # behind: nothing drawn yet
    with LineageWriter(run_dir) as writer:
        writer.append(records(tiny_space, 1)[0])
    assert views.catch_up() == 1
    assert not views.draw(live=True)  # due only REPORT_SECONDS after the last
    monkeypatch.setattr(live, "REPORT_SECONDS", 0.0)
    views._draw_seconds = 0.0  # as if drawing took no time
    assert views.draw(live=True)
    assert not views.draw(live=True)  # nothing new: not behind
    views._stale, views._draw_seconds = True, 1.0  # a draw of 1 s: the next 20 s later
    assert not views.draw(live=True)
    views._stale, views._drawn_at = False, time.monotonic() - live.HEARTBEAT_SECONDS
    assert views.draw(live=True)  # nothing new for a while: drawn anyway, the page stays fresh
