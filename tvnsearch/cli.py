"""The ``tvnsearch`` command line: ``main(argv) -> exit code``; bad input exits 2 in one line."""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tvnsearch.errors import InputError
from tvnsearch.files import atomic_write_text
from tvnsearch.genome import Genome, describe_block, load_genome
from tvnsearch.plan import plan_network
from tvnsearch.space import Report, load_space
from tvnsearch.tvn_format import fits_tvn_format

if TYPE_CHECKING:
    from tvnsearch.builder import NetworkSummary


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvnsearch", description="Evolutionary architecture search for tiny video networks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="a network's blocks, output shapes, parameters, FLOPs")
    show.add_argument("genome", help="genome JSON (native or the published TVN format)")
    show.add_argument(
        "--num-classes",
        type=_positive_int,
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except InputError as exc:
        for line in exc.lines():
            print(f"tvnsearch {args.command}: {line}", file=sys.stderr)
        return 2


def run() -> None:
    sys.exit(main())


def cmd_show(args: argparse.Namespace) -> int:
    from tvnsearch.builder import summarize  # torch loads only for the commands that need it

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
