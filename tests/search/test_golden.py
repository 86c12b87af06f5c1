"""The same seeded search gives the same candidates, genomes, statuses and fitnesses as the golden
lineage in ``golden_lineage.json``, written by the code before its layout changed: evolution with
tournaments on the tiny space, a counted FLOPs budget, real training on the synthetic benchmark,
in this process. Timing columns are left out: they differ from run to run."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import SPACES_DIR

from tvnsearch.data.synth import SynthConfig, write_synth
from tvnsearch.genome.space import load_space
from tvnsearch.measure.constraints import Constraints
from tvnsearch.measure.gate import Gate
from tvnsearch.search.engine import Engine
from tvnsearch.search.evolution import Evolution
from tvnsearch.search.inline import InlineExecutor
from tvnsearch.search.lineage import LineageWriter, read_lineage
from tvnsearch.search.progress import Progress, Tally
from tvnsearch.search.recipe import DataSection
from tvnsearch.search.worker import Task, evaluate
from tvnsearch.train.training import TrainConfig

GOLDEN = Path(__file__).with_name("golden_lineage.json")
COLUMNS = ("candidate_id", "genome_id", "parent_id", "mutation", "status", "reason")
COLUMNS += ("fitness", "params", "flops", "top1", "top5")


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the golden lineage was trained on one thread
    yield
    torch.set_num_threads(threads)


def search(root: Path) -> list[dict]:
    write_synth(root / "synth", SynthConfig(num_videos=18, size=32, num_frames=8))
    strategy = Evolution(
        load_space(SPACES_DIR / "tiny.toml"), seed=5, initial_size=4, tournament_size=2
    )
    train = TrainConfig(iterations=3, batch_size=4)
    # Raw frames: the pixels the cache kept when the golden lineage was written.
    data = DataSection(str(root / "synth"), str(root / "frames"), 32, 0.25, 0, cache_codec="raw")
    task = Task(data, train, keep_weights=False)
    tally = Tally(14)
    with LineageWriter(root / "run", flush_rows=100) as writer:
        Engine(
            strategy,
            Gate(Constraints(max_flops=20_000_000), num_classes=9),
            InlineExecutor(evaluate, task),
            writer,
            run_id="golden",
            tally=tally,
            num_workers=2,
            progress=Progress(tally, stream=io.StringIO()),
        ).run()
    frame = read_lineage(root / "run")[list(COLUMNS)].astype(object)
    return frame.where(frame.notna(), None).to_dict("records")


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, abs_tol=1e-9)
    return a == b


def test_the_seeded_search_repeats_the_golden_lineage(tmp_path, one_thread) -> None:
    rows, golden = search(tmp_path), json.loads(GOLDEN.read_text())
    assert len(rows) == len(golden) == 14
    assert {r["status"] for r in golden} >= {"trained", "rejected"}
    assert any(r["parent_id"] is not None for r in golden)  # tournaments happened
    for row, expected in zip(rows, golden, strict=True):
        assert all(same(row[c], expected[c]) for c in COLUMNS), (row, expected)
