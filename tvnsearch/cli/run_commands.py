"""The ``search``, ``resume`` and ``status`` commands of the ``tvnsearch`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from tvnsearch.errors import SearchStopped
from tvnsearch.interrupts import signalled
from tvnsearch.search.runs import discard_untold

if TYPE_CHECKING:
    from tvnsearch.search.launch import Views
    from tvnsearch.search.progress import Tally


def add_run_parsers(sub: argparse._SubParsersAction) -> None:
    search = sub.add_parser("search", help="start a search from a recipe (runners/*.toml)")
    search.add_argument("recipe", help="recipe TOML: space, data, training, constraints, workers")
    search.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set train.iterations=50 (repeatable)",
    )
    search.add_argument("--address", help="a Ray cluster to run on ('auto', 'host:6379')")
    search.add_argument("--name", help="run folder prefix (default: the recipe's search.name)")
    search.add_argument("--results", default="results", help="where run folders go (results)")
    search.set_defaults(handler=cmd_search)
    resume = sub.add_parser("resume", help="continue an interrupted search")
    resume.add_argument("run", help="a run folder, results/<name>-<timestamp>")
    resume.add_argument("--address", help="a Ray cluster to run on (default: the recipe's)")
    resume.set_defaults(handler=cmd_resume)
    status = sub.add_parser(
        "status", help="a run's counts, best so far, pace and the hypervolume of its front"
    )
    status.add_argument("run", help="a run folder, results/<name>-<timestamp>")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)


def cmd_search(args: argparse.Namespace) -> int:
    from tvnsearch.search.launch import run_search
    from tvnsearch.search.runs import create_run

    made = not Path(args.results).exists()
    run_dir = create_run(
        args.recipe, args.overrides, address=args.address, name=args.name, results_dir=args.results
    )
    print(f"run folder: {run_dir}", flush=True)

    def discard() -> bool:  # a run that never began (no cluster, say) leaves no folder
        if not discard_untold(run_dir):
            return False
        if made:
            with contextlib.suppress(OSError):  # the --results folder, if this made it and it
                Path(args.results).rmdir()  # is empty
        return True

    try:
        search = partial(run_search, run_dir, source=args.recipe, views=_views())
        return _finish(run_dir, search, discard=discard)
    except BaseException:
        discard()
        raise


def cmd_resume(args: argparse.Namespace) -> int:
    from tvnsearch.search.launch import run_search

    print(f"resuming: {args.run}", flush=True)
    search = partial(run_search, args.run, address=args.address, views=_views())
    return _finish(Path(args.run), search)


def _views() -> Views:
    """What keeps a run's journal and report while it searches."""
    from tvnsearch.inspect.live import live_views

    return live_views


def cmd_status(args: argparse.Namespace) -> int:
    from tvnsearch.inspect.hypervolume import describe_hypervolume, hypervolume_summary
    from tvnsearch.search.runs import describe_status, run_status

    status = run_status(args.run)
    status["hypervolume"] = hypervolume_summary(args.run)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(describe_status(status))
        print(describe_hypervolume(status["hypervolume"]))
    return 0


def _finish(
    run_dir: Path, search: Callable[[], Tally], *, discard: Callable[[], bool] | None = None
) -> int:
    """Run ``search``, ending in one line, never a traceback: done, interrupted (Ctrl-C: 130,
    SIGTERM: 143; the lineage is flushed and what was in flight runs again on resume) or stopped
    by a failure that every later candidate would meet. ``discard`` removes a new run that
    ended before its first candidate was told."""
    try:
        search()
    except SearchStopped as exc:
        if signalled() is None:
            print(f"\nsearch stopped: {exc}; {_go_on(run_dir, discard)}", file=sys.stderr)
            return 1
        return _stopped_by_signal(run_dir, discard)
    except BaseException:
        if signalled() is None:
            raise
        return _stopped_by_signal(run_dir, discard)
    from tvnsearch.inspect.report import REPORT_FILE

    print(_summary(run_dir))
    print(f"results: {run_dir}/lineage (Parquet, one row per candidate)")
    print(f"report:  {run_dir / REPORT_FILE} (open it in a browser)")
    print(f"live:    tvnsearch dashboard {run_dir}")
    return 0


def _summary(run_dir: Path) -> str:
    from tvnsearch.inspect.summary import summarize, summary_table
    from tvnsearch.search.lineage import read_lineage
    from tvnsearch.search.runs import load_run

    return summary_table(summarize(read_lineage(run_dir), load_run(run_dir)))


def _stopped_by_signal(run_dir: Path, discard: Callable[[], bool] | None) -> int:
    """Ctrl-C or SIGTERM (``tvnsearch.cli.interrupts``): the lineage is flushed already."""
    what, code = signalled() or ("interrupted", 130)
    print(f"\n{what}; {_go_on(run_dir, discard)}", file=sys.stderr)
    return code


def _go_on(run_dir: Path, discard: Callable[[], bool] | None) -> str:
    if discard is not None and discard():
        return f"no candidate was told, so {run_dir} is removed"
    return f"resume with: tvnsearch resume {run_dir}"
