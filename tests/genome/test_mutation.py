from __future__ import annotations

import collections
import dataclasses
import random

import pytest
from conftest import SPACES_DIR
from hypothesis import given, settings
from hypothesis import strategies as st

from tvnsearch import load_space, mutate
from tvnsearch.genome.mutation import OPERATORS
from tvnsearch.genome.plan import network_id
from tvnsearch.genome.space import Choice, SearchSpace, space_from_dict


def test_ten_thousand_chained_mutations_stay_valid(space) -> None:
    rng = random.Random(99)
    genome = space.sample(rng)
    used = collections.Counter()
    for _ in range(10_000):
        m = mutate(genome, space, rng)
        assert network_id(m.child) != network_id(genome), m.description
        assert space.validate(m.child).valid, (m.description, space.validate(m.child).errors)
        used[m.operator] += 1
        genome = m.child
    # pipeline_depth is a single choice in every shipped space but the streaming one
    fixed = set() if space.name == "tiny_streaming" else {"pipeline_depth"}
    assert set(used) == set(OPERATORS) - fixed


def test_same_seed_same_mutations(tiny_space) -> None:
    def chain(seed: int) -> list[str]:
        rng = random.Random(seed)
        g, out = tiny_space.sample(rng), []
        for _ in range(50):
            m = mutate(g, tiny_space, rng)
            out.append(m.description)
            g = m.child
        return out

    assert chain(5) == chain(5)
    assert chain(5) != chain(6)


def test_a_mutation_changes_exactly_what_it_says(tiny_space) -> None:
    rng = random.Random(11)
    for _ in range(300):
        parent = tiny_space.sample(rng)
        m = mutate(parent, tiny_space, rng)
        if m.operator in ("layer_param", "layer_type", "repeats"):
            i = int(m.description.split("]")[0].split("[")[1])
            field = m.description.split(".")[1].split(":")[0]
            diffs = [
                (j, f.name)
                for j, (a, b) in enumerate(zip(parent.blocks, m.child.blocks, strict=True))
                for f in dataclasses.fields(a)
                if getattr(a, f.name) != getattr(b, f.name)
            ]
            assert diffs == [(i, field)]
        elif m.operator == "add_block":
            assert len(m.child.blocks) == len(parent.blocks) + 1
        elif m.operator == "remove_block":
            assert len(m.child.blocks) == len(parent.blocks) - 1
        else:
            assert getattr(m.child, m.operator) != getattr(parent, m.operator)
            assert m.child.blocks == parent.blocks


def test_pipeline_depth_mutates_when_the_space_allows_it(tiny_space) -> None:
    space = dataclasses.replace(
        tiny_space, genome={**tiny_space.genome, "pipeline_depth": Choice((0, 1, 2, 4))}
    )
    rng = random.Random(0)
    g = space.sample(rng)
    ops = {mutate(g, space, rng).operator for _ in range(300)}
    assert "pipeline_depth" in ops


def test_block_count_limits_are_respected(tiny_space) -> None:
    rng = random.Random(3)
    g = tiny_space.sample(rng)
    for _ in range(2000):
        g = mutate(g, tiny_space, rng).child
        assert 1 <= len(g.blocks) <= 4


def frozen_tiny_space(*, free: tuple[str, ...] = ()) -> SearchSpace:
    """The tiny space with every gene but ``free`` fixed to one value (its lowest, or off)."""
    import tomllib

    data = tomllib.loads((SPACES_DIR / "tiny.toml").read_text())
    for table in ("genome", "block"):
        for key, value in data[table].items():
            if key not in free:
                one = value.get("off", value["low"]) if isinstance(value, dict) else value[0]
                data[table][key] = [one]
    return space_from_dict(data)


def test_a_space_with_nothing_to_mutate_says_so() -> None:
    frozen = frozen_tiny_space()
    g = frozen.sample(random.Random(0))
    with pytest.raises(ValueError, match="no valid mutation"):
        mutate(g, frozen, random.Random(0))


def test_a_space_whose_free_genes_are_all_dead_says_so() -> None:
    # One frame: no temporal op runs, whatever its genes say.
    temporal = ("temporal_type", "temporal_kernel", "temporal_stride", "temporal_act")
    space = frozen_tiny_space(free=temporal)
    g = space.sample(random.Random(0))
    assert g.num_frames == 1
    with pytest.raises(ValueError, match="changes its network after 200 attempts"):
        mutate(g, space, random.Random(0))


def test_operators_often_change_only_dead_genes_and_mutate_draws_those_again(space) -> None:
    rng = random.Random(17)
    num_parents, num_raw_dead = 400, 0
    for _ in range(num_parents):
        parent = space.sample(rng)
        raw = OPERATORS[rng.choice(list(OPERATORS))](parent, space, rng)
        num_raw_dead += raw is not None and network_id(raw[0]) == network_id(parent)
        assert network_id(mutate(parent, space, rng).child) != network_id(parent)
    print(f"{space.name}: {num_raw_dead / num_parents:.1%} of operator draws change no network")
    assert num_raw_dead >= num_parents // 50


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    name=st.sampled_from(["tvn", "tvn_mobile", "tiny", "tiny_streaming"]),
    steps=st.integers(1, 20),
)
def test_mutation_chains_from_any_seed_stay_valid(seed: int, name: str, steps: int) -> None:
    space = load_space(SPACES_DIR / f"{name}.toml")
    rng = random.Random(seed)
    g = space.sample(rng)
    for _ in range(steps):
        g = mutate(g, space, rng).child
    assert space.validate(g).valid
