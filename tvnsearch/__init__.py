"""tvnsearch: evolutionary neural-architecture search for tiny video networks.

The public names below are imported lazily, so that the torch-free parts (genomes, spaces,
plans, mutations) load in milliseconds without torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tvnsearch.genome import Genome

_EXPORTS = {
    "Block": "tvnsearch.genome",
    "Genome": "tvnsearch.genome",
    "genome_from_dict": "tvnsearch.genome",
    "load_genome": "tvnsearch.genome",
    "InputError": "tvnsearch.errors",
    "SearchSpace": "tvnsearch.space",
    "load_space": "tvnsearch.space",
    "mutate": "tvnsearch.mutation",
    "plan_network": "tvnsearch.plan",
    "from_tvn_dict": "tvnsearch.tvn_format",
    "to_tvn_dict": "tvnsearch.tvn_format",
    "build_model": "tvnsearch.builder",
    "summarize": "tvnsearch.builder",
    "build_streaming_model": "tvnsearch.streaming",
    "measure_stream": "tvnsearch.stream_timing",
}
PUBLISHED = ("tvn1", "tvn2", "tvn3", "tvn4", "tvn_mobile_1", "tvn_mobile_2")


def published_genome(name: str) -> Genome:
    """One of the six published Tiny Video Networks, by name (see ``PUBLISHED``)."""
    from tvnsearch.genome import load_genome

    if name not in PUBLISHED:
        raise ValueError(f"unknown published network {name!r}; one of {list(PUBLISHED)}")
    return load_genome(Path(__file__).parent / "published" / f"{name}.json")


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tvnsearch' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = ["PUBLISHED", "published_genome", *_EXPORTS]
