"""The published Tiny Video Networks JSON format: import and export; ``load_genome`` reads either
format.

Read as the reference code reads it: ``num_blocks``, ``total_layers`` and the per-block
``current_size`` / ``input_size`` / ``output_size`` are stale metadata and ignored; TVN-Mobile files
carry ``input_streams`` and per-block ``inputs``. Only graphs that are one chain over one stream
(every published file) describe a network the reference builds; others are refused by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvnsearch.errors import InputError, Problem
from tvnsearch.files import read_json
from tvnsearch.genome.genes import Block, Genome, check_value, genome_from_dict

_STALE = {"num_blocks", "total_layers", "current_size", "input_size", "output_size"}
_STREAM_KEYS = ("image_size", "num_frames", "frame_stride")
_FORMAT_ACTS = ("relu", "hswish")
# published key -> (gene, converter from the published value)
_BLOCK_KEYS: dict[str, tuple[str, type]] = {
    "spatial_type": ("spatial_type", str),
    "spatial_kernel": ("spatial_kernel", int),
    "spatial_stride": ("spatial_stride", int),
    "temporal_type": ("temporal_type", str),
    "temporal_kernel": ("temporal_kernel", int),
    "temporal_stride": ("temporal_stride", int),
    "filters": ("num_filters", int),
    "expand": ("expansion", int),
    "squeeze": ("squeeze_ratio", float),
    "context_gate": ("context_gate", bool),
    "non_local": ("non_local_width", int),
    "skip": ("skip", bool),
    "repeats": ("num_repeats", int),
}
_OPTIONAL_KEYS: dict[str, tuple[str, type, Any]] = {
    "act": ("act", str, "relu"),
    "spatial_act": ("spatial_act", str, "relu"),
    "temporal_act": ("temporal_act", str, "relu"),
    "inv-bottle": ("inverted_bottleneck", bool, False),
}


def is_tvn_dict(data: Any) -> bool:
    return isinstance(data, dict) and ("image_size" in data or "input_streams" in data)


def from_tvn_dict(data: dict[str, Any], *, source: str = "tvn-json") -> Genome:
    """Read a genome in the published format; every problem is named by its published key."""
    stream, problems = _read_stream(data)
    blocks_data = data.get("blocks")
    if not isinstance(blocks_data, list) or not blocks_data:
        raise InputError(source, [Problem("blocks", "must be a non-empty list")])
    problems += _check_chain(data, blocks_data)
    blocks = []
    for i, raw in enumerate(blocks_data):
        block, block_problems = _read_block(raw, f"blocks[{i}].")
        blocks.append(block)
        problems += block_problems
    if problems:
        raise InputError(source, problems)
    return Genome(
        resolution=stream["image_size"],
        num_frames=stream["num_frames"],
        frame_stride=stream["frame_stride"],
        pipeline_depth=0,
        blocks=tuple(blocks),
    )


def _read_stream(data: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    allowed = {"blocks", "input_streams", *_STREAM_KEYS, *_STALE}
    problems = [Problem(key, "unknown key") for key in data if key not in allowed]
    if "input_streams" in data:
        streams = data["input_streams"]
        if not isinstance(streams, list) or len(streams) != 1 or not isinstance(streams[0], dict):
            n = len(streams) if isinstance(streams, list) else streams
            return {}, [
                *problems,
                Problem("input_streams", f"exactly one input stream is supported, but got {n!r}"),
            ]
        stream, prefix = streams[0], "input_streams[0]."
    else:
        stream, prefix = data, ""
    values = {}
    for key in _STREAM_KEYS:
        gene = {"image_size": "resolution"}.get(key, key)
        why = "missing" if key not in stream else check_value(gene, "int", stream[key])
        problems += [Problem(prefix + key, why)] if why else []
        values[key] = stream.get(key)
    return values, problems


def _check_chain(data: dict[str, Any], blocks: list[Any]) -> list[Problem]:
    """Block i must read input i: the stream for block 0, then the previous block's output."""
    if "input_streams" not in data:
        return []
    problems = []
    for i, block in enumerate(blocks):
        inputs = block.get("inputs") if isinstance(block, dict) else None
        if inputs != [i]:
            problems.append(
                Problem(
                    f"blocks[{i}].inputs",
                    f"only a chain is supported (block {i} reading input {i}), but got {inputs!r}",
                )
            )
    return problems


def _read_block(raw: Any, prefix: str) -> tuple[Block | None, list[Problem]]:
    if not isinstance(raw, dict):
        return None, [Problem(prefix.rstrip("."), "must be an object")]
    known = {*_BLOCK_KEYS, *_OPTIONAL_KEYS, "inputs", *_STALE}
    problems = [Problem(prefix + key, "unknown key") for key in raw if key not in known]
    genes: dict[str, Any] = {}
    for key, (gene, convert) in _BLOCK_KEYS.items():
        if key not in raw:
            problems.append(Problem(prefix + key, "missing"))
            continue
        genes[gene], why = _convert(gene, convert, raw[key])
        problems += [Problem(prefix + key, why)] if why else []
    for key, (gene, convert, default) in _OPTIONAL_KEYS.items():
        genes[gene], why = _convert(gene, convert, raw.get(key, default))
        if why is None and convert is str and genes[gene] not in _FORMAT_ACTS:
            why = f"must be one of {list(_FORMAT_ACTS)}, but got {genes[gene]!r}"
        problems += [Problem(prefix + key, why)] if why else []
    return (None if problems else Block(**genes)), problems


def _convert(gene: str, convert: type, value: Any) -> tuple[Any, str | None]:
    """The published format writes flags as 0/1 and some integers as floats (e.g. 2.0)."""
    if convert is bool and value in (0, 1):
        value = bool(value)
    elif convert is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    elif convert is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value, check_value(gene, convert.__name__, value)


def to_tvn_dict(genome: Genome) -> dict[str, Any]:
    """The genome in the published format; refuses genes the format cannot express."""
    problems = (
        [
            Problem(
                "pipeline_depth",
                f"the published format has no pipelining depth, but got {genome.pipeline_depth}",
            )
        ]
        if genome.pipeline_depth
        else []
    )
    blocks = []
    for i, block in enumerate(genome.blocks):
        out = {
            key: _publish(convert, getattr(block, gene))
            for key, (gene, convert) in _BLOCK_KEYS.items()
        }
        for key, (gene, convert, _) in _OPTIONAL_KEYS.items():
            value = getattr(block, gene)
            if convert is str and value not in _FORMAT_ACTS:
                problems.append(
                    Problem(
                        f"blocks[{i}].{gene}",
                        f"the published format has only {list(_FORMAT_ACTS)}, but got {value!r}",
                    )
                )
            out[key] = _publish(convert, value)
        blocks.append(out)
    if problems:
        raise InputError("tvn-json export", problems)
    return {
        "image_size": genome.resolution,
        "num_frames": genome.num_frames,
        "frame_stride": genome.frame_stride,
        "blocks": blocks,
    }


def _publish(convert: type, value: Any) -> Any:
    return int(value) if convert is bool else convert(value)


def fits_tvn_format(genome: Genome) -> bool:
    try:
        to_tvn_dict(genome)
    except InputError:
        return False
    return True


def load_genome(path: str | Path) -> Genome:
    """Load a genome file: the native format, or the published TVN format (detected by keys)."""
    data = read_json(path)
    if is_tvn_dict(data):
        return from_tvn_dict(data, source=str(path))
    return genome_from_dict(data, source=str(path))


PUBLISHED = ("tvn1", "tvn2", "tvn3", "tvn4", "tvn_mobile_1", "tvn_mobile_2")


def published_genome(name: str) -> Genome:
    """One of the six published Tiny Video Networks, by name (see ``PUBLISHED``)."""
    if name not in PUBLISHED:
        raise ValueError(f"unknown published network {name!r}; one of {list(PUBLISHED)}")
    return load_genome(Path(__file__).parent / "published" / f"{name}.json")
