"""Ray on loopback: an embedded Ray is this process's own and listens on 127.0.0.1 only; an
address that cannot be joined fails within seconds with one line naming ``resources.address``.

Real Ray throughout. The user's cluster is a ``ray start --head`` on loopback that requires a
token, in a private temp dir; only its own processes are killed at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import ray
from conftest import free_port, kill_processes_of, small_search

from tvnsearch.errors import InputError
from tvnsearch.search.ray_session import start_ray, stop_ray

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
RAY_CLI = Path(sys.executable).parent / "ray"
AUTH_ENV = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@dataclass(frozen=True)
class Cluster:
    address: str
    token: str


@pytest.fixture(autouse=True)
def no_ray_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A driver with no Ray address nor token of its own (each test adds what it needs)."""
    for name in AUTH_ENV:
        monkeypatch.delenv(name, raising=False)
    yield
    stop_ray()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    temp_dir = tempfile.mkdtemp(prefix="tvnc-", dir="/tmp")  # short: Ray's sockets live there
    port, token = free_port(), secrets.token_hex(32)
    env = os.environ | {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # else Ray takes 127.0.0.1 for the machine's IP
    }
    command = [
        *(str(RAY_CLI), "start", "--head", "--node-ip-address", "127.0.0.1"),
        *("--port", str(port), "--temp-dir", temp_dir, "--num-cpus", "1"),
        *("--include-dashboard", "false", "--disable-usage-stats"),
    ]
    try:
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)
        yield Cluster(f"127.0.0.1:{port}", token)
    finally:
        kill_processes_of(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _listening(processes: list[psutil.Process]) -> list[tuple[str, str, int]]:
    return [
        (p.name(), c.laddr.ip, c.laddr.port)
        for p in processes
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]


@ray.remote
def _where() -> str:
    return ray.util.get_node_ip_address()


def test_embedded_ray_listens_on_loopback_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # where Ray would write ~/.ray/auth_token
    assert start_ray(num_cpus=1)
    assert ray.get(_where.remote()) == "127.0.0.1"
    me = psutil.Process()
    ray_processes = me.children(recursive=True)
    sockets = _listening([me, *ray_processes])
    names = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets
    assert [s for s in sockets if s[1] not in LOOPBACK] == []
    raylet = next(p for p in ray_processes if p.name() == "raylet")
    assert raylet.environ()["RAY_AUTH_MODE"] == "token"  # its token: in environments only
    assert len(raylet.environ()["RAY_AUTH_TOKEN"]) == 64 and not (tmp_path / ".ray").exists()
    session = _session_dir(raylet)
    assert any(p.stat().st_mode & 0o077 == 0 for p in session.parents if p != Path("/"))
    stop_ray()
    assert "RAY_AUTH_TOKEN" not in os.environ and not session.exists()


def _session_dir(raylet: psutil.Process) -> Path:
    (socket_arg,) = [a for a in raylet.cmdline() if a.startswith("--raylet_socket_name=")]
    return Path(socket_arg.split("=", 1)[1]).parents[1]


@pytest.mark.parametrize("left_by", ["RAY_ADDRESS", "address file"])
def test_embedded_ray_is_its_own_beside_a_running_cluster(
    left_by: str, cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _point_auto_at(cluster.address, left_by, tmp_path, monkeypatch)
    assert start_ray(num_cpus=1)
    gcs_address = ray.get_runtime_context().gcs_address
    assert gcs_address != cluster.address and gcs_address.startswith("127.0.0.1:")
    assert ray.get(_where.remote()) == "127.0.0.1"
    stop_ray()
    socket.create_connection(("127.0.0.1", int(cluster.address.split(":")[1])), 2).close()


def _point_auto_at(
    address: str, left_by: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a `ray start` leaves for ``auto`` (and for a bare ``ray.init()``) to find."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # Ray's default temp dir: /tmp/ray here
    if left_by == "RAY_ADDRESS":
        monkeypatch.setenv("RAY_ADDRESS", address)
    else:
        (tmp_path / "ray").mkdir()
        (tmp_path / "ray" / "ray_current_cluster").write_text(address)


@pytest.mark.parametrize(
    ("address", "left_by"),
    [("127.0.0.1:1", "RAY_ADDRESS"), ("auto", "RAY_ADDRESS"), ("auto", "address file")],
)
def test_an_address_where_nothing_listens_fails_in_seconds(
    address: str, left_by: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _point_auto_at("127.0.0.1:1", left_by, tmp_path, monkeypatch)  # a stale one
    start = time.monotonic()
    with pytest.raises(InputError, match=r"resources\.address: nothing answers at 127.0.0.1:1"):
        start_ray(address, source="recipe.toml")
    assert time.monotonic() - start < 5 and not ray.is_initialized()


def test_auto_without_a_cluster_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with pytest.raises(InputError, match="'auto' finds no Ray cluster: RAY_ADDRESS is unset"):
        start_ray("auto")


def test_an_address_of_another_service_fails_in_seconds(capfd: pytest.CaptureFixture) -> None:
    with socket.create_server(("127.0.0.1", 0)) as other:  # accepts, never speaks Ray
        start = time.monotonic()
        with pytest.raises(InputError, match=r"resources\.address: nothing at .* answers as a Ray"):
            start_ray(f"127.0.0.1:{other.getsockname()[1]}")
    assert time.monotonic() - start < 20
    assert capfd.readouterr().err == ""  # Ray's retries are not echoed


def test_a_cluster_that_needs_a_token_this_machine_lacks_fails_in_seconds(
    cluster: Cluster, capfd: pytest.CaptureFixture
) -> None:
    start = time.monotonic()
    with pytest.raises(InputError) as raised:
        start_ray(cluster.address, source="recipe.toml")
    (line,) = raised.value.lines()
    assert line.startswith("recipe.toml: resources.address: the Ray cluster at 127.0.0.1:")
    assert "RAY_AUTH_MODE=token" in line
    assert time.monotonic() - start < 10 and capfd.readouterr().err == ""


def test_a_cluster_on_loopback_is_joined_with_its_token(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    assert start_ray(cluster.address)
    assert ray.get_runtime_context().gcs_address == cluster.address  # not the machine's IP
    assert ray.get(_where.remote()) == "127.0.0.1"


def test_search_on_a_closed_address_ends_in_one_line(tmp_path: Path) -> None:
    recipe = small_search(tmp_path, budget=4, iterations=2)
    command = [sys.executable, "-m", "tvnsearch", "search", str(recipe)]
    start = time.monotonic()
    search = subprocess.run(
        [*command, "--address", "127.0.0.1:1", "--results", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    (line,) = search.stderr.splitlines()
    assert search.returncode == 2 and "Traceback" not in search.stderr
    assert line.startswith("tvnsearch search: ") and "resources.address: nothing answers" in line
    assert time.monotonic() - start < 60
    assert not (tmp_path / "r").exists()  # a run that never began leaves no folder
