"""Search spaces: the allowed values of every gene, loaded from TOML; sampling and validation.

A space file has a ``[genome]`` table (``resolution``, ``num_frames``, ``frame_stride``,
``pipeline_depth``, ``num_blocks``) and a ``[block]`` table with one entry per block gene. Every
gene must be given. A domain is written as a list of choices (``["std", "depth"]``), a single
value, or a range table ``{ low, high, step?, log?, off?, p_off? }`` where ``off`` is an extra
value meaning "switched off" (e.g. ``squeeze_ratio = 0.0``) drawn with probability ``p_off``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvnsearch.errors import InputError, Problem
from tvnsearch.files import read_toml
from tvnsearch.genome.genes import BLOCK_FIELDS, GENOME_FIELDS, Block, Genome, check_value
from tvnsearch.genome.plan import DeadGene, plan_network

Value = int | float | bool | str


@dataclass(frozen=True)
class Choice:
    values: tuple[Value, ...]

    def sample(self, rng: random.Random) -> Value:
        return rng.choice(self.values)

    def contains(self, value: Value) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)

    def describe(self) -> str:
        return f"one of {list(self.values)}"

    def largest(self) -> Value:
        return max(self.values)


@dataclass(frozen=True)
class Range:
    """Integers ``low + k*step`` (or floats in ``[low, high)``), log-uniform when ``log``."""

    low: int | float
    high: int | float
    step: int = 1
    log: bool = False
    off: Value | None = None
    p_off: float = 0.5

    @property
    def is_float(self) -> bool:
        return isinstance(self.low, float) or isinstance(self.high, float)

    def sample(self, rng: random.Random) -> Value:
        if self.off is not None and rng.random() < self.p_off:
            return self.off
        if self.is_float:  # four decimals keep genomes readable, when they stay in range
            x = self._continuous(rng)
            short = math.floor(x * 1e4) / 1e4
            return short if self.low <= short < self.high else x
        count = (self.high - self.low) // self.step + 1
        if not self.log:
            return self.low + self.step * rng.randrange(count)
        k = round((self._continuous(rng) - self.low) / self.step)
        return self.low + self.step * min(k, count - 1)

    def largest(self) -> Value:
        if self.is_float:
            return self.high
        return self.low + (self.high - self.low) // self.step * self.step

    def _continuous(self, rng: random.Random) -> float:
        u = rng.random()
        if not self.log:
            return self.low + u * (self.high - self.low)
        return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))

    def contains(self, value: Value) -> bool:
        if self.off is not None and value == self.off and type(value) is type(self.off):
            return True
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.is_float:
            return self.low <= value < self.high
        return (
            isinstance(value, int)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def describe(self) -> str:
        text = (
            f"[{self.low}, {self.high})"
            if self.is_float
            else f"{self.low}..{self.high}" + (f" step {self.step}" if self.step > 1 else "")
        )
        return text + (f" or {self.off!r}" if self.off is not None else "")


Domain = Choice | Range


@dataclass(frozen=True)
class Violation:
    field: str
    value: Any
    message: str


@dataclass(frozen=True)
class Report:
    """What ``validate`` found: errors make a genome invalid; dead genes are warnings."""

    errors: tuple[Violation, ...]
    dead_genes: tuple[DeadGene, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    genome: dict[str, Domain]  # resolution, num_frames, frame_stride, pipeline_depth, num_blocks
    block: dict[str, Domain]  # one domain per Block gene
    # Non-local attention is N x N over N = T*H*W positions: beyond this the layer is refused.
    max_non_local_positions: int = field(default=4096)

    def sample(self, rng: random.Random, *, max_attempts: int = 1000) -> Genome:
        """A random valid genome; ``rng`` alone decides it (same seed, same genome)."""
        for _ in range(max_attempts):
            num_blocks = self.genome["num_blocks"].sample(rng)
            genome = Genome(
                **{k: self.genome[k].sample(rng) for k in GENOME_FIELDS},
                blocks=tuple(self.sample_block(rng) for _ in range(num_blocks)),
            )
            if not self.geometry_errors(genome):
                return genome
        raise ValueError(f"space {self.name!r}: no valid genome in {max_attempts} samples")

    def sample_block(self, rng: random.Random) -> Block:
        return Block(**{k: self.block[k].sample(rng) for k in BLOCK_FIELDS})

    def validate(self, genome: Genome) -> Report:
        """Every gene outside its domain, impossible geometry, and the dead genes."""
        errors = [
            Violation(k, getattr(genome, k), f"must be {d.describe()}")
            for k, d in self.genome.items()
            if k != "num_blocks" and not d.contains(getattr(genome, k))
        ]
        if not self.genome["num_blocks"].contains(len(genome.blocks)):
            errors.append(
                Violation(
                    "blocks",
                    len(genome.blocks),
                    f"the number of blocks must be {self.genome['num_blocks'].describe()}",
                )
            )
        for i, block in enumerate(genome.blocks):
            errors += [
                Violation(f"blocks[{i}].{k}", getattr(block, k), f"must be {d.describe()}")
                for k, d in self.block.items()
                if not d.contains(getattr(block, k))
            ]
        errors += self.geometry_errors(genome)
        return Report(tuple(errors), plan_network(genome).dead_genes)

    def geometry_errors(self, genome: Genome) -> list[Violation]:
        plan = plan_network(genome)
        errors = []
        for p in plan.instances:
            if min(p.out_shape) < 1:  # SAME padding keeps sizes >= 1; kept for other paddings
                errors.append(Violation(f"blocks[{p.block}]", p.out_shape, "a size reaches 0"))
            positions = p.out_shape[1] * p.out_shape[2] * p.out_shape[3]
            if p.non_local_width and positions > self.max_non_local_positions:
                errors.append(
                    Violation(
                        f"blocks[{p.block}].non_local_width",
                        p.non_local_width,
                        f"attends over T*H*W = {positions} positions, more than this space's "
                        f"max_non_local_positions = {self.max_non_local_positions}",
                    )
                )
        return errors

    def is_fixed(self, name: str) -> bool:
        domain = {**self.genome, **self.block}[name]
        return isinstance(domain, Choice) and len(domain.values) == 1


def load_space(path: str | Path) -> SearchSpace:
    """Read a space TOML file; every problem is named by file and key."""
    return space_from_dict(read_toml(path), source=str(path))


def space_from_dict(data: dict[str, Any], *, source: str = "space") -> SearchSpace:
    problems = [
        Problem(k, "unknown key")
        for k in data
        if k not in ("name", "description", "genome", "block", "max_non_local_positions")
    ]
    genome_spec = {**GENOME_FIELDS, "num_blocks": "int"}
    genome_domains = _read_table(data, "genome", genome_spec, problems)
    block_domains = _read_table(data, "block", BLOCK_FIELDS, problems)
    limit = data.get("max_non_local_positions", 4096)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        problems.append(
            Problem("max_non_local_positions", f"must be an integer >= 1, but got {limit!r}")
        )
    if problems:
        raise InputError(source, problems)
    return SearchSpace(
        str(data.get("name", Path(source).stem)),
        str(data.get("description", "")),
        genome_domains,
        block_domains,
        limit,
    )


def _read_table(
    data: dict[str, Any], table: str, spec: dict[str, str], problems: list[Problem]
) -> dict[str, Domain]:
    raw = data.get(table)
    if not isinstance(raw, dict):
        problems.append(Problem(f"[{table}]", "missing table"))
        return {}
    problems += [Problem(f"{table}.{k}", "unknown key") for k in raw if k not in spec]
    domains = {}
    for name, kind in spec.items():
        if name not in raw:
            problems.append(Problem(f"{table}.{name}", "missing"))
            continue
        try:
            domains[name] = _read_domain(name, kind, raw[name])
        except ValueError as exc:
            problems.append(Problem(f"{table}.{name}", str(exc)))
    return domains


def _read_domain(name: str, kind: str, raw: Any) -> Domain:
    gene = "num_repeats" if name == "num_blocks" else name
    if isinstance(raw, dict):
        return _read_range(gene, kind, raw)
    values = tuple(raw) if isinstance(raw, list) else (raw,)
    if not values:
        raise ValueError("must list at least one value")
    for value in values:
        if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(f"write floats with a decimal point, but got {value!r}")
        if (why := check_value(gene, kind, value)) is not None:
            raise ValueError(why)
    return Choice(values)


def _read_range(gene: str, kind: str, raw: dict[str, Any]) -> Range:
    unknown = set(raw) - {f.name for f in dataclasses.fields(Range)}
    if unknown:
        raise ValueError(f"unknown range keys {sorted(unknown)}")
    if kind not in ("int", "float") or "low" not in raw or "high" not in raw:
        raise ValueError(f"a range needs low and high and a numeric gene, but got {raw!r}")
    try:
        domain = Range(**raw)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    ends = [domain.low, domain.high] + ([domain.off] if domain.off is not None else [])
    if kind == "float" and not all(isinstance(v, float) for v in ends):
        raise ValueError(f"write floats with a decimal point, but got {raw!r}")
    for value in ends if kind == "int" else [domain.low, domain.off or 0.0]:
        if (why := check_value(gene, kind, value)) is not None:
            raise ValueError(why)
    if kind == "float" and domain.high > 1.0:
        raise ValueError(f"must stay below 1.0, but got high={domain.high!r}")
    if not isinstance(domain.step, int) or isinstance(domain.step, bool):
        raise ValueError(f"step must be an integer, but got {domain.step!r}")
    if not domain.low < domain.high or domain.step < 1 or not 0 <= domain.p_off <= 1:
        raise ValueError(f"needs low < high, step >= 1 and p_off in [0, 1], but got {raw!r}")
    if domain.log and domain.low <= 0:
        raise ValueError(f"a log range needs low > 0, but got {domain.low!r}")
    return domain
