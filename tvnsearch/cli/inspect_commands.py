"""The ``pareto`` and ``lineage`` commands: what a run found, read from its folder alone."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvnsearch.errors import InputError, Problem
from tvnsearch.files import check_writable
from tvnsearch.genome.genes import Genome, genome_from_dict

if TYPE_CHECKING:
    import pandas as pd

# How each objective is printed; integers get thousands separators.
_FORMATS = {"fitness": ".4f", "fitness_noise": ".4f", "top1": ".4f", "top5": ".4f"}
_FORMATS |= {"mean_ap": ".4f", "memory_mb": ".2f"}
_FORMATS |= {"cpu_ms": ".3f", "gpu_ms": ".3f", "frame_ms": ".3f", "frames_per_second": ".1f"}
_FORMATS |= {"params": ",", "flops": ","}
_STEP_COLUMNS = ("candidate_id", "genome_id", "parent_id", "mutation", "status", "reason")
_STEP_COLUMNS += ("fitness", "cpu_ms", "params")
_MEASURED = (("fitness", 8), ("cpu_ms", 8), ("params", 10))  # lineage columns and widths


def add_inspect_parsers(sub: argparse._SubParsersAction) -> None:
    pareto = sub.add_parser("pareto", help="a run's non-dominated candidates; Pareto plots")
    pareto.add_argument("run", help="a run folder, results/<name>-<timestamp>")
    columns = "a lineage column: fitness, top1, top5, cpu_ms, params, flops, memory_mb, ..."
    pareto.add_argument("--x", default="cpu_ms", metavar="OBJ", help=f"(cpu_ms) {columns}")
    pareto.add_argument("--y", default="fitness", metavar="OBJ", help="(fitness)")
    pareto.add_argument("--z", metavar="OBJ", help="a third objective, shown as colour")
    pareto.add_argument("--json", action="store_true", help="machine-readable output")
    pareto.add_argument(
        "--plot",
        nargs="+",
        metavar="PATH",
        help="write the Pareto plot to each PATH (.png or .html); by default RUN/plots/ gets "
        "the Pareto and progress plots in both formats",
    )
    pareto.set_defaults(handler=cmd_pareto)
    lineage = sub.add_parser("lineage", help="a candidate's ancestry, mutation by mutation")
    lineage.add_argument("run", help="a run folder, results/<name>-<timestamp>")
    lineage.add_argument(
        "--id", type=int, required=True, dest="candidate_id", metavar="ID", help="candidate id"
    )
    lineage.add_argument("--json", action="store_true", help="machine-readable output")
    lineage.set_defaults(handler=cmd_lineage)


def cmd_pareto(args: argparse.Namespace) -> int:
    # pandas, pyarrow and the plotting libraries load here, not for every command.
    from tvnsearch.inspect.pareto import check_objectives, pareto_front
    from tvnsearch.inspect.plots import SUFFIXES

    chosen = [(f, n) for f, n in (("--x", args.x), ("--y", args.y), ("--z", args.z)) if n]
    fields, objectives = [f for f, _ in chosen], tuple(n for _, n in chosen)
    check_objectives(objectives, fields, source="command line")
    bad = [p for p in args.plot or [] if Path(p).suffix.lower() not in SUFFIXES]
    if bad:
        raise InputError("command line", [Problem("--plot", f"must end in .png or .html: {bad}")])
    frame = read_run(args.run)
    trained = frame[frame["status"] == "trained"]
    absent = [
        Problem(f, f"{n!r} was not measured in this run")
        for f, n in chosen
        if n not in frame.columns or (len(trained) and trained[n].isna().all())
    ]
    if absent:
        raise InputError(f"{args.run}/lineage", absent)
    front = pareto_front(frame, objectives)
    if front.empty:
        why = f"no trained candidate with {' and '.join(objectives)} measured: no front"
        raise InputError(f"{args.run}/lineage", why)
    plots = write_plots(frame, objectives, Path(args.run), args.plot)
    if args.json:
        print(json.dumps(_front_dict(frame, front, objectives, args.run, plots), indent=2))
    else:
        print(_front_text(frame, front, objectives, args.run))
        print("\n".join(f"plot: {path}" for path in plots))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from tvnsearch.search.lineage import ancestors

    frame = read_run(args.run)
    known = frame["candidate_id"]
    if not known.eq(args.candidate_id).any():
        why = f"no candidate {args.candidate_id} in {args.run} (ids {known.min()} to {known.max()})"
        raise InputError("command line", [Problem("--id", why)])
    try:
        chain = ancestors(frame, args.candidate_id).iloc[::-1].reset_index(drop=True)
    except KeyError as exc:  # a parent lost from a damaged lineage
        raise InputError(f"{args.run}/lineage", exc.args[0]) from None
    steps = [{c: _plain(row[c]) for c in _STEP_COLUMNS} for _, row in chain.iterrows()]
    story = _log(Path(args.run), chain.iloc[-1])
    if args.json:
        summary = {"run": str(args.run), "candidate_id": args.candidate_id, "ancestry": steps}
        print(
            json.dumps({**summary, "reason": _plain(chain.iloc[-1]["reason"]), **story}, indent=2)
        )
    else:
        print(_lineage_text(steps, _genome(chain.iloc[-1])))
        if story:
            print(f"\nreason: {chain.iloc[-1]['reason']}\nlog: {story['log']}\n{story['story']}")
    return 0


def _log(run: Path, row: pd.Series) -> dict[str, str]:
    """The candidate's log (``log``: its path, ``story``: its text), or nothing if it has none."""
    if not isinstance(row["log"], str):  # pd.NA: no log
        return {}
    path = run / row["log"]
    try:
        story = path.read_text(errors="replace")
    except OSError as exc:
        story = f"(cannot read it: {exc.strerror})"
    return {"log": str(path), "story": story.rstrip("\n")}


def read_run(run: str | Path) -> pd.DataFrame:
    """The lineage of a run folder, naming the folder or file when there is none to read."""
    import pyarrow as pa

    from tvnsearch.search.lineage import read_lineage

    run = Path(run)
    if not run.is_dir():
        raise InputError(str(run), "not a run folder: no such directory")
    if not (run / "lineage").is_dir():
        raise InputError(str(run / "lineage"), "no such folder: not a run, or nothing told yet")
    try:
        frame = read_lineage(run)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(str(run / "lineage"), f"cannot read: {exc}") from None
    if frame.empty:
        raise InputError(str(run / "lineage"), "holds no candidate yet")
    return frame


def write_plots(
    frame: pd.DataFrame, objectives: Sequence[str], run: Path, paths: Sequence[str] | None
) -> list[Path]:
    """The Pareto plot to ``paths``; without paths, Pareto and progress plots into ``run/plots``."""
    from tvnsearch.inspect.hypervolume import run_reference
    from tvnsearch.inspect.plots import SUFFIXES, write_pareto_plot, write_progress_plot

    if paths:
        jobs = [(Path(p), True) for p in paths]
    else:
        stem = run / "plots" / f"pareto-{'-'.join(objectives)}"
        jobs = [(stem.with_suffix(s), True) for s in SUFFIXES]
        jobs += [((run / "plots" / "progress").with_suffix(s), False) for s in SUFFIXES]
    for path, _ in jobs:  # every plot can be written, or none is
        check_writable(path)
    for path, is_pareto in jobs:
        try:
            if is_pareto:
                write_pareto_plot(frame, objectives, path)
            else:
                write_progress_plot(frame, path, run_reference(run, frame))
        except OSError as exc:
            raise InputError(str(path), f"cannot write: {exc.strerror or exc}") from None
    return [path for path, _ in jobs]


def _front_text(
    frame: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[str], run: str
) -> str:
    from tvnsearch.inspect.pareto import OBJECTIVES, candidates

    directions = ", ".join(f"{n} ({OBJECTIVES[n]}d)" for n in objectives)
    num_trained = len(candidates(frame, objectives))
    widths = {n: max(len(n), 10) for n in objectives}
    lines = [
        f"{run}: {len(front)} of {num_trained} trained candidates non-dominated over {directions}",
        f"{'id':>6}  {'genome':<16}  "
        + "  ".join(f"{n:>{widths[n]}}" for n in objectives)
        + "  network",
    ]
    for _, row in front.iterrows():
        values = "  ".join(f"{_formatted(n, _plain(row[n])):>{widths[n]}}" for n in objectives)
        summary = genome_summary(_genome(row))
        lines.append(f"{row['candidate_id']:>6}  {row['genome_id']:<16}  {values}  {summary}")
    return "\n".join(lines)


def _front_dict(
    frame: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[str], run: str, plots: list[Path]
) -> dict[str, Any]:
    from tvnsearch.inspect.pareto import OBJECTIVES, candidates

    rows = [
        {
            "candidate_id": int(row["candidate_id"]),
            "genome_id": str(row["genome_id"]),
            **{n: _plain(row[n]) for n in objectives},
            "genome": genome_summary(_genome(row)),
        }
        for _, row in front.iterrows()
    ]
    return {
        "run": str(run),
        "objectives": {n: OBJECTIVES[n] for n in objectives},
        "num_trained": len(candidates(frame, objectives)),
        "front": rows,
        "plots": [str(p) for p in plots],
    }


def _lineage_text(steps: list[dict[str, Any]], genome: Genome) -> str:
    last, first = steps[-1], steps[0]
    mutations = len(steps) - 1
    width = max(len("mutation"), *(len(s["mutation"]) for s in steps))
    origin = f"{first['mutation']} genome, no parent"
    if mutations:
        root = f"{first['mutation']} candidate {first['candidate_id']}"
        origin = f"{_count(mutations, 'mutation')} from {root}"
    lines = [
        f"candidate {last['candidate_id']} (genome {last['genome_id']}): {genome_summary(genome)}",
        origin,
        f"{'id':>6}  {'mutation':<{width}}  {'status':<9} {'fitness':>8} {'cpu_ms':>8} "
        f"{'params':>10}",
    ]
    for s in steps:
        measured = " ".join(f"{_formatted(n, s[n]):>{w}}" for n, w in _MEASURED)
        reason = f"  ({s['reason']})" if s["reason"] else ""
        lines.append(
            f"{s['candidate_id']:>6}  {s['mutation']:<{width}}  {s['status']:<9} {measured}{reason}"
        )
    return "\n".join(lines)


def genome_summary(genome: Genome) -> str:
    """A one-line summary of a genome's input and depth, e.g. ``64x64 px, 8 frames, stride 2,
    3 blocks``."""
    return (
        f"{genome.resolution}x{genome.resolution} px, {_count(genome.num_frames, 'frame')}, "
        f"stride {genome.frame_stride}, {_count(len(genome.blocks), 'block')}"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _genome(row: pd.Series) -> Genome:
    return genome_from_dict(
        json.loads(row["genome_json"]), source=f"candidate {row['candidate_id']}"
    )


def _formatted(name: str, value: Any) -> str:
    return "-" if value is None else format(value, _FORMATS.get(name, ""))


def _plain(value: Any) -> Any:
    """A JSON-ready value: ``None`` for a missing one (``pd.NA``, NaN), Python for numpy."""
    import pandas as pd

    if pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value
