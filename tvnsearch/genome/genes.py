"""TVN genomes: frozen records of the genes, canonical JSON and a content-hash id.

A genome holds genes only; everything derived (shapes, widths, which ops run) is computed by
``tvnsearch.genome.plan``. Structural checks that hold in every search space happen here, at the
JSON boundary; the ranges of a particular space are checked by ``tvnsearch.genome.space``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from tvnsearch.errors import InputError, Problem

SCHEMA = "tvnsearch.genome/1"
SPATIAL_TYPES = ("std", "depth", "maxpool", "avgpool")
TEMPORAL_TYPES = ("1d", "maxpool", "avgpool")
ACTIVATIONS = ("relu", "swish", "hswish")


@dataclass(frozen=True)
class Block:
    """One TVN block, applied ``num_repeats`` times (see SEMANTICS in the reference folder).

    ``expansion`` 0 means no expansion conv; ``squeeze_ratio`` 0.0 and ``non_local_width`` 0
    switch squeeze-and-excitation and the non-local layer off; a kernel of 1 skips its op.
    """

    spatial_type: str
    spatial_kernel: int
    spatial_stride: int
    spatial_act: str
    temporal_type: str
    temporal_kernel: int
    temporal_stride: int
    temporal_act: str
    num_filters: int
    expansion: int
    inverted_bottleneck: bool
    squeeze_ratio: float
    context_gate: bool
    non_local_width: int
    skip: bool
    act: str
    num_repeats: int


# A 3x3 convolution of 8 filters and nothing else: the smallest plain block, from which tests,
# benchmarks and the profiler's first timing through a command (``plain_block``) start.
PLAIN_BLOCK = Block(
    spatial_type="std",
    spatial_kernel=3,
    spatial_stride=1,
    spatial_act="relu",
    temporal_type="1d",
    temporal_kernel=1,
    temporal_stride=1,
    temporal_act="relu",
    num_filters=8,
    expansion=0,
    inverted_bottleneck=False,
    squeeze_ratio=0.0,
    context_gate=False,
    non_local_width=0,
    skip=False,
    act="relu",
    num_repeats=1,
)


def plain_block(**genes: Any) -> Block:
    """``PLAIN_BLOCK`` with ``genes`` changed."""
    return dataclasses.replace(PLAIN_BLOCK, **genes)


@dataclass(frozen=True)
class Genome:
    """A whole network: its input clip, its blocks and its pipelining depth k (0 = sequential)."""

    resolution: int
    num_frames: int
    frame_stride: int
    pipeline_depth: int
    blocks: tuple[Block, ...]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {"schema": SCHEMA, **data, "blocks": list(data["blocks"])}

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @cached_property
    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @cached_property
    def id(self) -> str:
        """16 hex digits of the SHA-256 of the canonical JSON: equal across processes and hosts."""
        return hashlib.sha256(self.canonical_json.encode()).hexdigest()[:16]


def describe_block(b: Block) -> str:
    """A one-line description such as ``3x std3/2 + 1d3/1, 64x4, SE0.25, gate, skip``."""
    parts = [
        f"{b.num_repeats}x {b.spatial_type}{b.spatial_kernel}/{b.spatial_stride}"
        f" + {b.temporal_type}{b.temporal_kernel}/{b.temporal_stride}",
        f"{b.num_filters}x{b.expansion}" + (" inv" if b.inverted_bottleneck else ""),
    ]
    parts += [f"SE{b.squeeze_ratio:.2f}"] if b.squeeze_ratio > 0 else []
    parts += ["gate"] if b.context_gate else []
    parts += [f"NL{b.non_local_width}"] if b.non_local_width else []
    parts += ["skip"] if b.skip else []
    acts = {b.spatial_act, b.temporal_act, b.act}
    parts += [] if acts == {"relu"} else [f"{b.spatial_act}/{b.temporal_act}/{b.act}"]
    return ", ".join(parts)


GENOME_FIELDS = {f.name: f.type for f in dataclasses.fields(Genome) if f.name != "blocks"}
BLOCK_FIELDS = {f.name: f.type for f in dataclasses.fields(Block)}

# Structural minimums that hold in every space; a space sets the real ranges.
_MINIMUM = {
    "resolution": 1,
    "num_frames": 1,
    "frame_stride": 1,
    "pipeline_depth": 0,
    "spatial_kernel": 1,
    "spatial_stride": 1,
    "temporal_kernel": 1,
    "temporal_stride": 1,
    "num_filters": 1,
    "expansion": 0,
    "non_local_width": 0,
    "num_repeats": 1,
}
_CHOICES = {
    "spatial_type": SPATIAL_TYPES,
    "temporal_type": TEMPORAL_TYPES,
    "spatial_act": ACTIVATIONS,
    "temporal_act": ACTIVATIONS,
    "act": ACTIVATIONS,
}


def check_value(field: str, kind: str, value: Any) -> str | None:
    """Why ``value`` cannot be gene ``field`` of type ``kind``, or None when it can."""
    if kind == "bool":
        return None if isinstance(value, bool) else f"must be true or false, but got {value!r}"
    if kind == "str":
        allowed = _CHOICES[field]
        return None if value in allowed else f"must be one of {list(allowed)}, but got {value!r}"
    if kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1
        return None if ok else f"must be a number in [0, 1), but got {value!r}"
    if not isinstance(value, int) or isinstance(value, bool):
        return f"must be an integer, but got {value!r}"
    if value < _MINIMUM[field]:
        return f"must be >= {_MINIMUM[field]}, but got {value!r}"
    return None


def _check_record(
    data: Any, spec: dict[str, str], prefix: str, also_allowed: tuple[str, ...] = ()
) -> list[Problem]:
    if not isinstance(data, dict):
        return [
            Problem(
                prefix.rstrip(".") or "genome", f"must be an object, but got {type(data).__name__}"
            )
        ]
    problems = [
        Problem(f"{prefix}{key}", "unknown key")
        for key in data
        if key not in spec and key not in also_allowed
    ]
    for name, kind in spec.items():
        if name not in data:
            problems.append(Problem(f"{prefix}{name}", "missing"))
        elif (why := check_value(name, kind, data[name])) is not None:
            problems.append(Problem(f"{prefix}{name}", why))
    return problems


def genome_from_dict(data: Any, *, source: str = "genome") -> Genome:
    """Parse a native genome (as written by ``Genome.to_dict``), naming every problem found."""
    if not isinstance(data, dict):
        raise InputError(source, f"a genome must be a JSON object, but got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise InputError(
            source, [Problem("schema", f"must be {SCHEMA!r}, but got {data.get('schema')!r}")]
        )
    body = {k: v for k, v in data.items() if k != "schema"}
    problems = _check_record(body, GENOME_FIELDS, "", also_allowed=("blocks",))
    blocks = body.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        got = f"{len(blocks)} blocks" if isinstance(blocks, list) else type(blocks).__name__
        problems.append(Problem("blocks", f"must be a non-empty list, but got {got}"))
        blocks = []
    for i, block in enumerate(blocks):
        problems += _check_record(block, BLOCK_FIELDS, f"blocks[{i}].")
    if problems:
        raise InputError(source, problems)
    return Genome(
        **{k: body[k] for k in GENOME_FIELDS},
        blocks=tuple(
            Block(**{k: float(b[k]) if k == "squeeze_ratio" else b[k] for k in BLOCK_FIELDS})
            for b in blocks
        ),
    )
