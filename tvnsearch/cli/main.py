"""The ``tvnsearch`` command line: ``main(argv) -> exit code``; bad input exits 2 in one line."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tvnsearch.cli.arguments import integer, seconds
from tvnsearch.cli.inspect_commands import add_inspect_parsers
from tvnsearch.cli.model_commands import add_model_parsers
from tvnsearch.cli.run_commands import add_run_parsers
from tvnsearch.cli.view_commands import add_view_parsers
from tvnsearch.errors import InputError, Notice, Problem
from tvnsearch.files import atomic_write_text
from tvnsearch.genome.genes import Genome, describe_block
from tvnsearch.genome.plan import plan_network
from tvnsearch.genome.space import Report, load_space
from tvnsearch.genome.tvn_format import fits_tvn_format, load_genome
from tvnsearch.interrupts import signalled, signals_interrupt

if TYPE_CHECKING:
    from tvnsearch.models.builder import NetworkSummary


# What no one means, refused before it runs for hours or fills the memory: a measurement longer
# than ten minutes, a classifier far wider than any label set (ImageNet-21k has 21,841 classes).
MAX_PROFILE_SECONDS = 600.0
MAX_PROFILE_RUNS = 10_000
MAX_WARMUP_RUNS = 1_000
MAX_CLASSES = 100_000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvnsearch", description="Evolutionary architecture search for tiny video networks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="a network's blocks, output shapes, parameters, FLOPs")
    show.add_argument("genome", help="genome JSON (native or the published TVN format)")
    show.add_argument(
        "--num-classes",
        type=integer(1, MAX_CLASSES),
        default=400,
        help="classifier width (default: 400, as Kinetics-400)",
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=cmd_show)
    sample = sub.add_parser("sample", help="a random valid genome from a search space")
    sample.add_argument("--space", required=True, help="search space TOML")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--json", action="store_true", help="print the genome JSON")
    sample.add_argument("--out", help="also write the genome JSON to this file")
    sample.set_defaults(handler=cmd_sample)
    validate = sub.add_parser("validate", help="every violation of a genome against a space")
    validate.add_argument("genome")
    validate.add_argument("--space", required=True, help="search space TOML")
    validate.add_argument("--json", action="store_true")
    validate.set_defaults(handler=cmd_validate)
    add_model_parsers(sub)  # export, train
    _add_data_parser(sub)
    _add_profile_parser(sub)
    add_run_parsers(sub)
    add_inspect_parsers(sub)  # pareto, lineage
    add_view_parsers(sub)  # dashboard, report
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with warnings.catch_warnings(), signals_interrupt():
        warnings.simplefilter("always", Notice)
        warnings.showwarning = _notice_printer(args.command, warnings.showwarning)
        try:
            return _handle(args)
        except BaseException:  # after Ctrl-C or SIGTERM: one line, never a traceback
            if (ended := signalled()) is None:
                raise
            print(f"\ntvnsearch {args.command}: {ended[0]}", file=sys.stderr)
            return ended[1]


def _notice_printer(command: str, others: Callable[..., None]) -> Callable[..., None]:
    """Print a ``Notice`` (a damaged file left out, a cache rebuilt) as one line of its own,
    once however often it is met."""
    said: set[str] = set()

    def show(message: Warning | str, category: type[Warning], *args: object, **kw: object) -> None:
        if issubclass(category, Notice):
            if str(message) not in said:
                said.add(str(message))
                print(f"tvnsearch {command}: note: {message}", file=sys.stderr)
        else:
            others(message, category, *args, **kw)

    return show


def _handle(args: argparse.Namespace) -> int:
    try:
        return args.handler(args)
    except InputError as exc:
        for line in exc.lines():
            print(f"tvnsearch {args.command}: {line}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave that cannot be read or written
        if exc.filename is None:
            raise
        print(f"tvnsearch {args.command}: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def run() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # output piped into `head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)


def cmd_show(args: argparse.Namespace) -> int:
    from tvnsearch.models.builder import summarize  # torch loads only for the commands that need it

    genome = load_genome(args.genome)
    summary = summarize(genome, args.num_classes)
    dead = plan_network(genome).dead_genes
    if args.json:
        print(json.dumps(_summary_dict(genome, summary, dead), indent=2))
    else:
        print(_summary_text(genome, summary, dead))
    return 0


def _summary_dict(genome: Genome, s: NetworkSummary, dead: Sequence) -> dict:
    return {
        "id": genome.id,
        "genome": genome.to_dict(),
        "input_shape": list(s.input_shape),
        "num_classes": s.num_classes,
        "params": s.params,
        "flops": s.flops,
        "blocks": [
            {
                "index": b.index,
                "description": b.description,
                "output_shape": list(b.output_shape),
                "params": b.params,
                "flops": b.flops,
            }
            for b in s.blocks
        ],
        "head": {"params": s.head_params, "flops": s.head_flops},
        "dead_genes": [{"field": d.field, "reason": d.reason} for d in dead],
        "fits_tvn_format": fits_tvn_format(genome),
    }


def _summary_text(genome: Genome, s: NetworkSummary, dead: Sequence) -> str:
    c, t, h, w = s.input_shape
    lines = [
        f"genome {genome.id}: clip {c}x{t}x{h}x{w} (C x T x H x W), frame stride "
        f"{genome.frame_stride}, pipelining depth {genome.pipeline_depth}",
        f"{'#':>2}  {'block':<52} {'output [C,T,H,W]':<20} {'params':>13} {'GFLOPs':>9}",
    ]
    for b in s.blocks:
        lines.append(
            f"{b.index:>2}  {b.description:<52} {list(b.output_shape)!s:<20} "
            f"{b.params:>13,} {b.flops / 1e9:>9.3f}"
        )
    lines.append(
        f"{'':>2}  {f'head ({s.num_classes} classes)':<52} {[s.num_classes]!s:<20} "
        f"{s.head_params:>13,} {s.head_flops / 1e9:>9.3f}"
    )
    lines.append(f"{'':>2}  {'total':<52} {'':<20} {s.params:>13,} {s.flops / 1e9:>9.3f}")
    lines += ["dead genes (they cannot change this network):"] if dead else []
    lines += [f"  {d.field}: {d.reason}" for d in dead]
    return "\n".join(lines)


def cmd_sample(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    genome = space.sample(random.Random(args.seed))
    if args.out:
        atomic_write_text(args.out, genome.to_json() + "\n")
    if args.json:
        print(genome.to_json())
        return 0
    print(
        f"genome {genome.id} from space {space.name!r} (seed {args.seed}): clip "
        f"{genome.num_frames} frames of {genome.resolution}x{genome.resolution}, frame stride "
        f"{genome.frame_stride}, pipelining depth {genome.pipeline_depth}"
    )
    for i in range(len(genome.blocks)):
        print(f"  block {i}: {describe_block(genome.blocks[i])}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    genome = load_genome(args.genome)
    report = space.validate(genome)
    if args.json:
        print(json.dumps(_report_dict(genome, report), indent=2))
    else:
        _print_report(args.genome, space.name, report)
    return 0 if report.valid else 2


def _report_dict(genome: Genome, report: Report) -> dict:
    return {
        "id": genome.id,
        "valid": report.valid,
        "errors": [
            {"field": e.field, "value": e.value, "message": e.message} for e in report.errors
        ],
        "dead_genes": [{"field": d.field, "reason": d.reason} for d in report.dead_genes],
    }


def _print_report(path: str, space_name: str, report: Report) -> None:
    for e in report.errors:
        print(f"{path}: {e.field}: {e.message}, but got {e.value!r}", file=sys.stderr)
    for d in report.dead_genes:
        print(f"{path}: {d.field}: dead gene: {d.reason}")
    verdict = "valid" if report.valid else f"invalid ({len(report.errors)} violations)"
    print(f"{path}: {verdict} in space {space_name!r}")


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="datasets: write a synthetic benchmark")
    synth = data.add_subparsers(dest="data_command", required=True).add_parser(
        "synth", help="write a synthetic video dataset that rewards temporal models"
    )
    synth.add_argument("--out", required=True, help="folder to write (replaced if synthetic)")
    synth.add_argument(
        "--task",
        default="motion",
        help="motion (the recipes' benchmark, default) or disc (9 classes, quick)",
    )
    synth.add_argument("--seed", type=integer(0), default=0)
    synth.add_argument(
        "--num-videos", type=integer(1), default=None, help="all splits (the task's default)"
    )
    synth.add_argument("--size", type=integer(1), default=64, help="frame side, pixels")
    synth.add_argument("--num-frames", type=integer(1), default=16)
    synth.set_defaults(handler=cmd_data_synth, command="data synth")


def cmd_data_synth(args: argparse.Namespace) -> int:
    from tvnsearch.data.synth import SynthConfig, write_synth

    config = SynthConfig(
        seed=args.seed,
        task=args.task,
        num_videos=args.num_videos,
        size=args.size,
        num_frames=args.num_frames,
    )
    s = write_synth(args.out, config)
    print(
        f"wrote {s.num_train} train and {s.num_val} val videos of {len(s.classes)} classes "
        f"to {s.root}"
    )
    return 0


def _add_profile_parser(sub: argparse._SubParsersAction) -> None:
    profile = sub.add_parser("profile", help="runtime per clip, peak memory, parameters, FLOPs")
    profile.add_argument("genome", help="genome JSON (native or the published TVN format)")
    profile.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    profile.add_argument("--threads", type=integer(1), default=1, help="CPU threads (1)")
    profile.add_argument(
        "--runtime",
        default="eager",
        help="what runs the network, or several, comma-separated: eager (default), "
        "torchscript, onnxruntime, executorch",
    )
    runs = integer(1, MAX_PROFILE_RUNS)
    profile.add_argument("--runs", type=runs, default=25, help="timed runs, at least (25)")
    profile.add_argument(
        "--min-seconds",
        type=seconds(MAX_PROFILE_SECONDS),
        default=1.0,
        help="time at least this long in all (1.0)",
    )
    warmup = integer(1, MAX_WARMUP_RUNS)
    profile.add_argument("--warmup", type=warmup, default=5, help="warm-up runs (5)")
    classes = integer(1, MAX_CLASSES)
    profile.add_argument("--num-classes", type=classes, default=400, help="(400)")
    profile.add_argument("--json", action="store_true", help="machine-readable output")
    profile.set_defaults(handler=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    from tvnsearch.measure.affinity import usable_cores
    from tvnsearch.measure.device import check_device
    from tvnsearch.measure.measurement import measure
    from tvnsearch.measure.profile import Settings, describe_profile
    from tvnsearch.measure.runtimes import check_runtime
    from tvnsearch.status import Status

    genome = load_genome(args.genome)
    check_device(args.device, threads=args.threads, source="command line")
    runtimes = [name.strip() for name in args.runtime.split(",") if name.strip()] or ["eager"]
    for name in runtimes:
        check_runtime(name, args.device, source="command line", field="--runtime")
    cores = len(usable_cores())
    if args.device == "cpu" and args.threads > cores:
        why = f"this machine lets this process use {cores} core(s), but got {args.threads}"
        raise InputError("command line", [Problem("--threads", why)])
    profiles = []
    for name in dict.fromkeys(runtimes):
        settings = Settings(
            args.device, args.threads, args.warmup, args.runs, args.min_seconds, runtime=name
        )
        profiles.append(measure(genome, args.num_classes, settings))
    if args.json:
        records = [p.to_dict() for p in profiles]
        print(json.dumps(records[0] if len(records) == 1 else records, indent=2))
    else:
        print("\n\n".join(describe_profile(p) for p in profiles))
    return 0 if all(p.status == Status.ADMITTED for p in profiles) else 1
