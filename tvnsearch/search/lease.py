"""One driver per run: a lease file naming its holder, kept alive by a heartbeat.

``run_dir/lease.json`` holds the driver's host, pid, a random token, when it took the run and its
last heartbeat. It is taken atomically: the content is written to a private file first and then
hard-linked to ``lease.json``, which fails when the name exists, so a lease is never seen half
written and two drivers can never both take it. A thread rewrites the heartbeat every
``HEARTBEAT_SECONDS``.

A second driver reads the lease and refuses, naming the holder (``RunLeased``), unless the lease
is stale: its process is gone (same host) or its heartbeat is older than ``STALE_SECONDS``
(another host, or a driver stopped for that long; clocks must agree within that). A stale lease is
taken over by renaming it to a name of the taker's own (only one of several takers can rename
it) and taking it anew. The holder checks its token before each part it writes
(``Lease.check``): a driver that was taken over (stopped, then continued) stops with
``LeaseLost`` and writes nothing more. Lineage part names carry the writer's token as well, so
two writers could never replace each other's files even then.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from tvnsearch.errors import InputError, SearchStopped
from tvnsearch.files import atomic_write_text

LEASE_FILE = "lease.json"
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 60.0  # six heartbeats missed


class RunLeased(InputError):
    """Another driver holds the run (the command exits 2, naming it)."""


class LeaseLost(SearchStopped):
    """This driver's lease was taken over: it must write nothing more."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    token: str
    taken_at: float  # seconds since the epoch
    heartbeat_at: float

    def describe(self, now: float) -> str:
        taken = datetime.fromtimestamp(self.taken_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"pid {self.pid} on {self.host} (since {taken}, last heartbeat "
            f"{max(0.0, now - self.heartbeat_at):.0f} s ago)"
        )


def read_holder(run_dir: str | Path) -> Holder | None:
    """The holder of ``run_dir``'s lease; None when there is none or it cannot be read (edited
    by hand, say: nothing vouches for it, and it is taken over)."""
    return _read(Path(run_dir) / LEASE_FILE)


def _read(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def is_stale(holder: Holder, now: float, *, host: str | None = None) -> bool:
    """True when ``holder`` no longer drives its run: its process is gone (checked on its own
    host only) or its heartbeat is older than ``STALE_SECONDS``."""
    if now - holder.heartbeat_at > STALE_SECONDS:
        return True
    return holder.host == (host or socket.gethostname()) and not _alive(holder.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class Lease:
    """The lease of ``run_dir`` while a ``with`` block runs; ``RunLeased`` if another live
    driver holds it. ``token`` names this holder (and its lineage parts)."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.path = Path(run_dir) / LEASE_FILE
        self.token = secrets.token_hex(4)
        self.heartbeat_seconds = heartbeat_seconds
        self.took_over: Holder | None = None  # the stale holder this lease replaced
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost = False

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        now = time.time()
        me = Holder(socket.gethostname(), os.getpid(), self.token, now, now)
        for _ in range(3):  # a stale lease taken over, then taken anew (others may race)
            if self._link(me):
                break
            holder = read_holder(self.path.parent)
            if holder is None and not self.path.exists():
                continue  # released between the two looks
            if holder is not None and not is_stale(holder, time.time()):
                raise RunLeased(
                    str(self.path.parent),
                    f"being searched by another driver: {holder.describe(time.time())}; "
                    "wait for it to end, or stop it first",
                )
            self._take_over(holder)
        else:
            raise RunLeased(str(self.path.parent), "other drivers keep taking its lease; try again")
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def _link(self, me: Holder) -> bool:
        tmp = self.path.with_name(f".{LEASE_FILE}.{self.token}.tmp")
        tmp.write_text(json.dumps(asdict(me)) + "\n")
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, stale: Holder | None) -> None:
        """Move the stale lease aside under this taker's own name: of several takers, one
        renames it and the others find it gone."""
        aside = self.path.with_name(f".{LEASE_FILE}.{self.token}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        moved = _read(aside)
        if stale is not None and moved is not None and moved.token != stale.token:
            # Another taker took it anew in between: put its fresh lease back.
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        else:
            self.took_over = stale
        aside.unlink(missing_ok=True)

    def check(self) -> None:
        """``LeaseLost`` unless this driver still holds the lease (call before every write)."""
        holder = read_holder(self.path.parent)
        if self._lost or holder is None or holder.token != self.token:
            self._lost = True
            by = "" if holder is None else f" by {holder.describe(time.time())}"
            raise LeaseLost(f"this driver's lease on {self.path.parent} was taken over{by}")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            holder = read_holder(self.path.parent)
            if holder is None or holder.token != self.token:
                self._lost = True
                return
            fresh = Holder(**{**asdict(holder), "heartbeat_at": time.time()})
            atomic_write_text(self.path, json.dumps(asdict(fresh)) + "\n")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        holder = read_holder(self.path.parent)
        if holder is not None and holder.token == self.token:
            self.path.unlink(missing_ok=True)
