"""The ``search``, ``resume`` and ``status`` commands of the ``tvnsearch`` command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from tvnsearch.errors import SearchStopped
from tvnsearch.search.progress import Tally, counts_line
from tvnsearch.search.runs import run_status


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

    run_dir = create_run(
        args.recipe, args.overrides, address=args.address, name=args.name, results_dir=args.results
    )
    print(f"run folder: {run_dir}", flush=True)
    return _finish(run_dir, lambda: run_search(run_dir))


def cmd_resume(args: argparse.Namespace) -> int:
    from tvnsearch.search.launch import run_search

    print(f"resuming: {args.run}", flush=True)
    return _finish(Path(args.run), lambda: run_search(args.run, address=args.address))


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


def _finish(run_dir: Path, search: Callable[[], Tally]) -> int:
    """Run ``search``, ending in one line, never a traceback: done, interrupted (Ctrl-C or
    SIGTERM: the lineage is flushed and what was in flight runs again on resume) or stopped by
    a failure that every later candidate would meet."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        tally = search()
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: tvnsearch resume {run_dir}", file=sys.stderr)
        return 130
    except SearchStopped as exc:
        print(f"\nsearch stopped: {exc}; resume with: tvnsearch resume {run_dir}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    status = run_status(run_dir)
    print(f"{counts_line(status)}; {status['evolved']} evolved from a tournament's winner")
    if tally.best_id is not None:
        print(f"best: candidate {tally.best_id}, fitness {tally.best_fitness:.4f}")
    print(f"results: {run_dir}/lineage (Parquet, one row per candidate)")
    print(f"summary: tvnsearch status {run_dir}")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a batch system, ``kill``) ends a search as Ctrl-C does
