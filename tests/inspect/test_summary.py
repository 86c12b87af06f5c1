from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from tvnsearch.genome.space import load_space
from tvnsearch.inspect.pareto import pareto_front
from tvnsearch.inspect.summary import (
    MAX_WIDTH,
    best_table,
    duration,
    gate_share,
    summarize,
    summary_table,
)
from tvnsearch.measure.constraints import Constraints
from tvnsearch.search.lineage import LineageRecord, LineageWriter, best, read_lineage
from tvnsearch.search.recipe import DataSection, ResourcesSection, RunConfig, SearchSection
from tvnsearch.search.runs import load_run
from tvnsearch.status import FINAL
from tvnsearch.train.config import TrainConfig

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TINY = Path(__file__).resolve().parents[2] / "search_spaces" / "tiny.toml"


def record(candidate_id: int, parent_id: int | None = None, **fields) -> LineageRecord:
    """A trained candidate with a real genome of the tiny space (hover texts read it), told one
    second after the one before; ``fields`` override any column."""
    genome = load_space(TINY).sample(random.Random(candidate_id))
    base = {
        "run_id": "run-1",
        "candidate_id": candidate_id,
        "genome_id": genome.id,
        "parent_id": parent_id,
        "mutation": "random" if parent_id is None else f"resolution: {candidate_id}",
        "strategy": "evolution",
        "genome_json": genome.canonical_json,
        "status": "trained",
        "seed": 0,
        "num_asked_at_tell": candidate_id + 1,
        "asked_at": T0 + timedelta(seconds=candidate_id),
        "finished_at": T0 + timedelta(seconds=candidate_id + 1),
        "fitness": 0.5 + candidate_id / 100,
        "top1": 0.25,
        "top5": 0.75,
        "params": 10_000 + candidate_id,
        "flops": 2_000_000,
        "profile_seconds": 0.5,
        "train_seconds": 10.0,
    }
    unscored = fields.get("status", "trained") not in ("trained", "duplicate")
    if unscored:
        base |= {"fitness": None, "top1": None, "top5": None, "train_seconds": None}
    return LineageRecord(**{**base, **fields})


def lineage(folder: Path, records: Sequence[LineageRecord]) -> pd.DataFrame:
    """The frame ``read_lineage`` gives for ``records``: written, then read back."""
    with LineageWriter(folder) as writer:
        for r in records:
            writer.append(r)
    return read_lineage(folder)


def config(
    budget: int = 100,
    *,
    strategy: str = "evolution",
    num_trained: int | None = None,
    constraints: Constraints | None = None,
) -> RunConfig:
    search = SearchSection(str(TINY), budget, num_trained=num_trained, strategy=strategy)
    data = DataSection(path="videos")
    return RunConfig(search, data, TrainConfig(), constraints or Constraints(), ResourcesSection())


def test_the_searched_run(searched_run: Path) -> None:
    frame = read_lineage(searched_run)
    summary = summarize(frame, load_run(searched_run), top=3)
    assert summary.run == searched_run.name and summary.strategy == "evolution"
    assert (summary.budget, summary.num_trained) == (20, 8)
    assert summary.counts == {str(s): int((frame["status"] == s).sum()) for s in FINAL}
    assert summary.told == len(frame) and summary.complete  # 8 trained: all it wanted
    assert summary.best["candidate_id"].tolist() == best(frame, 3)["candidate_id"].tolist()
    # Its CPU runtime is constrained and measured: the front is over it.
    assert summary.objectives == ("fitness", "cpu_ms") and summary.runtime == "cpu_ms"
    assert summary.front_size == len(pareto_front(frame, ("fitness", "cpu_ms")))
    copies = frame["status"] == "duplicate"
    assert summary.measure_seconds == pytest.approx(frame["profile_seconds"][~copies].sum())
    assert summary.train_seconds == pytest.approx(frame["train_seconds"][~copies].sum())
    wall = (frame["finished_at"].max() - frame["asked_at"].min()).total_seconds()
    assert summary.wall_seconds == pytest.approx(wall)
    assert summary.per_hour == pytest.approx(3600 * len(frame) / wall)


def test_duplicates_cost_nothing_again(tmp_path) -> None:
    frame = lineage(
        tmp_path,
        [
            record(0, profile_seconds=2.0, train_seconds=30.0),
            record(1, status="rejected", profile_seconds=4.0, reason="max_params: 1 > limit 0"),
            record(2, 0, status="failed", profile_seconds=1.0, train_seconds=5.0),
            record(3, 0, status="duplicate", profile_seconds=2.0, train_seconds=30.0),
        ],
    )
    summary = summarize(frame, config())
    assert summary.measure_seconds == pytest.approx(2.0 + 4.0 + 1.0)
    assert summary.train_seconds == pytest.approx(30.0 + 5.0)
    assert summary.counts == {"trained": 1, "rejected": 1, "failed": 1, "duplicate": 1}
    assert "measuring 7.0s vs training 35.0s (17 % measuring)" in summary_table(summary)


def test_candidates_per_hour_over_the_first_ask_to_the_last_tell(tmp_path) -> None:
    minutes = [T0 + timedelta(minutes=6 * i) for i in range(11)]
    spread = [record(i, asked_at=minutes[i], finished_at=minutes[i + 1]) for i in range(10)]
    summary = summarize(lineage(tmp_path / "hour", spread), config())
    assert summary.wall_seconds == pytest.approx(3600)
    assert summary.per_hour == pytest.approx(10)
    # A few seconds say nothing of a pace: the first rejections come in milliseconds.
    quick = summarize(lineage(tmp_path / "quick", [record(0), record(1)]), config())
    assert quick.wall_seconds == pytest.approx(2) and quick.per_hour is None


def test_an_empty_lineage(tmp_path) -> None:
    summary = summarize(read_lineage(tmp_path), config(budget=50, num_trained=10))
    assert summary.told == 0 and summary.counts == dict.fromkeys(map(str, FINAL), 0)
    assert summary.best.empty and summary.front_size == 0
    assert (summary.wall_seconds, summary.per_hour) == (0.0, None)
    assert summary.run == "search" and not summary.complete  # named by its recipe
    text = summary_table(summary)
    assert (
        text.splitlines()[0]
        == "search: evolution, 0 of 50 candidates told (0 of 10 trained wanted)"
    )
    assert "trained 0, rejected 0, failed 0, duplicate 0" in text
    assert "best   - (nothing trained yet)" in text
    assert "id  fitness" not in text  # no table of nothing


def test_without_a_runtime_the_front_is_over_params(tmp_path) -> None:
    records = [record(0, params=500, fitness=0.9), record(1, params=100, fitness=0.5)]
    records += [record(2, params=900, fitness=0.7)]  # dominated by candidate 0
    summary = summarize(lineage(tmp_path, records), config())
    assert summary.objectives == ("fitness", "params") and summary.runtime is None
    assert summary.front_size == 2
    assert "front  2 non-dominated over fitness x params" in summary_table(summary)
    assert "cpu_ms" not in best_table(summary).columns


def test_a_runtime_constrained_but_not_yet_measured_is_the_front_objective(tmp_path) -> None:
    summary = summarize(
        lineage(tmp_path, [record(0)]), config(constraints=Constraints(max_cpu_ms=5))
    )
    assert summary.objectives == ("fitness", "cpu_ms") and summary.front_size == 0


def test_the_table_of_the_best(tmp_path) -> None:
    records = [
        record(0, cpu_ms=12.345, cpu_device="cpu|x|threads=1|torch=2", flops=7_890_000),
        record(1, status="rejected", reason="max_cpu_ms: 80 (measured) > limit 50", cpu_ms=80.0),
        record(2, 0, fitness=1.5, top1=0.625, top5=0.875, cpu_ms=3.5, params=123_456),
        record(3, 2, fitness=1.2, cpu_ms=None, top5=None, mutation="x" * 200),
    ]
    summary = summarize(lineage(tmp_path, records), config(budget=10), top=5)
    table = best_table(summary)
    assert table["id"].tolist() == ["2", "3", "0"]  # fittest first; the rejected is no best
    heads = ["id", "fitness", "top-1", "top-5", "cpu_ms", "params", "FLOPs", "parent"]
    assert list(table.columns) == [*heads, "mutation"]
    figures = ["2", "1.5000", "0.6250", "0.8750", "3.50", "123,456", "2.0M", "#0"]
    assert table.iloc[0].tolist()[:8] == figures
    assert table.iloc[1][["cpu_ms", "top-5"]].tolist() == ["-", "-"]
    assert table.iloc[2][["FLOPs", "parent", "mutation"]].tolist() == ["7.9M", "-", "random"]
    text = summary_table(summary)
    lines = text.splitlines()
    assert lines[0] == "run-1: evolution, 4 of 10 candidates told"
    assert lines[1] == "  told   trained 3, rejected 1, failed 0, duplicate 0"
    assert all(len(line) <= MAX_WIDTH for line in lines)
    assert any(line.endswith("…") and "xxxx" in line for line in lines)  # cut to fit
    row = next(line for line in lines if line.split()[:1] == ["2"])
    assert row.split()[:8] == figures
    assert "best   1.5000: candidate 2 (genome " in text
    assert "front  1 non-dominated over fitness x cpu_ms" in text  # 2 beats 0; 3 is unmeasured


def test_iterations_are_shown_where_training_lengths_differ(tmp_path) -> None:
    records = [record(0, iterations=100), record(1, iterations=50, fitness=2.0)]
    summary = summarize(lineage(tmp_path, records), config())
    table = best_table(summary)
    assert table["id"].tolist() == ["0", "1"]  # trained longest first
    assert table["iterations"].tolist() == ["100", "50"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0s"), (12.34, "12.3s"), (245, "4m 05s"), (3599.4, "59m 59s"), (7620, "2h 07m")],
)
def test_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_gate_share() -> None:
    assert gate_share(0.0, 0.0) == "measuring 0.0s vs training 0.0s (- measuring)"
    assert gate_share(3.0, 597.0).endswith("(0.5 % measuring)")
    assert gate_share(90.0, 30.0) == "measuring 1m 30s vs training 30.0s (75 % measuring)"
