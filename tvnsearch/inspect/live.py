"""A running search's live views: its Optuna journal (for optuna-dashboard) and its HTML report.

The driver starts one child process for them (``live_views``) and tells it nothing but when the
search ends. The child follows the lineage as its parts land (``LineageTail``, polled every
``POLL_SECONDS``): each new part's candidates are appended to the journal at once, and the report
is rewritten at most every ``REPORT_SECONDS``, or more rarely when it takes long to draw (never
more than ``MAX_REPORT_SHARE`` of the time), at least every ``HEARTBEAT_SECONDS`` (so that an
open page knows the search is alive through a long training), and a last time, without
reloading, when the search ends. So the driver's loop pays nothing per candidate for them
(``bench/engine_bench.py --section views``), and what the views show is always lineage already
on disk.

The child runs at a low priority, on the cores training may use (never the profiler's), and
registers as a neighbour the profiler pauses while it measures. Its output goes to
``logs/views.log``; if it fails, the search goes on and the driver says so when it ends. It
ignores Ctrl-C (it is in a session of its own): it ends when the driver says so, or when the
driver is gone (its stdin closes), after writing the report once more.

``refresh_views`` brings both views up to date once, for a run no driver holds (a run made
before the views existed, or one whose driver was killed): ``tvnsearch report`` and
``tvnsearch dashboard`` call it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import pandas as pd

from tvnsearch.errors import Notice, SearchStopped, describe_error
from tvnsearch.inspect.journal import JOURNAL_FILE, Journal, run_study, sync_journal
from tvnsearch.inspect.report import REPORT_FILE, write_report
from tvnsearch.measure.affinity import pin_process
from tvnsearch.measure.neighbours import Neighbours
from tvnsearch.search.lineage import LineageDamage, LineageTail, records_from_frame
from tvnsearch.search.recipe import RunConfig
from tvnsearch.search.runs import LOGS_DIR, load_run, tally_of

POLL_SECONDS = 1.0  # how often the child looks for new lineage parts
REPORT_SECONDS = 5.0  # the report is rewritten at most this often
MAX_REPORT_SHARE = 0.05  # and drawing it takes at most this share of the child's time
# and at least this often, new candidates or not: a page that stops changing for longer than
# ``tvnsearch.inspect.report.STALE_SECONDS`` says its driver may have stopped
HEARTBEAT_SECONDS = 120.0
END_SECONDS = 120.0  # how long the driver waits for the last report before it stops the child
VIEWS_LOG = "views.log"
NICENESS = 10


class ViewsStopped(Notice):
    """The live views stopped being updated; the search itself went on."""


@contextlib.contextmanager
def live_views(
    run_dir: Path, cores: Sequence[int] | None = None, neighbours: Path | None = None
) -> Iterator[None]:
    """Keep ``run_dir``'s journal and report up to date while the block runs (the driver's
    search): a child process, told at the end whether the search finished or why it stopped."""
    log = run_dir / LOGS_DIR / VIEWS_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tvnsearch.inspect.live", str(run_dir)]
    command += ["--cores", ",".join(map(str, cores))] if cores else []
    command += ["--neighbours", str(neighbours)] if neighbours else []
    with open(log, "a") as out:
        child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # Ctrl-C stops the driver, which then ends the child
        )  # fmt: skip
    note = ""
    try:
        yield
    except BaseException as exc:
        note = _why_stopped(exc)
        raise
    finally:
        _end(child, note, log)


def _why_stopped(exc: BaseException) -> str:
    if isinstance(exc, SearchStopped):
        return f"stopped: {exc}"
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return "interrupted"
    return f"stopped by an error: {describe_error(exc)}"


def _end(child: subprocess.Popen, note: str, log: Path) -> None:
    """Tell the child the search ended (and why), wait for its last report, say if it failed."""
    assert child.stdin is not None
    with contextlib.suppress(OSError):  # a child already gone has closed its end
        child.stdin.write(f"end {note}\n")
        child.stdin.close()
    try:
        code = child.wait(timeout=END_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        code = child.wait()
    if code != 0:
        why = f"the run's report and journal stopped being updated (exit code {code}): see {log}"
        warnings.warn(why, ViewsStopped, stacklevel=3)


class Views:
    """The journal and the report of one run, brought up to date as its lineage grows."""

    def __init__(self, run_dir: Path, config: RunConfig) -> None:
        self.run_dir, self.config = run_dir, config
        self.tail = LineageTail(run_dir)
        self.frame = self._read()
        self.journal: Journal = sync_journal(
            run_dir / JOURNAL_FILE, run_study(run_dir, config), records_from_frame(self.frame)
        )
        self._drawn_at = -float("inf")
        self._draw_seconds = 0.0
        self._stale = True  # rows the report does not show yet

    def catch_up(self) -> int:
        """Append the parts landed since the last call to the journal; how many rows."""
        new = self._read()
        if new.empty:
            return 0
        self.journal.append(records_from_frame(new))
        self.frame = new if self.frame.empty else pd.concat([self.frame, new], ignore_index=True)
        self._stale = True
        return len(new)

    def _read(self) -> pd.DataFrame:
        """The rows of the parts landed since the last read; what was left out is said."""
        frame, damaged = self.tail.read()
        for damage in damaged:
            warnings.warn(str(damage), LineageDamage, stacklevel=3)
        return frame

    def draw(self, *, live: bool, note: str = "", force: bool = False) -> bool:
        """Rewrite the report if it is behind and due, or has not been rewritten for
        ``HEARTBEAT_SECONDS`` (``force``: now); whether it was."""
        since = time.monotonic() - self._drawn_at
        wait = max(REPORT_SECONDS, self._draw_seconds / MAX_REPORT_SHARE)
        due = (self._stale and since >= wait) or since >= HEARTBEAT_SECONDS
        if not (force or due):
            return False
        started = time.monotonic()
        path = self.run_dir / REPORT_FILE
        now = datetime.now(UTC)
        write_report(self.frame, self.config, path, live=live, note=note, updated_at=now)
        self._drawn_at, self._stale = time.monotonic(), False
        self._draw_seconds = self._drawn_at - started
        return True

    def final_note(self, note: str) -> str:
        """What the last report says of how the search ended."""
        if note:
            return f"{note}; resume with: tvnsearch resume {self.run_dir}"
        if tally_of(self.frame, self.config.search).finished:
            return ""
        return f"unfinished; resume with: tvnsearch resume {self.run_dir}"


def follow(run_dir: Path, commands: TextIO, *, poll_seconds: float = POLL_SECONDS) -> None:
    """The child's loop: catch up, draw when due, until ``commands`` says ``end [note]`` or
    closes (the driver is gone); then draw a last time."""
    views = Views(run_dir, load_run(run_dir))
    views.draw(live=True, force=True)
    while (ended := _ended(commands, poll_seconds)) is None:
        views.catch_up()
        views.draw(live=True)
    views.catch_up()
    views.draw(live=False, note=views.final_note(ended), force=True)


def _ended(commands: TextIO, timeout: float) -> str | None:
    """None while the driver runs; else the note it ended with (a driver gone says so)."""
    readable, _, _ = select.select([commands], [], [], timeout)
    if not readable:
        return None
    line = commands.readline()
    if not line:
        return "the driver stopped before it ended the search"
    return line.removeprefix("end").strip()


def refresh_views(run_dir: Path) -> Views:
    """Bring a run's journal and report up to date once (no driver may hold the run: the caller
    holds its lease)."""
    views = Views(run_dir, load_run(run_dir))
    views.draw(live=False, note=views.final_note(""), force=True)
    return views


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a running search's live views (the driver's)")
    parser.add_argument("run")
    parser.add_argument("--cores", help="the cores it may run on, e.g. 1,2,3")
    parser.add_argument("--neighbours", help="where to register to be paused while timing")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver ends it
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    if args.cores:
        pin_process({int(c) for c in args.cores.split(",")})
    neighbours = Neighbours(args.neighbours) if args.neighbours else None
    with neighbours.registered() if neighbours else contextlib.nullcontext():
        follow(Path(args.run), sys.stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
