"""The lineage of a run: one row per candidate told, as Parquet part files under ``lineage/``.

Only the driver that holds the run's lease writes it (``tvnsearch.search.lease``), through one
``LineageWriter``. Rows are buffered and written as a whole part file every ``flush_rows`` rows or
``flush_seconds``, so a long search leaves few files. A part is named by its number and its
writer's token (``part-000001-3fa2b1c0.parquet``): two writers could never replace each other's
files. It is written to a hidden temp file in the same folder, then renamed over its final name:
a half-written part cannot exist.

A crash loses at most the rows still buffered. Rows are written in the order told, so what is
left is always a prefix of the search: a lost parent is never survived by its child, and on resume
the lost candidates are simply asked and run again (see ``tvnsearch.search.strategies``).

Reading survives damage the writer cannot cause (a copy cut short, a disk that filled, a file
copied in by hand): ``scan_lineage`` leaves out every file of ``lineage/`` that is no readable
part, and every row whose candidate id was told before, and says which and why;
``read_lineage`` reports the same as ``LineageDamage`` warnings; ``quarantine`` moves the files
left out whole into ``quarantine/`` (``resume`` does, before it writes).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import shutil
import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tvnsearch.errors import InputError, Notice
from tvnsearch.files import atomic_writer, remove_leftovers
from tvnsearch.search.strategies import Candidate, Result
from tvnsearch.status import FINAL

# Nullable pandas dtypes: an integer column with a missing value stays an integer column.
_PANDAS_TYPES = {
    pa.int64(): pd.Int64Dtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.string(): pd.StringDtype(),
}
# A part's number, then its writer's token (absent in runs made before tokens were added).
_PART = re.compile(r"part-(\d{6,})(?:-([0-9a-f]{1,32}))?\.parquet")
QUARANTINE_DIR = "quarantine"


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
    an exception: the rows buffered were told and are valid). ``token`` names this writer's
    parts (default: a random one); ``guard`` is called before each part is written and raises
    to stop the write (``Lease.check``: a driver whose lease was taken over writes nothing).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        token: str | None = None,
        guard: Callable[[], None] | None = None,
        flush_rows: int = 1000,
        flush_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = Path(run_dir) / "lineage"
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.folder)  # a crash while writing a part
        self.token = token or secrets.token_hex(4)
        self.guard = guard
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._clock = clock
        self._rows: list[dict[str, Any]] = []
        self._next_part = max((n for n, _, _ in _parts(self.folder)), default=0) + 1
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
        if self.guard is not None:
            try:
                self.guard()
            except BaseException:
                self._rows.clear()  # not this writer's to write any more
                raise
        table = pa.Table.from_pylist(self._rows, schema=SCHEMA)
        path = self.folder / f"part-{self._next_part:06d}-{self.token}.parquet"
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


class LineageDamage(Notice):
    """A file of ``lineage/`` left out, or rows of it that repeat candidates told before."""


@dataclass(frozen=True)
class Damaged:
    """What reading left out of the lineage, and why."""

    path: Path
    why: str
    whole: bool  # the whole file was left out (``quarantine`` moves it); else some of its rows

    def __str__(self) -> str:
        return f"{self.path}: {self.why}"


def read_lineage(run_dir: str | Path) -> pd.DataFrame:
    """Every row of a run, in the order told, with nullable dtypes (``Int64``, ``Float64``,
    ``string``, UTC timestamps); empty with the same columns when nothing was written. What
    ``scan_lineage`` leaves out is reported, one ``LineageDamage`` warning per file."""
    frame, damaged = scan_lineage(run_dir)
    for damage in damaged:
        warnings.warn(str(damage), LineageDamage, stacklevel=2)
    return frame


def scan_lineage(run_dir: str | Path) -> tuple[pd.DataFrame, list[Damaged]]:
    """The rows ``read_lineage`` gives, and what was left out: every file of ``lineage/`` that is
    not a readable part of this schema (torn, empty, foreign), and every row whose candidate id
    an earlier part told (the first telling is kept)."""
    if not Path(run_dir).is_dir():
        raise InputError(str(run_dir), "not a run folder: no such directory")
    folder = Path(run_dir) / "lineage"
    if folder.exists() and not folder.is_dir():
        raise InputError(str(folder), "is a file, not the run's lineage folder")
    parts = {path for _, _, path in _parts(folder)}
    damaged = [
        Damaged(path, "not a lineage part (part-NNNNNN-TOKEN.parquet); left out", whole=True)
        for path in sorted(folder.iterdir() if folder.is_dir() else [])
        if path not in parts and not path.name.startswith(".")
    ]
    frame, left_out = LineageTail(run_dir).read()
    return frame, damaged + left_out


class LineageTail:
    """A run's lineage read part by part as parts land, each part once, by the rules of
    ``scan_lineage`` (unreadable parts and repeated candidate ids left out): for a reader that
    follows a running search, such as the run's live views (``tvnsearch.inspect.live``)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.folder = Path(run_dir) / "lineage"
        self._read: set[Path] = set()
        self._seen: set[int] = set()  # candidate ids told so far

    def read(self) -> tuple[pd.DataFrame, list[Damaged]]:
        """The rows of the parts that landed since the last call, in the order told (the first
        call: every row), and what was left out of them."""
        tables, damaged = [], []
        for _, _, path in sorted(_parts(self.folder)):
            if path in self._read:
                continue
            self._read.add(path)
            table, why = _read_part(path)
            if table is None:
                damaged.append(Damaged(path, f"{why}; left out", whole=True))
                continue
            table, repeats = self._new_rows(path, table)
            damaged += repeats
            tables.append(table)
        table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
        return table.to_pandas(types_mapper=_PANDAS_TYPES.get), damaged

    def _new_rows(self, path: Path, table: pa.Table) -> tuple[pa.Table, list[Damaged]]:
        ids = table.column("candidate_id").to_pylist()
        keep = [i not in self._seen for i in ids]
        repeated = [i for i, new in zip(ids, keep, strict=True) if not new]
        self._seen.update(ids)
        if not repeated:
            return table, []
        table = table.filter(pa.array(keep))
        whole = len(repeated) == len(ids)
        what = "every row" if whole else f"{len(repeated)} of {len(ids)} rows"
        why = (
            f"{what} repeat{'s' if whole else ''} candidates told in an earlier part "
            f"(ids {_span(repeated)}); left out"
        )
        return table, [Damaged(path, why, whole=whole)]


def _read_part(path: Path) -> tuple[pa.Table | None, str]:
    """A part's rows in ``SCHEMA``, or None and why it cannot be read."""
    try:
        names = set(pq.read_schema(path).names)
        missing = [f.name for f in SCHEMA if not f.nullable and f.name not in names]
        if missing:
            return None, f"not a lineage part: no column {', '.join(missing[:3])}"
        table = pq.read_table(path, schema=SCHEMA)
        for f in SCHEMA:
            if not f.nullable and table.column(f.name).null_count:
                return None, f"not a lineage part: column {f.name} has missing values"
        return table, ""
    except (OSError, pa.ArrowException) as exc:
        text = str(exc).strip() or type(exc).__name__
        return None, f"cannot be read as Parquet ({text.splitlines()[0].split('. ')[0]})"


def _span(ids: list[int]) -> str:
    low, high = min(ids), max(ids)
    return f"{low}" if low == high else f"{low}-{high}"


def quarantine(run_dir: str | Path, damaged: list[Damaged]) -> list[Path]:
    """Move every file left out whole into ``run_dir/quarantine/`` (never deleted: a user may
    want it back); where each went. Rows left out of a part that is kept stay where they are."""
    folder = Path(run_dir) / QUARANTINE_DIR
    moved = []
    for damage in (d for d in damaged if d.whole and d.path.exists()):
        folder.mkdir(exist_ok=True)
        target = folder / damage.path.name
        for n in range(2, 1000):
            if not target.exists():
                break
            target = folder / f"{damage.path.name}.{n}"
        shutil.move(damage.path, target)
        moved.append(target)
    return moved


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


def _parts(folder: Path) -> list[tuple[int, str, Path]]:
    """The part files of ``folder``: (number, writer token, path); order them by number first."""
    if not folder.is_dir():
        return []
    return [
        (int(m.group(1)), m.group(2) or "", path)
        for path in folder.iterdir()
        if (m := _PART.fullmatch(path.name)) is not None and path.is_file()
    ]
