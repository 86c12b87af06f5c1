"""The TVN paper's single mutations: small pure operators in a name -> function registry.

High level: the input resolution, frame count, frame stride or pipelining depth, adding or
removing a block. Low level: a block's repeats, a layer's type, or one layer parameter. Every
operator draws the new value from the space's domain, so ``mutate`` always returns a genome of
the same space, valid, and a different network from its parent's: a change of a dead gene (a
temporal gene once the clip is down to one frame, say) is drawn again, since its child would be
the parent trained once more under a new id.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass

from tvnsearch.genome.genes import Block, Genome
from tvnsearch.genome.plan import network_id
from tvnsearch.genome.space import Domain, SearchSpace

Operator = Callable[[Genome, SearchSpace, random.Random], tuple[Genome, str] | None]

LAYER_TYPES = ("spatial_type", "temporal_type")
LAYER_PARAMS = tuple(
    f.name for f in dataclasses.fields(Block) if f.name not in (*LAYER_TYPES, "num_repeats")
)


@dataclass(frozen=True)
class Mutation:
    child: Genome
    operator: str
    description: str  # e.g. "blocks[2].spatial_kernel: 3 -> 5"


def _other_value(domain: Domain, current: object, rng: random.Random) -> object | None:
    """A value of ``domain`` different from ``current``, or None if the domain has no other."""
    for _ in range(64):
        value = domain.sample(rng)
        if value != current:
            return value
    return None


def _mutate_genome_gene(name: str) -> Operator:
    def operator(genome: Genome, space: SearchSpace, rng: random.Random):
        value = _other_value(space.genome[name], getattr(genome, name), rng)
        if value is None:
            return None
        child = dataclasses.replace(genome, **{name: value})
        return child, f"{name}: {getattr(genome, name)} -> {value}"

    return operator


def _mutate_block_gene(names: tuple[str, ...]) -> Operator:
    def operator(genome: Genome, space: SearchSpace, rng: random.Random):
        free = [n for n in names if not space.is_fixed(n)]
        if not free:
            return None
        i = rng.randrange(len(genome.blocks))
        name = rng.choice(free)
        old = getattr(genome.blocks[i], name)
        value = _other_value(space.block[name], old, rng)
        if value is None:
            return None
        blocks = list(genome.blocks)
        blocks[i] = dataclasses.replace(blocks[i], **{name: value})
        return dataclasses.replace(
            genome, blocks=tuple(blocks)
        ), f"blocks[{i}].{name}: {old} -> {value}"

    return operator


def add_block(genome: Genome, space: SearchSpace, rng: random.Random):
    if not space.genome["num_blocks"].contains(len(genome.blocks) + 1):
        return None
    i = rng.randrange(len(genome.blocks) + 1)
    blocks = (*genome.blocks[:i], space.sample_block(rng), *genome.blocks[i:])
    return dataclasses.replace(genome, blocks=blocks), f"add block at {i}"


def remove_block(genome: Genome, space: SearchSpace, rng: random.Random):
    if not space.genome["num_blocks"].contains(len(genome.blocks) - 1):
        return None
    i = rng.randrange(len(genome.blocks))
    blocks = genome.blocks[:i] + genome.blocks[i + 1 :]
    return dataclasses.replace(genome, blocks=blocks), f"remove block {i}"


OPERATORS: dict[str, Operator] = {
    "resolution": _mutate_genome_gene("resolution"),
    "num_frames": _mutate_genome_gene("num_frames"),
    "frame_stride": _mutate_genome_gene("frame_stride"),
    "pipeline_depth": _mutate_genome_gene("pipeline_depth"),
    "add_block": add_block,
    "remove_block": remove_block,
    "repeats": _mutate_block_gene(("num_repeats",)),
    "layer_type": _mutate_block_gene(LAYER_TYPES),
    "layer_param": _mutate_block_gene(LAYER_PARAMS),
}


def mutate(
    genome: Genome, space: SearchSpace, rng: random.Random, *, max_attempts: int = 200
) -> Mutation:
    """Apply one randomly chosen operator; drawn again until the child is valid and builds
    another network (``network_id``). Raises ``ValueError`` when ``max_attempts`` draws find
    none: the space fixes every gene that could change this genome's network."""
    names = [n for n in OPERATORS if not (n in space.genome and space.is_fixed(n))]
    parent_network = network_id(genome)
    for _ in range(max_attempts):
        name = rng.choice(names)
        result = OPERATORS[name](genome, space, rng)
        if result is None:
            continue
        child, description = result
        if not space.geometry_errors(child) and network_id(child) != parent_network:
            return Mutation(child, name, description)
    raise ValueError(
        f"no valid mutation of genome {genome.id} in space {space.name!r} changes its network "
        f"after {max_attempts} attempts"
    )
