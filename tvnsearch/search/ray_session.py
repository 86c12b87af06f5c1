"""Ray's session in this process: an embedded local Ray, or a cluster joined, and undone.

Embedded Ray is the search's own: never a cluster that ``RAY_ADDRESS`` or a ``ray start`` names,
listening on 127.0.0.1 only, its files in a folder only this user can enter, and a token made for
it that lives in its processes' environments only (Ray would write ``~/.ray/auth_token``
world-readable). A cluster is probed before Ray is asked, and Ray's own retries are cut short:
an address that cannot be joined is one line naming ``resources.address`` within seconds.

This module and ``tvnsearch.search.executors`` are the only ones that import Ray. Some of what
they use is private to Ray 2.60 (``ray._private``, ``ray._raylet``);
``tests/search/test_ray_network.py`` checks every behaviour that depends on it.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import ray
from ray._private import ray_constants, services
from ray._private import utils as ray_utils
from ray._raylet import AuthenticationTokenLoader, Config
from ray.exceptions import AuthenticationError

from tvnsearch.errors import InputError, Problem, describe_error
from tvnsearch.measure.affinity import usable_cores

_QUIET = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
CONNECT_SECONDS = 3  # a live Ray cluster's GCS answers in milliseconds: longer is a wrong address
_FAIL_FAST = {  # Ray's defaults retry for about 60 s (no token) to 14 min (nothing answers)
    "RAY_gcs_server_port_wait_time_s": "1",  # read by ray.init: attempts at the GCS, 1 s apart
    "RAY_gcs_rpc_server_connect_timeout_s": str(CONNECT_SECONDS),
    "RAY_py_gcs_connect_timeout_s": str(CONNECT_SECONDS),
}
# Ray's core answers SIGTERM with a C++ stack (and at times an abort) instead of the driver's own
# handler while it starts; the stacks of its workers went to the private folder, removed anyway.
_NO_STACK_DUMPS = {"RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1"}
_MAX_TEMP_ROOT = 23  # a Unix socket path holds 107 bytes: 84 go to /tvnray-*/ray/session_*/...
_session: dict[str, Any] = {}  # what start_ray changed in this process, for stop_ray to undo


def start_ray(
    address: str | None = None, *, num_cpus: int | None = None, source: str = "cluster"
) -> bool:
    """Connect to the cluster at ``address``, or start an embedded local Ray with ``num_cpus``
    (default: every usable core). False when Ray was running already (the caller keeps it).

    Embedded Ray is this process's own (never a cluster that ``RAY_ADDRESS`` or a ``ray start``
    names), listens on 127.0.0.1 only, keeps its files in a private folder and requires a token
    made for it, held in its processes' environments only. A cluster that cannot be joined
    (nothing answers, no token, not Ray) is an ``InputError`` of ``source`` naming
    ``resources.address``, within seconds."""
    if ray.is_initialized():
        return False
    with _sigterm_held():
        if address and address != "local":
            _connect(address, source)
        else:
            _start_local(num_cpus or len(usable_cores()))
    return True


@contextlib.contextmanager
def _sigterm_held() -> Iterator[None]:
    """Hold a SIGTERM that comes while Ray starts, and hand it to the driver's own handler once
    Ray has started (or failed to): stopped half-way, Ray's core aborts the process with a C++
    stack. Ray's own handlers (``sys.exit``, then a stack dump) are replaced by the driver's."""
    on_sigterm = signal.getsignal(signal.SIGTERM)
    held: list[int] = []
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: held.append(signum))
    install = ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda handler: None  # ray.init's: sys.exit(15)
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = install
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)
            if held and callable(on_sigterm):
                stop_ray()  # the caller never learns that Ray started
                on_sigterm(signal.SIGTERM, None)


def stop_ray() -> None:
    """Shut Ray down and undo what ``start_ray`` set: its environment, its private folder."""
    ray.shutdown()
    _set_environ(_session.pop("environ", {}))
    shutil.rmtree(_session.pop("temp_dir", ""), ignore_errors=True)


def _start_local(num_cpus: int) -> None:
    _session["temp_dir"] = private = _private_temp_dir()
    _session["environ"] = _set_environ(  # never ~/.ray/auth_token, which Ray writes 0644
        {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_AUTH_TOKEN_PATH": None,
            **_NO_STACK_DUMPS,
        }
    )
    try:
        with _loopback_node():
            ray.init(
                address="local",  # never RAY_ADDRESS's or ``ray start``'s cluster
                _node_ip_address="127.0.0.1",
                _temp_dir=os.path.join(private, "ray"),  # Ray makes it 0777, not its parent
                num_cpus=num_cpus,
                **_QUIET,
            )
    except BaseException:
        stop_ray()
        raise


def _private_temp_dir() -> str:
    """A folder only this user can enter (Ray makes /tmp/ray and its sessions world-writable),
    short enough for the Unix sockets Ray puts in it."""
    root = tempfile.gettempdir()
    return tempfile.mkdtemp(prefix="tvnray-", dir=root if len(root) <= _MAX_TEMP_ROOT else "/tmp")


def _connect(address: str, source: str) -> None:
    host, port = _bootstrap_address(address, source)
    where = f"{host}:{port}" + (" (found by 'auto')" if address == "auto" else "")
    _probe(host, port, where, source)
    _session["environ"] = _set_environ({**_FAIL_FAST, **_NO_STACK_DUMPS})
    said = io.StringIO()
    try:
        with _loopback_node(), _captured_stderr(said):
            ray.init(address=address, **_QUIET)
    except Exception as exc:
        stop_ray()
        why = _refusal(where, exc, said.getvalue())
        raise InputError(source, [Problem("resources.address", why)]) from None
    sys.stderr.write(said.getvalue())  # joined: what Ray said is no longer noise


def _bootstrap_address(address: str, source: str) -> tuple[str, int]:
    """The host and port ray.init will dial for ``address``. ``auto`` is ``RAY_ADDRESS`` or
    the address ``ray start`` leaves in Ray's temp dir (never, as Ray would fall back to, any
    Ray process found here: another user's or another search's)."""
    text = address
    if address == "auto":
        text = os.environ.get("RAY_ADDRESS") or ray_utils.read_ray_address() or ""
        if not text:
            why = (
                "'auto' finds no Ray cluster: RAY_ADDRESS is unset and no `ray start` left "
                f"{ray_utils.get_ray_address_file(None)}"
            )
            raise InputError(source, [Problem("resources.address", why)])
    host, _, port = text.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        why = f"must be 'auto' or host:port, but got {text!r}"
        raise InputError(source, [Problem("resources.address", why)])
    with _loopback_node():
        return services.resolve_ip_for_localhost(host), int(port)


def _probe(host: str, port: int, where: str, source: str) -> None:
    """Fail in seconds where nothing listens (Ray would retry for minutes)."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        reason = exc.strerror or f"no answer within {CONNECT_SECONDS} s"
        why = f"nothing answers at {where}: {reason.lower()}"
        raise InputError(source, [Problem("resources.address", why)]) from None


def _refusal(where: str, exc: Exception, said: str) -> str:
    """One line for why the Ray cluster at ``where`` could not be joined (``said``: on stderr)."""
    said = f"{exc}\n{exc.__cause__}\n{said}"
    if "InvalidAuthToken" in said or "Unauthenticated" in said:
        return (
            f"the Ray cluster at {where} refuses this machine's token (or its lack of one): set "
            "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
        )
    if isinstance(exc, AuthenticationError):  # token mode asked for, no token to be found
        return "RAY_AUTH_MODE=token, but no token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
    if isinstance(exc, ConnectionError):  # ray.init's own message says no more than this
        return f"nothing at {where} answers as a Ray cluster (is it a Ray head's address?)"
    return f"cannot join the Ray cluster at {where}: {describe_error(exc)}"


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Let 127.0.0.1 mean 127.0.0.1 within: Ray 2.60 turns a loopback node or cluster address
    into the machine's address (and then listens on every interface), except where it takes
    clusters for unsupported (macOS, Windows): this is that switch, for this call only."""
    previous = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


def _set_environ(changes: dict[str, str | None]) -> dict[str, str | None]:
    """Set (None: remove) environment variables, reload what Ray read of them; the previous
    values. Ray's own processes inherit them; Ray reads its settings and token once, hence the
    reload (as its authentication tests do)."""
    previous = {key: os.environ.get(key) for key in changes}
    if not changes:
        return previous
    for key, value in changes.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    return previous


@contextlib.contextmanager
def _captured_stderr(said: io.StringIO) -> Iterator[None]:
    """Write to ``said`` what is written to file descriptor 2 within (Ray's C++ core writes
    there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+", errors="replace") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            said.write(capture.read())
