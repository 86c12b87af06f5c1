"""The frame cache built by Ray tasks before a search: every video decoded once per cache, by one
task; an unreadable video reported once; a cache that would pass its budget refused; on a cluster
whose nodes do not share the driver's cache folder, each such node builds its own.

Real Ray throughout: an embedded one, and a two-node cluster on loopback whose second node has a
cache folder of its own (its own ``XDG_CACHE_HOME``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from tvnsearch.data import frame_cache
from tvnsearch.data.datasets import load_dataset
from tvnsearch.data.synth import SynthConfig, write_synth
from tvnsearch.errors import InputError
from tvnsearch.search.executors import cache_videos
from tvnsearch.search.ray_session import start_ray, stop_ray
from tvnsearch.search.recipe import DataSection


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "synth"
    write_synth(root, SynthConfig(num_videos=18, size=32, num_frames=8))
    (root / "train" / "red_up" / "broken.mp4").write_bytes(os.urandom(2000))
    return root


def paths_of(root: Path) -> list[Path]:
    return [v.path for v in load_dataset(root).videos]


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"??/*{frame_cache.SUFFIX}"))


@pytest.fixture
def local_ray() -> Iterator[None]:
    start_ray(num_cpus=2)
    yield
    stop_ray()


def test_every_video_is_cached_once_and_the_unreadable_one_reported(
    synth, tmp_path, local_ray, monkeypatch
) -> None:
    data = DataSection(str(synth), cache_dir=str(tmp_path / "frames"), cache_size=32)
    told: list[tuple[int, int]] = []
    paths = paths_of(synth)
    unreadable = cache_videos(data, paths, source="recipe.toml", on_video=lambda *d: told.append(d))
    broken = synth / "train" / "red_up" / "broken.mp4"
    assert list(unreadable) == [broken] and "cannot decode" in unreadable[broken]
    assert len(entries(tmp_path / "frames")) == len(paths) - 1
    assert told[-1] == (len(paths), len(paths)) and len(told) > 1  # several chunks
    assert not list((tmp_path / "frames").glob(".probe-*"))
    # The build listed what it found: opening the dataset keys, hashes and opens no entry.
    monkeypatch.setattr(frame_cache.FrameCache, "_entry_or_reason", not_again)
    index = data.frame_cache().index(paths, on_skip=lambda _: None)
    assert len(index.entries) == len(paths) - 1 and [s.path for s in index.skipped] == [broken]
    assert data.frame_cache().missing(paths) == []


def not_again(*args, **kwargs):
    raise AssertionError("a video the build listed was keyed, hashed or opened again")


def test_a_cache_that_would_pass_its_budget_is_refused(synth, tmp_path, local_ray) -> None:
    data = DataSection(
        str(synth), cache_dir=str(tmp_path / "frames"), cache_size=32, cache_budget_gb=1e-6
    )
    with pytest.raises(InputError, match=r"recipe.toml: .* above the cache.s budget of 1 kB"):
        cache_videos(data, paths_of(synth), source="recipe.toml")


@pytest.fixture
def two_nodes(tmp_path, monkeypatch) -> Iterator[tuple[str, Path, Path]]:
    """A head node whose cache folder is the driver's, and a second node with one of its own,
    both on loopback: (address, the driver's cache home, the second node's)."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # Else Ray turns 127.0.0.1 into the machine's address (as tvnsearch.search.ray_session does).
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    mine, theirs = tmp_path / "driver-cache", tmp_path / "node-cache"
    node = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
    cluster = Cluster(
        initialize_head=True, head_node_args=node | {"env_vars": {"XDG_CACHE_HOME": str(mine)}}
    )
    try:
        cluster.add_node(**node, env_vars={"XDG_CACHE_HOME": str(theirs)})
        yield cluster.address, mine, theirs
    finally:
        cluster.shutdown()


def test_a_node_without_the_drivers_cache_builds_its_own(synth, two_nodes, monkeypatch) -> None:
    address, mine, theirs = two_nodes
    monkeypatch.setenv("XDG_CACHE_HOME", str(mine))
    data = DataSection(str(synth), cache_size=32)  # the default folder: each node its own
    paths = paths_of(synth)
    told: list[tuple[int, int]] = []
    try:
        assert start_ray(address)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        report = lambda *done: told.append(done)  # noqa: E731
        unreadable = cache_videos(data, paths, source="recipe.toml", on_video=report)
    finally:
        stop_ray()
    assert len(unreadable) == 1
    frames = Path("tvnsearch", "frames")
    mine_entries, their_entries = entries(mine / frames), entries(theirs / frames)
    assert len(mine_entries) == len(their_entries) == len(paths) - 1
    assert [p.name for p in mine_entries] == [p.name for p in their_entries]  # the same keys
    assert told[-1] == (2 * len(paths), 2 * len(paths))  # two builds
