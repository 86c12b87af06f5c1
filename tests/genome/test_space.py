from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from conftest import SPACES_DIR
from hypothesis import given, settings
from hypothesis import strategies as st

from tvnsearch import InputError, build_model, load_space, published_genome
from tvnsearch.genome.genes import BLOCK_FIELDS, check_value
from tvnsearch.genome.space import Choice, Range, space_from_dict

TINY_TOML = (SPACES_DIR / "tiny.toml").read_text()


def test_thousand_samples_are_valid_and_build(space) -> None:
    rng = random.Random(2024)
    genomes = [space.sample(rng) for _ in range(1000)]
    for g in genomes:
        assert space.validate(g).valid, space.validate(g).errors
    if space.name.startswith("tiny"):  # small enough to run
        for g in genomes:
            model = build_model(g, 5).eval()
            with torch.inference_mode():
                y = model(torch.randn(1, 3, g.num_frames, g.resolution, g.resolution))
            assert y.shape == (1, 5) and torch.isfinite(y).all()
    else:
        with torch.device("meta"):  # the paper's space reaches 100M+ parameter networks
            for g in genomes:
                build_model(g, 5)


def test_same_seed_same_genomes(space) -> None:
    first = [space.sample(random.Random(s)).id for s in range(20)]
    again = [space.sample(random.Random(s)).id for s in range(20)]
    assert first == again and len(set(first)) == 20


def test_published_genomes_lie_in_their_spaces() -> None:
    tvn = load_space(SPACES_DIR / "tvn.toml")
    mobile = load_space(SPACES_DIR / "tvn_mobile.toml")
    for name in ("tvn1", "tvn2", "tvn3", "tvn4"):
        assert tvn.validate(published_genome(name)).valid
    for name in ("tvn_mobile_1", "tvn_mobile_2"):
        assert mobile.validate(published_genome(name)).valid
        assert not tvn.validate(published_genome(name)).valid  # hard-swish, inverted bottleneck


def test_validation_names_every_violation(tiny_space) -> None:
    g = published_genome("tvn3")
    errors = {e.field: e for e in tiny_space.validate(g).errors}
    assert errors["resolution"].value == 160 and "32..64 step 16" in errors["resolution"].message
    assert errors["blocks[0].temporal_kernel"].value == 5
    assert {
        "blocks[1].num_filters",
        "blocks[2].num_filters",
        "blocks[3].num_filters",
        "blocks[3].temporal_stride",
        "blocks[1].num_repeats",
    } <= set(errors)
    assert len(errors) == 13


def test_too_many_blocks_is_named(tiny_space) -> None:
    g = tiny_space.sample(random.Random(0))
    g = dataclasses.replace(g, blocks=g.blocks * 5)
    assert "blocks" in {e.field for e in tiny_space.validate(g).errors}


def test_non_local_over_too_many_positions_is_impossible(tiny_space) -> None:
    g = tiny_space.sample(random.Random(0))
    block = dataclasses.replace(
        g.blocks[0], non_local_width=8, spatial_kernel=1, temporal_kernel=1, num_repeats=1
    )
    big = dataclasses.replace(g, resolution=64, num_frames=8, blocks=(block,))
    errors = tiny_space.validate(big).errors
    assert [e.field for e in errors] == ["blocks[0].non_local_width"]
    assert "32768 positions" in errors[0].message


def test_dead_genes_are_flagged() -> None:
    space = load_space(SPACES_DIR / "tvn.toml")
    dead = {d.field for d in space.validate(published_genome("tvn1")).dead_genes}
    # SEMANTICS: in TVN-1 the frame count reaches 1 in block 0, so later temporal genes are dead.
    for b in (1, 2, 3):
        assert f"blocks[{b}].temporal_type" in dead and f"blocks[{b}].temporal_kernel" in dead
    assert "blocks[0].temporal_type" not in dead


def _space_dict() -> dict:
    import tomllib

    return tomllib.loads(TINY_TOML)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["block"].pop("skip"), "block.skip: missing"),
        (lambda d: d["block"].update(dilation=[1]), "block.dilation: unknown key"),
        (
            lambda d: d["genome"].update(resolution={"low": 96, "high": 32}),
            "genome.resolution: needs",
        ),
        (
            lambda d: d["block"].update(spatial_type=["std", "conv"]),
            "block.spatial_type: must be one",
        ),
        (
            lambda d: d["block"].update(spatial_kernel={"low": 0, "high": 3}),
            "block.spatial_kernel: must be >= 1",
        ),
        (
            lambda d: d["block"].update(squeeze_ratio={"low": 0.0, "high": 2.0}),
            "block.squeeze_ratio: must stay below 1.0",
        ),
        (
            lambda d: d["block"].update(num_filters={"low": 8, "high": 64, "stride": 2}),
            "block.num_filters: unknown range keys",
        ),
        (lambda d: d.pop("genome"), "[genome]: missing table"),
        (lambda d: d.update(max_non_local_positions=0), "max_non_local_positions: must be"),
    ],
)
def test_bad_space_files_name_the_key(edit, message: str) -> None:
    data = _space_dict()
    edit(data)
    with pytest.raises(InputError) as err:
        space_from_dict(data, source="s.toml")
    assert f"s.toml: {message}" in str(err.value)


def test_bad_toml_names_the_file(tmp_path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[genome\n")
    with pytest.raises(InputError, match=r"broken\.toml: not valid TOML"):
        load_space(path)


def test_ranges_sample_inside_themselves() -> None:
    rng = random.Random(0)
    for domain in (
        Range(32, 2048, step=4, log=True),
        Range(1, 10, step=4),
        Range(0.0, 1.0, off=0.0),
        Range(4, 1024, log=True, off=0, p_off=0.9),
    ):
        assert all(domain.contains(domain.sample(rng)) for _ in range(2000))
    assert not Range(1, 10, step=4).contains(10)
    assert not Choice((True,)).contains(1)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    name=st.sampled_from(["tvn", "tvn_mobile", "tiny", "tiny_streaming"]),
)
def test_any_seed_samples_a_valid_genome(seed: int, name: str) -> None:
    space = load_space(SPACES_DIR / f"{name}.toml")
    g = space.sample(random.Random(seed))
    assert space.validate(g).valid
    assert space.sample(random.Random(seed)) == g


def test_integer_ranges_are_uniform_over_their_grid() -> None:
    rng = random.Random(5)
    for domain, values in (
        (Range(1, 8), range(1, 9)),
        (Range(32, 320, step=32), range(32, 321, 32)),
    ):
        counts = {v: 0 for v in values}
        for _ in range(40_000):
            counts[domain.sample(rng)] += 1
        expected = 40_000 / len(counts)
        assert all(abs(c - expected) < 0.1 * expected for c in counts.values()), counts


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    field=st.sampled_from(sorted(BLOCK_FIELDS)),
    value=st.one_of(
        st.integers(0, 3000),
        st.booleans(),
        st.floats(0, 0.999),
        st.sampled_from(["std", "depth", "maxpool", "avgpool", "1d", "relu", "swish", "hswish"]),
    ),
)
def test_validation_flags_a_gene_exactly_when_it_leaves_its_domain(seed, field, value) -> None:
    space = load_space(SPACES_DIR / "tiny.toml")
    g = space.sample(random.Random(seed))
    if check_value(field, BLOCK_FIELDS[field], value) is not None:
        return  # not a gene value at all: the JSON boundary refuses it before any space
    i = seed % len(g.blocks)
    block = dataclasses.replace(g.blocks[i], **{field: value})
    changed = dataclasses.replace(g, blocks=(*g.blocks[:i], block, *g.blocks[i + 1 :]))
    geometry = space.geometry_errors(changed)  # e.g. a valid non-local width on a large map
    flagged = {e.field for e in space.validate(changed).errors if e not in geometry}
    assert (f"blocks[{i}].{field}" in flagged) == (not space.block[field].contains(value))
