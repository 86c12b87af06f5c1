"""A target device as a Ray node: a recipe places the profiler by a custom resource, and every
measurement carries that node's device signature and the runtime it was measured in.

A real two-node cluster on loopback: the head, and a second node that alone has ``target``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import small_search

from tvnsearch.cli.main import main
from tvnsearch.measure.runtimes import RUNTIMES
from tvnsearch.search.lineage import read_lineage


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, str]]:
    """(address, the node id of the second node: the only one with resource ``target``)."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:
        # Else Ray turns 127.0.0.1 into the machine's address (as ray_session does).
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        node = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
        cluster = Cluster(initialize_head=True, head_node_args=node)
        try:
            target = cluster.add_node(**node, resources={"target": 1})
            yield cluster.address, target.node_id
        finally:
            cluster.shutdown()


def placed_search(folder: Path, address: str, profiler: str) -> list[str]:
    """``tvnsearch search`` arguments for a small search on the cluster at ``address``, timed on
    the CPU, with ``profiler`` as its ``[profiler]`` table."""
    recipe = small_search(folder, budget=3, iterations=2)
    recipe.write_text(
        recipe.read_text().replace("[constraints]\n", "[constraints]\nmax_cpu_ms = 10_000.0\n")
        + f'address = "{address}"\n[profiler]\n{profiler}'
    )
    return ["search", str(recipe), "--results", str(folder / "r")]


def test_the_profiler_runs_on_the_node_with_the_resource_and_signs_with_it(
    cluster, tmp_path, capsys
) -> None:
    address, target = cluster
    argv = placed_search(tmp_path, address, 'runtime = "onnxruntime"\nresources = { target = 1 }\n')
    assert main(argv) == 0, capsys.readouterr()
    (run,) = (tmp_path / "r").iterdir()
    frame = read_lineage(run)
    measured = frame[frame["cpu_ms"].notna()]
    assert len(measured) >= 1
    version = RUNTIMES["onnxruntime"].version()
    for label in measured["cpu_device"]:
        assert f"|onnxruntime={version}|node=" in label
        assert label.endswith(f" node {target[:8]}")  # the second node, not the head
    trained = frame[frame["status"] == "trained"]
    assert not trained.empty and pd.notna(trained["worker_node"]).all()


def test_a_resource_that_no_node_has_is_named_before_anything_runs(
    cluster, tmp_path, capsys
) -> None:
    address, _ = cluster
    assert main(placed_search(tmp_path, address, "resources = { jetson = 1 }\n")) == 2
    err = capsys.readouterr().err
    assert "profiler.resources: no node of the Ray cluster has {'jetson': 1}" in err
    assert "its custom resources: ['target']" in err and "Traceback" not in err
