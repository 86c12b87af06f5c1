"""The ``dashboard`` and ``report`` commands: a run's live views, for a running or a finished run.

A running search keeps its journal and report up to date itself (``tvnsearch.inspect.live``).
For a run no driver holds (finished, stopped, or made before the views existed) both commands
first bring them up to date from the lineage, holding the run's lease meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvnsearch.cli.arguments import integer
from tvnsearch.errors import InputError, Problem

if TYPE_CHECKING:
    from tvnsearch.inspect.live import Views

DEFAULT_HOST = "127.0.0.1"  # this machine only, unless told otherwise
DEFAULT_PORT = 8080


def add_view_parsers(sub: argparse._SubParsersAction) -> None:
    dashboard = sub.add_parser(
        "dashboard", help="optuna-dashboard on a run's journal (live while it runs)"
    )
    dashboard.add_argument("run", help="a run folder, results/<name>-<timestamp>")
    dashboard.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on ({DEFAULT_HOST}: this machine)"
    )
    dashboard.add_argument(
        "--port",
        type=integer(0, 65535),
        default=DEFAULT_PORT,
        help=f"({DEFAULT_PORT}; 0: any free port)",
    )
    dashboard.set_defaults(handler=cmd_dashboard)
    report = sub.add_parser("report", help="write a run's HTML report (and its Optuna journal)")
    report.add_argument("run", help="a run folder, results/<name>-<timestamp>")
    report.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from tvnsearch.inspect.journal import JOURNAL_FILE
    from tvnsearch.inspect.report import REPORT_FILE

    run = Path(args.run)
    if _refreshed(run) is None:
        print(f"a search is running in {run}: it keeps its report and journal up to date")
    print(f"report: {run / REPORT_FILE}\njournal: {run / JOURNAL_FILE}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna_dashboard import wsgi

    from tvnsearch.inspect.journal import JOURNAL_FILE

    run = Path(args.run)
    journal = run / JOURNAL_FILE
    if _refreshed(run) is None and not journal.is_file():
        why = "a driver holds this run but keeps no journal (started before it did): resume it"
        raise InputError(str(journal), why)
    app = wsgi(JournalStorage(JournalFileBackend(str(journal))))

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a request per thread: the dashboard polls while a page loads

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # no line per request
            pass

    try:
        server = make_server(args.host, args.port, app, server_class=Server, handler_class=Quiet)
    except OSError as exc:
        why = f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        raise InputError("command line", [Problem("--port", why)]) from None
    # The dashboard's analyses warn of their own caveats (too few trials for an importance), a
    # line per parameter per page load: for its pages, not for this terminal.
    warnings.filterwarnings("ignore", category=UserWarning)
    host, port = server.server_address[:2]
    print(f"dashboard of {run}: http://{host}:{port}/dashboard/ (Ctrl-C to stop)", flush=True)
    with server, contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def _refreshed(run: Path) -> Views | None:
    """The run's views brought up to date from its lineage, under its lease; None when a
    driver holds the run (it keeps them itself)."""
    from tvnsearch.inspect.live import refresh_views
    from tvnsearch.search.lease import Lease, RunLeased
    from tvnsearch.search.runs import load_run

    load_run(run)  # names the folder when it is no run
    if not (run / "lineage").is_dir():
        raise InputError(str(run / "lineage"), "no such folder: nothing told yet")
    try:
        with Lease(run):
            return refresh_views(run)
    except RunLeased:
        return None
