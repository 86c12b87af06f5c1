"""Ctrl-C and SIGTERM (what SLURM, Kubernetes and ``kill`` send) end every command alike: as a
``KeyboardInterrupt``, then one line and exit code 130 or 143 (``tvnsearch.cli``).

An exception raised by a signal handler can surface anywhere. Some code turns it into an error of
its own (an import interrupted becomes "module not installed"), and some swallows it (a lock's
callback: "Exception ignored in ..."). So a signal is remembered: whatever ends a command after
one is taken for it (``signalled``), and the search loop stops at its next turn if the
interrupt was swallowed (``raise_if_signalled``)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_received: list[int] = []


def _on_signal(signum: int, frame: object) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise ``KeyboardInterrupt`` and are remembered."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def raise_if_signalled() -> None:
    """``KeyboardInterrupt`` if a signal came within ``signals_interrupt`` (even one whose
    interrupt some code swallowed)."""
    if _received:
        raise KeyboardInterrupt


def signalled() -> tuple[str, int] | None:
    """What ended a command that a signal stopped, and its exit code; None if none came."""
    if not _received:
        return None
    return ("terminated", 143) if signal.SIGTERM in _received else ("interrupted", 130)
