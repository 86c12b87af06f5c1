"""The lineage of a run: one row per candidate told, as Parquet part files under ``lineage/``.

Only the driver writes it, through one ``LineageWriter``. Rows are buffered and written as a
whole part file (``part-000001.parquet``, ...) every ``flush_rows`` rows or ``flush_seconds``, so a
long search leaves few files. A part is written to a hidden temp file in the same folder, then
renamed over its final name: a half-written part cannot exist, and pandas and pyarrow skip
hidden files, so ``pd.read_parquet(run_dir / "lineage")`` reads the folder directly.

A crash loses at most the rows still buffered. Rows are written in the order told, so what is
left is always a prefix of the search: a lost parent is never survived by its child, and on resume
the lost candidates are simply asked and run again (see ``tvnsearch.search.strategies``).
"""

from __future__ import annotations

import dataclasses
import re
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tvnsearch.errors import InputError
from tvnsearch.files import atomic_writer, remove_leftovers
from tvnsearch.search.strategies import Candidate, Result
from tvnsearch.status import FINAL

# Nullable pandas dtypes: an integer column with a missing value stays an integer column.
_PANDAS_TYPES = {
    pa.int64(): pd.Int64Dtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.string(): pd.StringDtype(),
}
_PART = re.compile(r"part-(\d{6,})\.parquet")


@dataclass(frozen=True)
class LineageRecord:
    """One candidate told, as one row of ``SCHEMA`` (same names, same order)."""

    run_id: str
    candidate_id: int
    genome_id: str
    parent_id: int | None
    mutation: str
    strategy: str
    genome_json: str  # canonical JSON (``Genome.canonical_json``)
    status: str  # a ``tvnsearch.search.strategies.Status`` value
    seed: int  # the run's seed
    num_asked_at_tell: int  # ``strategy.num_asked`` when told: what replay needs to resume
    asked_at: datetime  # timezone-aware
    finished_at: datetime
    reason: str | None = None  # why rejected or failed
    fitness: float | None = None
    # fitness's standard error over the validation videos (a training seed's noise is not in it)
    fitness_noise: float | None = None
    top1: float | None = None
    top5: float | None = None
    mean_ap: float | None = None
    cpu_ms: float | None = None
    gpu_ms: float | None = None
    cpu_device: str | None = None  # the device signature each runtime was measured on
    gpu_device: str | None = None
    cpu_noise_ms: float | None = None  # each runtime's uncertainty (``Profile.noise_ms``)
    gpu_noise_ms: float | None = None
    params: int | None = None
    flops: int | None = None
    memory_mb: float | None = None
    profile_seconds: float | None = None
    train_seconds: float | None = None
    # Iterations trained: the recipe's, or the rung where multi-fidelity training stopped it;
    # and the fitness at each rung scored, JSON [[iterations, fitness], ...]
    # (``tvnsearch.train.fidelity``).
    iterations: int | None = None
    rungs: str | None = None
    # With ``search.inherit_weights``: the share of parameters that started from the parent's.
    inherited: float | None = None
    worker_node: str | None = None
    # A live stream, on the first profiled device: milliseconds per new frame at steady state
    # (a clip network, pipeline_depth 0, reruns its clip per frame), and how many frames behind
    # the input the output is (the pipeline's delays).
    frame_ms: float | None = None
    frames_per_second: float | None = None
    latency_frames: int | None = None
    # The candidate's whole story where one was told (a traceback, what its worker printed), as a
    # path relative to the run folder; ``reason`` keeps its first line.
    log: str | None = None

    def __post_init__(self) -> None:
        if self.status not in FINAL:
            raise ValueError(
                f"status must be one of {[str(s) for s in FINAL]}, but got status={self.status!r}"
            )
        for name in ("asked_at", "finished_at"):
            if getattr(self, name).utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware, but got {getattr(self, name)}")

    @classmethod
    def told(
        cls,
        candidate: Candidate,
        result: Result,
        *,
        run_id: str,
        seed: int,
        num_asked_at_tell: int,
        asked_at: datetime,
        finished_at: datetime,
        **measurements: Any,
    ) -> LineageRecord:
        """The row of ``candidate`` told ``result``; ``measurements`` fill the other columns."""
        return cls(
            run_id=run_id,
            candidate_id=candidate.candidate_id,
            genome_id=candidate.genome.id,
            parent_id=candidate.parent_id,
            mutation=candidate.mutation,
            strategy=candidate.strategy,
            genome_json=candidate.genome.canonical_json,
            status=str(result.status),
            seed=seed,
            num_asked_at_tell=num_asked_at_tell,
            asked_at=asked_at,
            finished_at=finished_at,
            fitness=result.fitness,
            **{**dict(result.metrics), **measurements},
        )

    def to_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The one schema: every column list, reader and writer derives from ``LineageRecord``.
_ARROW_TYPES = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    datetime: pa.timestamp("us", tz="UTC"),
}


def _arrow_field(name: str, hint: Any) -> pa.Field:
    types = typing.get_args(hint) or (hint,)
    (base,) = [t for t in types if t is not type(None)]
    return pa.field(name, _ARROW_TYPES[base], nullable=type(None) in types)


SCHEMA = pa.schema(
    [
        _arrow_field(f.name, hint)
        for f, hint in zip(
            dataclasses.fields(LineageRecord),
            typing.get_type_hints(LineageRecord).values(),
            strict=True,
        )
    ]
)
# What a candidate's evaluation measured (every optional column but ``fitness``, which is the
# strategy's): the gate's counts and runtimes, the scores, times, where it ran, why it failed.
# A duplicate copies these from the first evaluation of its genome.
MEASUREMENTS = tuple(
    f.name for f in dataclasses.fields(LineageRecord) if f.default is None and f.name != "fitness"
)


class LineageWriter:
    """Appends records to ``run_dir/lineage``, after the part files already there.

    Time is only looked at on ``append``: call ``flush`` from the driver's loop to bound what a
    crash can lose when candidates arrive slowly. Closing flushes (a ``with`` block, even on
    an exception: the rows buffered were told and are valid).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        flush_rows: int = 1000,
        flush_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = Path(run_dir) / "lineage"
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.folder)  # a crash while writing a part
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._clock = clock
        self._rows: list[dict[str, Any]] = []
        self._next_part = max((n for n, _ in _parts(self.folder)), default=0) + 1
        self._flushed_at = clock()

    def append(self, record: LineageRecord) -> None:
        self._rows.append(record.to_row())
        due = self._clock() - self._flushed_at >= self.flush_seconds
        if len(self._rows) >= self.flush_rows or due:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one new part file (nothing when none is buffered)."""
        self._flushed_at = self._clock()
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=SCHEMA)
        path = self.folder / f"part-{self._next_part:06d}.parquet"
        with atomic_writer(path, durable=True) as f:
            pq.write_table(table, f)
        self._rows.clear()
        self._next_part += 1

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> LineageWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def read_lineage(run_dir: str | Path) -> pd.DataFrame:
    """Every row of a run, in the order told, with nullable dtypes (``Int64``, ``Float64``,
    ``string``, UTC timestamps); empty with the same columns when nothing was written."""
    if not Path(run_dir).is_dir():
        raise InputError(str(run_dir), "not a run folder: no such directory")
    parts = [path for _, path in sorted(_parts(Path(run_dir) / "lineage"))]
    tables = [pq.read_table(path, schema=SCHEMA) for path in parts]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    return table.to_pandas(types_mapper=_PANDAS_TYPES.get)


def records_from_frame(frame: pd.DataFrame) -> list[LineageRecord]:
    """The records of a lineage frame, in its row order (the order told, for ``replay``)."""
    table = pa.Table.from_pandas(frame[SCHEMA.names], schema=SCHEMA, preserve_index=False)
    return [LineageRecord(**row) for row in table.to_pylist()]


def ancestors(frame: pd.DataFrame, candidate_id: int) -> pd.DataFrame:
    """The rows of ``candidate_id``, its parent, and so on back to a sampled genome."""
    by_id = frame.set_index("candidate_id", drop=False)
    chain = [candidate_id]
    while True:
        if chain[-1] not in by_id.index:
            raise KeyError(f"candidate {chain[-1]} is not in the lineage")
        parent = by_id.at[chain[-1], "parent_id"]
        if pd.isna(parent):
            return by_id.loc[chain].reset_index(drop=True)
        assert parent < chain[-1], (parent, chain)  # told before its child was asked
        chain.append(int(parent))


def best(frame: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The ``n`` fittest genomes, each once (its first evaluation), fittest first; with
    multi-fidelity training, those trained longest first (``tvnsearch.train.fidelity.rank_key``)."""
    scored = frame[frame["fitness"].notna()]
    ranked = scored.sort_values(
        ["iterations", "fitness", "candidate_id"],
        ascending=[False, False, True],
        na_position="last",
    )
    return ranked.drop_duplicates("genome_id").head(n).reset_index(drop=True)


def _parts(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    return [
        (int(m.group(1)), path)
        for path in folder.iterdir()
        if (m := _PART.fullmatch(path.name)) is not None
    ]
