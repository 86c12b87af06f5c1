"""The ``export``, ``train`` and ``evaluate`` commands: found networks out of a run, trained for
longer, and scored on the test split.

``train`` takes a genome JSON or an export folder. From an export folder it reads
``genome.json`` and the clip and training recipe of ``card.json``, and trains with the run's
settings (data, split, cache, batch size, learning rate, seed) except what the command line
gives; the data path defaults to the run's. Retraining starts from fresh weights: the partial
training of a search is a ranking signal, not a start worth keeping. With ``--out`` the result
is written as a new export folder (never over an existing one, the source included).
``evaluate`` scores an export folder's network on a split of a dataset (``test`` by default: the
one a search never selects on), with the run's data settings unless the command line gives others.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvnsearch.cli.arguments import integer, setting
from tvnsearch.errors import InputError, Problem
from tvnsearch.files import check_writable, read_json
from tvnsearch.genome.genes import Genome
from tvnsearch.genome.tvn_format import load_genome
from tvnsearch.search.progress import progress_bar
from tvnsearch.search.recipe import DataSection, table_from_dict
from tvnsearch.status import Status
from tvnsearch.train.config import AUTO_WORKERS, TrainConfig

if TYPE_CHECKING:
    from tvnsearch.export.folders import Exported
    from tvnsearch.train.training import TrainData, TrainResult
    from tvnsearch.train.weights import ModelInfo

DEFAULT_FORMATS = "torchscript,onnx,tvn-json"


def add_model_parsers(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="found networks as folders: weights, TorchScript, ONNX")
    export.add_argument("run", help="a run folder, results/<name>-<timestamp>")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--best", action="store_true", help="the fittest candidate")
    which.add_argument(
        "--id", dest="ids", type=integer(0), action="append", metavar="ID", help="(repeatable)"
    )
    which.add_argument(
        "--pareto",
        action="store_true",
        help="the Pareto front of --x and --y; a network whose folder exists already (from an "
        "earlier export of the front) is skipped, said so, and left as it is",
    )
    export.add_argument("--x", help="with --pareto: an objective column (default: cpu_ms)")
    export.add_argument("--y", help="with --pareto: an objective column (default: fitness)")
    export.add_argument(
        "--format",
        default=DEFAULT_FORMATS,
        help=f"any of torchscript, onnx, executorch, tvn-json ({DEFAULT_FORMATS})",
    )
    export.add_argument(
        "--out",
        help="one folder per network goes in here (RUN/exports); --best and --id never replace "
        "a folder",
    )
    export.set_defaults(handler=cmd_export)
    _add_train_parser(sub)
    _add_evaluate_parser(sub)


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "evaluate", help="score an exported network on the test split (or val, train)"
    )
    evaluate.add_argument("export", help="an export folder (tvnsearch export, train --out)")
    evaluate.add_argument("--data", help="class folders or a .csv / .jsonl list (the run's)")
    evaluate.add_argument("--split", default="test", help="test (default), val or train")
    clips = setting(TrainConfig, "val_clips")
    evaluate.add_argument("--clips", type=clips, default=10, help="clips per video, averaged (10)")
    batch_size = setting(TrainConfig, "batch_size")
    evaluate.add_argument("--batch-size", type=batch_size, default=16, help="(16)")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    evaluate.add_argument("--cache-dir", help="decoded-frame cache (default: the run's)")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    evaluate.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tvnsearch.measure.device import check_device
    from tvnsearch.train.evaluation import SPLITS, evaluate_weights

    check_device(args.device, source="command line", field="--device")
    if args.split not in SPLITS:
        raise InputError("--split", f"must be one of {list(SPLITS)}, but got {args.split!r}")
    folder = Path(args.export)
    if not folder.is_dir():
        raise InputError(str(folder), "not an export folder (tvnsearch export, train --out)")
    data = _data_settings(train_source(folder), {"path": args.data, "cache_dir": args.cache_dir})
    with progress_bar("decoding videos", unit="video") as report:
        result = evaluate_weights(
            folder / "weights.safetensors",
            data.path,
            data.frame_cache(),
            split=args.split,
            num_clips=args.clips,
            batch_size=args.batch_size,
            val_fraction=data.val_fraction,
            split_seed=data.split_seed,
            device=args.device,
            on_video=report,
        )
    if args.json:
        print(json.dumps({"export": str(folder), "data": data.path, **result.to_dict()}, indent=2))
        return 0
    s = result.scores
    scores = (
        f"mean AP {s['mean_ap']:.4f}"
        if "mean_ap" in s
        else f"top-1 {s['top1']:.4f}  top-5 {s['top5']:.4f}  fitness {s['fitness']:.4f}"
        f" ± {s['fitness_noise']:.4f}"
    )
    print(
        f"{folder}: {result.split} split of {data.path}, {result.num_videos} videos x "
        f"{result.num_clips} clips: {scores}"
    )
    for skipped in result.skipped:
        print(f"  skipped {skipped.path}: {skipped.reason}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tvnsearch.export.folders import (
        export_folder,
        export_run,
        parse_formats,
        select_candidates,
    )
    from tvnsearch.search.lineage import read_lineage

    if not args.pareto and (args.x or args.y):
        raise InputError("--x" if args.x else "--y", "only means something with --pareto")
    formats = parse_formats(args.format)
    pareto = (args.x or "cpu_ms", args.y or "fitness") if args.pareto else None
    frame = read_lineage(args.run)
    ids = select_candidates(
        frame, source=args.run, use_best=args.best, ids=args.ids or (), pareto=pareto
    )
    out = Path(args.out or Path(args.run) / "exports")
    check_writable(out, folder=True)
    if args.pareto:  # the front of a run that went on: the networks exported before stay
        done = [i for i in ids if export_folder(args.run, out, i).exists()]
        for i in done:
            print(f"skipped {export_folder(args.run, out, i)}: exists (remove it to export again)")
        ids = [i for i in ids if i not in done]
    for exported in export_run(args.run, ids, out, formats):
        print(describe_export(exported))
    return 0


def describe_export(e: Exported) -> str:
    text = f"wrote {e.folder} in {e.seconds:.1f} s: {', '.join(e.files)}"
    errors = ", ".join(f"{name} {error:.1e}" for name, error in e.errors.items())
    return f"{text}; relative error from PyTorch: {errors}" if errors else text


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train one genome or exported network; scores")
    train.add_argument("genome", help="genome JSON (native or published TVN), or an export folder")
    train.add_argument("--data", help="class folders or a .csv / .jsonl list (export: the run's)")
    train.add_argument("--iterations", type=setting(TrainConfig, "iterations"), default=1000)
    batch_size, seed = setting(TrainConfig, "batch_size"), setting(TrainConfig, "seed")
    train.add_argument("--batch-size", type=batch_size, help="(16; export: the run's)")
    train.add_argument("--seed", type=seed, help="(0; export: the run's)")
    train.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    workers = setting(TrainConfig, "num_workers")
    train.add_argument(
        "--num-workers", type=workers, default=AUTO_WORKERS, help="DataLoader (-1: as many as help)"
    )
    train.add_argument("--cache-dir", help="decoded-frame cache (default: ~/.cache/tvnsearch)")
    cache_size = setting(DataSection, "cache_size")
    train.add_argument("--cache-size", type=cache_size, help="cached frames' shorter side, px")
    train.add_argument("--strict", action="store_true", help="stop at an unreadable video")
    train.add_argument("--out", help="write the trained network as an export folder (new)")
    train.add_argument("--format", help=f"with --out ({DEFAULT_FORMATS})")
    train.add_argument("--json", action="store_true", help="machine-readable output")
    train.set_defaults(handler=cmd_train)


@dataclass(frozen=True)
class TrainSource:
    """A genome to train, with the settings it comes with (an export's: its run's)."""

    path: Path  # a genome JSON or an export folder
    genome: Genome
    train: TrainConfig
    data: DataSection | None  # None: the command line must say
    card: dict[str, Any] | None = None  # an export folder's


def cmd_train(args: argparse.Namespace) -> int:
    from tvnsearch.export.folders import write_export
    from tvnsearch.train.memory import keep_freed_memory
    from tvnsearch.train.training import train_model
    from tvnsearch.train.weights import ModelInfo, weights_bytes

    keep_freed_memory()  # this process is the command's: it trains, then exits
    source = train_source(args.genome)
    formats = _out_formats(args)
    config, settings = _settings(source, args)
    data = _prepare(settings, strict=args.strict)
    with progress_bar("training", total=config.iterations, unit="step") as report:
        result, model = train_model(source.genome, data, config, on_step=report)
    exported = None
    if args.out and model is not None:
        ds, out = data.dataset, Path(args.out)
        info = ModelInfo(source.genome, result.clip, ds.classes, ds.multi_label)
        card = trained_card(out.name, source, info, result, config, settings)
        exported = write_export(out, weights_bytes(model, info), model, info, card, formats)
    _print_result(args, source.genome, result, data, exported)
    return 0 if result.status == Status.TRAINED else 1


def train_source(path: str | Path) -> TrainSource:
    """A genome JSON file, or an export folder (``genome.json`` + ``card.json``)."""
    path = Path(path)
    if not path.is_dir():
        return TrainSource(path, load_genome(path), TrainConfig(), None)
    genome = load_genome(path / "genome.json")
    card_path = path / "card.json"
    card = read_json(card_path)
    training = card.get("training") if isinstance(card, dict) else None
    if not isinstance(training, dict):
        raise InputError(str(card_path), [Problem("training", "missing: not an export's card")])
    _check_clip(genome, card, str(card_path))
    where = f"{card_path}: training"
    train = table_from_dict(training, "train", TrainConfig, source=where)
    data = table_from_dict(training, "data", DataSection, source=where)
    return TrainSource(path, genome, train, data, card)


def _check_clip(genome: Genome, card: dict[str, Any], source: str) -> None:
    """Training feeds a genome the clip it asks for: an export's must be that one."""
    from tvnsearch.data.clips import ClipSpec
    from tvnsearch.train.weights import clip_from_dict

    clip = clip_from_dict(card.get("input"))
    if clip != ClipSpec.of(genome):
        why = f"the clip {clip} is not the one genome.json asks for, {ClipSpec.of(genome)}"
        raise InputError(source, [Problem("input", why)])


def _out_formats(args: argparse.Namespace) -> tuple[str, ...]:
    from tvnsearch.export.folders import parse_formats

    if args.format and not args.out:
        raise InputError("--format", "only means something with --out")
    if args.out and Path(args.out).exists():
        raise InputError(args.out, "already exists; --out must name a new folder")
    if args.out:  # before training, not after
        check_writable(args.out, folder=True)
    return parse_formats(args.format or DEFAULT_FORMATS) if args.out else ()


def _settings(source: TrainSource, args: argparse.Namespace) -> tuple[TrainConfig, DataSection]:
    """The source's training and data settings, with what the command line gives instead."""
    from tvnsearch.measure.device import check_device

    check_device(args.device, source="command line", field="--device")
    given = {"path": args.data, "cache_dir": args.cache_dir, "cache_size": args.cache_size}
    data = _data_settings(source, given)
    given = {"batch_size": args.batch_size, "seed": args.seed}
    train = dataclasses.replace(
        source.train,
        iterations=args.iterations,
        device=args.device,
        num_workers=args.num_workers,
        **{k: v for k, v in given.items() if v is not None},
    )
    return train, data


def _data_settings(source: TrainSource, given: dict[str, Any]) -> DataSection:
    """The source's data settings (an export's: its run's), with what the command line gives
    instead (None: not given)."""
    if source.data is None and not given.get("path"):
        raise InputError("--data", "is required to train a genome JSON (not an export folder)")
    data = source.data or DataSection(path=given["path"])
    data = dataclasses.replace(data, **{k: v for k, v in given.items() if v is not None})
    return data.sized(source.genome.resolution)  # the frames its clips need


def _prepare(settings: DataSection, *, strict: bool) -> TrainData:
    from tvnsearch.train.training import prepare_data

    cache = settings.frame_cache()
    s = settings
    with progress_bar("decoding videos", unit="video") as report:
        return prepare_data(
            s.path,
            cache,
            strict=strict,
            val_fraction=s.val_fraction,
            split_seed=s.split_seed,
            on_video=report,
        )


def trained_card(
    name: str,
    source: TrainSource,
    info: ModelInfo,
    result: TrainResult,
    config: TrainConfig,
    settings: DataSection,
) -> dict[str, Any]:
    """The card of a network trained by ``train``; an export's provenance carries over."""
    from tvnsearch.export.model_card import base_card

    card = base_card(name, info)
    old = source.card or {}
    if _part(old, "output").get("num_classes") == info.num_classes:
        # The same network, head included: what the search measured still holds.
        card["cost"]["memory_mb"] = _part(old, "cost").get("memory_mb")
        card |= {k: old[k] for k in ("source", "runtime") if k in old}
    card |= {k: old[k] for k in ("lineage",) if k in old}
    card["scores"] = {k: getattr(result, k) for k in ("fitness", "top1", "top5", "mean_ap")}
    card["training"] = {"train": dataclasses.asdict(config), "data": dataclasses.asdict(settings)}
    card["retrained"] = {
        "from": str(source.path.resolve()),
        "iterations": config.iterations,
        "result": result.to_dict(),
    }
    return card


def _part(card: dict[str, Any], key: str) -> dict[str, Any]:
    value = card.get(key)
    return value if isinstance(value, dict) else {}


def _print_result(
    args: argparse.Namespace,
    genome: Genome,
    result: TrainResult,
    data: TrainData,
    exported: Exported | None,
) -> None:
    if args.json:
        skipped = [{"path": str(s.path), "reason": s.reason} for s in data.skipped]
        out = {"out": str(exported.folder)} if exported else {}
        print(
            json.dumps({"id": genome.id, **result.to_dict(), "skipped": skipped, **out}, indent=2)
        )
        return
    print(f"genome {genome.id}: {result.summary()}")
    if exported:
        print(describe_export(exported))
