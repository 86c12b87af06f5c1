from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from tvnsearch import InputError, genome_from_dict, load_genome, published_genome
from tvnsearch.genome.genes import SCHEMA


def test_json_round_trip_is_exact(space) -> None:
    rng = random.Random(7)
    for _ in range(200):
        g = space.sample(rng)
        back = genome_from_dict(json.loads(g.to_json()))
        assert back == g
        assert back.canonical_json == g.canonical_json and back.id == g.id


def test_round_trip_through_a_file(tmp_path, tiny_space) -> None:
    g = tiny_space.sample(random.Random(3))
    path = tmp_path / "g.json"
    path.write_text(g.to_json())
    assert load_genome(path) == g


def test_id_is_a_content_hash() -> None:
    g = published_genome("tvn1")
    assert g.id == "217ec0e81a8b9946"  # pinned: the same on every machine and in every process
    changed = genome_from_dict({**g.to_dict(), "frame_stride": 5})
    assert changed.id != g.id


def test_ids_are_stable_across_processes(tiny_space) -> None:
    genomes = [tiny_space.sample(random.Random(seed)) for seed in range(5)]
    code = (
        "import json, sys, random\n"
        "from tvnsearch import load_space\n"
        "s = load_space(sys.argv[1])\n"
        "print(json.dumps([s.sample(random.Random(i)).id for i in range(5)]))\n"
    )
    env_seeds = ["0", "12345"]  # PYTHONHASHSEED must not matter
    for seed in env_seeds:
        out = subprocess.run(
            [sys.executable, "-c", code, str(ROOT / "search_spaces/tiny.toml")],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        )
        assert json.loads(out.stdout) == [g.id for g in genomes]


def _valid_dict() -> dict:
    return published_genome("tvn3").to_dict()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("num_frames"), "num_frames: missing"),
        (lambda d: d.update(colour="red"), "colour: unknown key"),
        (lambda d: d.update(resolution="big"), "resolution: must be an integer"),
        (lambda d: d.update(resolution=True), "resolution: must be an integer"),
        (
            lambda d: d["blocks"][1].update(spatial_kernel=0),
            "blocks[1].spatial_kernel: must be >= 1",
        ),
        (
            lambda d: d["blocks"][2].update(spatial_type="conv"),
            "blocks[2].spatial_type: must be one",
        ),
        (lambda d: d["blocks"][0].update(squeeze_ratio=1.5), "blocks[0].squeeze_ratio: must be a"),
        (lambda d: d["blocks"][0].update(skip=1), "blocks[0].skip: must be true or false"),
        (lambda d: d["blocks"][3].pop("act"), "blocks[3].act: missing"),
        (lambda d: d.update(blocks=[]), "blocks: must be a non-empty list"),
        (lambda d: d.update(schema="other/9"), "schema: must be"),
    ],
)
def test_errors_name_the_field(mutate, field: str) -> None:
    data = _valid_dict()
    mutate(data)
    with pytest.raises(InputError) as err:
        genome_from_dict(data, source="g.json")
    assert any(line.startswith(f"g.json: {field}") for line in err.value.lines()), err.value


def test_every_problem_is_reported_at_once() -> None:
    data = _valid_dict()
    data["resolution"] = -1
    data["blocks"][0]["num_filters"] = 0
    data["blocks"][1]["act"] = "gelu"
    with pytest.raises(InputError) as err:
        genome_from_dict(data)
    assert len(err.value.problems) == 3


def test_malformed_files_name_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=r"bad\.json: not valid JSON"):
        load_genome(bad)
    with pytest.raises(InputError, match=r"missing\.json: cannot read"):
        load_genome(tmp_path / "missing.json")
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match="must be a JSON object"):
        load_genome(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.floats() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(path=st.lists(st.integers(0, 30), min_size=1, max_size=3), value=json_values)
def test_any_corruption_parses_or_raises_input_error(path: list[int], value) -> None:
    """Replacing any value anywhere either still parses or gives InputError, nothing else."""
    data = _valid_dict()
    node = data
    for step in path[:-1]:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        nxt = node[keys[step % len(keys)]]
        if not isinstance(nxt, dict | list) or not nxt:
            break
        node = nxt
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    node[keys[path[-1] % len(keys)]] = value
    try:
        g = genome_from_dict(data)
    except InputError:
        return
    assert genome_from_dict(json.loads(g.to_json())) == g


def test_schema_constant_is_in_the_json() -> None:
    assert json.loads(published_genome("tvn1").to_json())["schema"] == SCHEMA
