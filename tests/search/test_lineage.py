from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest
from test_strategies import drive

from tvnsearch.errors import InputError
from tvnsearch.search import lineage
from tvnsearch.search.evolution import Evolution
from tvnsearch.search.lineage import (
    SCHEMA,
    LineageRecord,
    LineageWriter,
    ancestors,
    best,
    read_lineage,
    records_from_frame,
)
from tvnsearch.search.progress import Tally
from tvnsearch.search.strategies import Candidate, Result
from tvnsearch.status import Status

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def record(candidate_id: int, parent_id: int | None = None, **fields) -> LineageRecord:
    base = {
        "run_id": "run-1",
        "candidate_id": candidate_id,
        "genome_id": f"g{candidate_id}",
        "parent_id": parent_id,
        "mutation": "random" if parent_id is None else "resolution: 32 -> 64",
        "strategy": "evolution",
        "genome_json": "{}",
        "status": "trained",
        "seed": 7,
        "num_asked_at_tell": candidate_id + 1,
        "asked_at": T0 + timedelta(seconds=candidate_id),
        "finished_at": T0 + timedelta(seconds=candidate_id, microseconds=250),
        "fitness": float(candidate_id),
    }
    return LineageRecord(**{**base, **fields})


def some_records() -> list[LineageRecord]:
    return [
        record(0),
        record(1, status="rejected", fitness=None, reason="cpu_ms 80.1 > 50", cpu_ms=80.1),
        record(2, 0, top1=0.5, top5=0.8, cpu_ms=12.5, cpu_device="cpu|x|threads=1|torch=2"),
        record(3, 2, status="failed", fitness=None, reason="out of memory", worker_node="n1"),
        record(4, 2, params=123_456, flops=7_890_000, memory_mb=31.5, train_seconds=40.0),
        record(5, 4, status="duplicate", genome_id="g2", fitness=2.0),
        record(6, 4, mean_ap=0.3, gpu_ms=1.25, gpu_device="cuda|H100", profile_seconds=0.4),
    ]


def write(run_dir: Path, records: list[LineageRecord], **options) -> None:
    with LineageWriter(run_dir, **options) as writer:
        for r in records:
            writer.append(r)


def parts(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "lineage").iterdir())


def test_records_round_trip_through_parquet(tmp_path) -> None:
    write(tmp_path, some_records(), flush_rows=3, token="ab12")
    assert parts(tmp_path) == [f"part-00000{i}-ab12.parquet" for i in (1, 2, 3)]
    assert records_from_frame(read_lineage(tmp_path)) == some_records()


def test_pandas_and_pyarrow_read_the_folder_with_the_declared_types(tmp_path) -> None:
    write(tmp_path, some_records(), flush_rows=4)
    frame = pd.read_parquet(tmp_path / "lineage")
    assert records_from_frame(frame) == some_records()
    dataset = ds.dataset(tmp_path / "lineage", format="parquet")
    assert dataset.schema.remove_metadata() == SCHEMA
    assert dataset.to_table().num_rows == 7


def test_read_lineage_keeps_integers_integers_and_times_in_utc(tmp_path) -> None:
    write(tmp_path, some_records())
    frame = read_lineage(tmp_path)
    assert list(frame.columns) == SCHEMA.names
    assert frame["parent_id"].dtype == "Int64"
    assert frame["params"].dtype == "Int64"
    assert frame["fitness"].dtype == "Float64"
    assert frame["status"].dtype == pd.StringDtype()
    assert str(frame["asked_at"].dtype) == "datetime64[us, UTC]"
    assert frame["parent_id"].isna().tolist() == [True, True] + [False] * 5


def test_an_empty_lineage_reads_as_an_empty_frame_with_every_column(tmp_path) -> None:
    assert list(read_lineage(tmp_path).columns) == SCHEMA.names
    assert read_lineage(tmp_path).empty
    with pytest.raises(InputError, match="no such directory"):
        read_lineage(tmp_path / "typo")


def test_a_reopened_writer_numbers_parts_after_the_last(tmp_path) -> None:
    records = some_records()
    write(tmp_path, records[:4], flush_rows=2)
    write(tmp_path, records[4:], token="cd34")
    assert parts(tmp_path)[-1] == "part-000003-cd34.parquet"
    assert records_from_frame(read_lineage(tmp_path)) == records


def test_a_temp_file_left_by_a_crash_is_ignored_then_cleaned(tmp_path) -> None:
    write(tmp_path, some_records())
    leftover = tmp_path / "lineage" / ".part-000002.parquet.tmp"
    leftover.write_bytes(b"PAR1 half written")
    assert len(pd.read_parquet(tmp_path / "lineage")) == 7
    assert len(read_lineage(tmp_path)) == 7
    LineageWriter(tmp_path).close()
    assert not leftover.exists()


def damaged_run(run_dir: Path) -> list[str]:
    """A lineage of 7 rows in 4 parts, then a torn part, an empty one, a duplicated one, a
    foreign Parquet file and a stray file; the names of the damaged files."""
    write(run_dir, some_records(), flush_rows=2, token="ab12")
    folder = run_dir / "lineage"
    good = sorted(folder.iterdir())
    torn = folder / "part-000005-ef56.parquet"
    torn.write_bytes(good[0].read_bytes()[: good[0].stat().st_size // 2])
    (folder / "part-000006-ef56.parquet").write_bytes(b"")
    (folder / "part-000007-ef56.parquet").write_bytes(good[1].read_bytes())  # ids 2 and 3 again
    pd.DataFrame({"x": [1]}).to_parquet(folder / "part-000008-ef56.parquet")
    (folder / "notes.txt").write_text("mine")
    return ["notes.txt", *(f"part-00000{i}-ef56.parquet" for i in (5, 6, 7, 8))]


def test_damaged_files_are_left_out_and_each_is_named(tmp_path) -> None:
    names = damaged_run(tmp_path)
    with pytest.warns(lineage.LineageDamage) as caught:
        frame = read_lineage(tmp_path)
    assert records_from_frame(frame) == some_records()  # every row once, in the order told
    said = [str(w.message) for w in caught]
    assert [Path(line.split(":")[0]).name for line in said] == names
    torn, empty, duplicated, foreign = said[1:]
    assert "cannot be read as Parquet" in torn and "cannot be read as Parquet" in empty
    assert "every row repeats candidates told in an earlier part (ids 2-3)" in duplicated
    assert "not a lineage part: no column run_id" in foreign
    assert "not a lineage part (part-NNNNNN-TOKEN.parquet)" in said[0]


def test_rows_repeating_earlier_ids_are_left_out_and_counted(tmp_path) -> None:
    records = some_records()
    write(tmp_path, records[:3], token="ab12")
    write(tmp_path, [records[2], *records[3:]], token="cd34")  # id 2 told twice
    frame, damaged = lineage.scan_lineage(tmp_path)
    assert records_from_frame(frame) == records
    (damage,) = damaged
    assert not damage.whole and "1 of 5 rows repeat candidates told" in damage.why


def test_quarantine_moves_what_was_left_out_whole_and_reading_is_then_clean(tmp_path) -> None:
    names = damaged_run(tmp_path)
    _, damaged = lineage.scan_lineage(tmp_path)
    moved = lineage.quarantine(tmp_path, damaged)
    assert sorted(p.name for p in moved) == sorted(names)
    assert all(p.parent == tmp_path / "quarantine" for p in moved)
    frame, damaged = lineage.scan_lineage(tmp_path)
    assert damaged == [] and records_from_frame(frame) == some_records()


def test_a_guard_that_raises_stops_the_write(tmp_path) -> None:
    def taken_over() -> None:
        raise RuntimeError("lease lost")

    writer = LineageWriter(tmp_path, guard=taken_over)
    writer.append(record(0))
    with pytest.raises(RuntimeError, match="lease lost"):
        writer.flush()
    writer.close()  # the rows are dropped, not raised again
    assert parts(tmp_path) == []


def test_a_failed_write_leaves_no_part_and_no_temp_file(tmp_path, monkeypatch) -> None:
    def broken(*args, **kwargs) -> None:
        raise OSError("disk full")

    writer = LineageWriter(tmp_path)
    writer.append(record(0))
    monkeypatch.setattr(lineage.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
    assert parts(tmp_path) == []


def test_many_appends_make_few_files(tmp_path) -> None:
    now = [0.0]
    writer = LineageWriter(tmp_path, flush_rows=500, flush_seconds=60.0, clock=lambda: now[0])
    for i in range(2000):
        writer.append(record(i))
        now[0] += 0.001
    assert len(parts(tmp_path)) == 4
    for i in range(2000, 2010):  # slow arrivals: one part per minute, not per row
        now[0] += 25.0
        writer.append(record(i))
    writer.close()
    assert len(parts(tmp_path)) == 8
    assert len(read_lineage(tmp_path)) == 2010


def test_a_record_refuses_an_unknown_status_and_naive_times() -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        record(0, status="complete")
    with pytest.raises(ValueError, match="timezone-aware"):
        record(0, asked_at=datetime(2025, 1, 1))


def test_record_fields_mirror_the_schema() -> None:
    assert [f.name for f in dataclasses.fields(LineageRecord)] == SCHEMA.names


def test_a_told_candidate_fills_its_row(tiny_space) -> None:
    genome = tiny_space.sample(random.Random(0))
    candidate = Candidate(3, genome, 1, "add block at 0", "evolution")
    row = LineageRecord.told(
        candidate,
        Result(Status.TRAINED, 1.25, {"cpu_ms": 9.5}),
        run_id="r",
        seed=1,
        num_asked_at_tell=5,
        asked_at=T0,
        finished_at=T0,
        top1=0.5,
    )
    assert (row.genome_id, row.genome_json) == (genome.id, genome.canonical_json)
    assert (row.status, row.fitness, row.cpu_ms, row.top1) == ("trained", 1.25, 9.5, 0.5)


def test_ancestors_lead_back_to_a_sampled_genome() -> None:
    frame = pd.DataFrame([r.to_row() for r in some_records()])
    assert ancestors(frame, 6)["candidate_id"].tolist() == [6, 4, 2, 0]
    assert ancestors(frame, 1)["candidate_id"].tolist() == [1]
    with pytest.raises(KeyError, match="candidate 9"):
        ancestors(frame, 9)


def test_best_ranks_each_genome_once(tmp_path) -> None:
    write(tmp_path, some_records())
    top = best(read_lineage(tmp_path), 3)
    assert top["candidate_id"].tolist() == [6, 4, 2]  # candidate 5 repeats genome g2


def test_the_best_of_a_multi_fidelity_run_is_of_those_trained_longest(tmp_path) -> None:
    rows = [
        record(0, fitness=0.9, iterations=300),
        record(1, fitness=1.4, iterations=33),  # stopped at the first rung: not comparable
        record(2, fitness=1.1, iterations=300),
    ]
    write(tmp_path, rows)
    assert best(read_lineage(tmp_path), 3)["candidate_id"].tolist() == [2, 0, 1]
    tally = Tally(3)
    for r in rows:
        tally.add(r.candidate_id, Status(r.status), r.fitness, r.iterations)
    assert (tally.best_id, tally.best_fitness, tally.best_iterations) == (2, 1.1, 300)


def test_a_search_resumes_from_the_parquet_folder_alone(tmp_path, tiny_space) -> None:
    def fresh() -> Evolution:
        return Evolution(tiny_space, seed=2, initial_size=5, tournament_size=3)

    whole = drive(fresh(), [], budget=30)
    write(tmp_path, drive(fresh(), [], budget=30, crash_after=17), flush_rows=5)
    resumed = fresh()
    told = records_from_frame(read_lineage(tmp_path))
    resumed.replay(told)
    assert drive(resumed, told, budget=30) == whole
