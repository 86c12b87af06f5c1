from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from pathlib import Path

import pytest
from conftest import SPACES_DIR

from tvnsearch.cli.main import main
from tvnsearch.errors import InputError
from tvnsearch.genome.space import load_space
from tvnsearch.measure.constraints import Constraints
from tvnsearch.search.recipe import (
    TABLES,
    ProfilerSection,
    load_recipe,
    recipe_from_dict,
    recipe_toml,
)
from tvnsearch.search.runs import check_cache_size, create_run, load_run, new_strategy

ROOT = Path(__file__).resolve().parents[2]
RECIPE = """
[search]
space = "spaces/tiny.toml"
budget = 10
[search.options]
initial_size = 4
[data]
path = "data/synth"
[train]
iterations = 20
[constraints]
max_params = 100000
"""


def write_recipe(folder: Path, text: str = RECIPE) -> Path:
    path = folder / "runners" / "r.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_recipe_reads_into_typed_sections_with_paths_beside_it(tmp_path) -> None:
    config = load_recipe(write_recipe(tmp_path))
    assert config.search.budget == 10 and config.search.options == {"initial_size": 4}
    assert config.search.space == str(tmp_path / "runners" / "spaces" / "tiny.toml")
    assert config.data.path == str(tmp_path / "runners" / "data" / "synth")
    assert config.train.iterations == 20 and config.train.batch_size == 16  # default kept
    assert config.constraints == Constraints(max_params=100_000)
    assert config.resources.num_workers == 1 and config.resources.address is None


def test_overrides_are_typed_and_override_paths_resolve_here(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    overrides = [
        "train.iterations=50",
        "train.learning_rate=1e-3",
        "search.options.tournament_size=3",
        "constraints.max_cpu_ms=12",
        "data.path=elsewhere",
        "resources.address=auto",
    ]
    config = load_recipe(write_recipe(tmp_path), overrides)
    assert config.train.iterations == 50 and config.train.learning_rate == 1e-3
    assert config.search.options == {"initial_size": 4, "tournament_size": 3}
    assert config.constraints.max_cpu_ms == 12
    assert config.data.path == str(tmp_path / "elsewhere")
    assert config.resources.address == "auto"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.iteratons=5", "train.iteratons: unknown key"),
        ("nonsense=5", "must be section.key=value"),
        ("extra.key=5", "extra.key: unknown key"),
        ("train.iterations=many", "train.iterations: must be int, but got 'many'"),
        ("train.flip=1", "train.flip: must be bool"),
        ("resources.num_workers=0", "resources.num_workers: must be >= 1"),
        ("constraints.max_cpu_ms=-1", "max_cpu_ms: must be > 0"),
        ("train.rungs=0", "train.rungs: must be >= 1"),
        ("train.iterations=0", r"train\.iterations: must be >= 1, but got 0"),
        ("train.batch_size=0", r"train\.batch_size: must be >= 1"),
        ("train.learning_rate=-1", r"train\.learning_rate: must be > 0, but got -1"),
        ("train.learning_rate=nan", r"train\.learning_rate: must be > 0, but got nan"),
        ("train.warmup_fraction=1", r"train\.warmup_fraction: must be >= 0 and < 1"),
        ('train.device="tpu"', r"train\.device: must be cpu, cuda or cuda:N, but got 'tpu'"),
        ("data.cache_size=0", r"data\.cache_size: must be >= 8"),
        ('data.cache_codec="png"', r"data\.cache_codec: must be one of \['jpeg', 'h264', 'raw'\]"),
        ("data.cache_quality=101", r"data\.cache_quality: must be >= 1 and <= 100"),
        ("data.cache_fps=0", r"data\.cache_fps: must be > 0"),
        ("data.cache_budget_gb=-2", r"data\.cache_budget_gb: must be > 0"),
        ("resources.cpus_per_worker=0", r"resources\.cpus_per_worker: must be > 0"),
        ("resources.cpus_per_worker=-1", r"resources\.cpus_per_worker: must be > 0"),
        ("search.num_trained=0", r"search\.num_trained: must be >= 1"),
        ('search.name="../x"', r"search\.name: must be a plain folder name .* but got '\.\./x'"),
        ("train.reduction_factor=1", "train.reduction_factor: must be > 1"),
    ],
)
def test_a_bad_override_is_named(tmp_path, override: str, named: str) -> None:
    with pytest.raises(InputError, match=named):
        load_recipe(write_recipe(tmp_path), [override])


def test_every_problem_of_a_recipe_file_is_named(tmp_path) -> None:
    text = RECIPE.replace("budget = 10", 'budget = "ten"\ncolour = 1') + "\n[extra]\n"
    with pytest.raises(InputError) as info:
        load_recipe(write_recipe(tmp_path, text))
    lines = info.value.lines()
    assert any("search.budget: must be int" in line for line in lines)
    assert any("search.colour: unknown key" in line for line in lines)
    assert any("extra: unknown table" in line for line in lines)
    assert all(line.startswith(str(tmp_path / "runners" / "r.toml")) for line in lines)


def test_required_fields_are_named() -> None:
    with pytest.raises(InputError, match=r"search.space: is required"):
        recipe_from_dict({"search": {"budget": 3}, "data": {"path": "x"}}, source="r.toml")


def test_the_frozen_copy_reads_back_to_the_same_config(tmp_path) -> None:
    config = load_recipe(write_recipe(tmp_path), ["search.options.aging=false"])
    text = recipe_toml(config)
    tomllib.loads(text)
    frozen = tmp_path / "frozen.toml"
    frozen.write_text(text)
    assert load_recipe(frozen) == config


@pytest.mark.parametrize("recipe", sorted((ROOT / "runners").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_reads_and_is_sane(recipe: Path) -> None:
    config = load_recipe(recipe)
    space = load_space(config.search.space)
    check_cache_size(config, space, source=str(recipe))
    new_strategy(config, space, source=str(recipe))


@pytest.mark.parametrize(
    ("strategy", "ok"), [("evolution", True), ("random", True), ("tpe", False)]
)
def test_multi_fidelity_needs_a_strategy_that_ranks_stopped_candidates_apart(
    tmp_path, strategy: str, ok: bool
) -> None:
    overrides = ["train.rungs=3", f'search.strategy="{strategy}"', "search.options={}"]
    config = load_recipe(write_recipe(tmp_path), overrides)
    space = load_space(SPACES_DIR / "tiny.toml")
    if ok:
        assert new_strategy(config, space, source="r.toml").multi_fidelity
        return
    with pytest.raises(
        InputError, match=r"train\.rungs: multi-fidelity .* one of \['evolution', 'random'\]"
    ):
        new_strategy(config, space, source="r.toml")


def test_a_frame_cache_smaller_than_the_space_s_clips_is_refused_naming_both(tmp_path) -> None:
    recipe = ROOT / "runners" / "paper.toml"
    with pytest.raises(InputError, match=r"data\.cache_size: 128 px is below the largest") as info:
        overrides = ["data.cache_size=128", f"data.path={json.dumps(str(tmp_path))}"]
        create_run(recipe, overrides, results_dir=tmp_path / "results")
    assert "320 px" in str(info.value) and not (tmp_path / "results").exists()


def test_the_command_line_names_a_bad_key_and_exits_2(tmp_path, capsys) -> None:
    code = main(["search", str(write_recipe(tmp_path)), "--set", "train.iters=3"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tvnsearch search: --set: train.iters: unknown key"]


def test_status_of_a_folder_that_is_no_run_exits_2(tmp_path, capsys) -> None:
    assert main(["status", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


# Numeric settings without LIMITS, each with the reason it takes any value. A new numeric field
# needs LIMITS or a line here, or the walk below fails.
UNLIMITED = {
    "search.seed": "a seed: the strategies draw from random.Random(f'{seed}:...'), any integer",
    "data.split_seed": "a seed: the split draws from random.Random(seed), any integer",
}


def recipe_fields() -> list[tuple[str, type, dataclasses.Field]]:
    """Every field of every recipe table: a field added to a table is walked too."""
    return [
        (f"{name}.{f.name}", cls, f)
        for name, cls in TABLES.items()
        for f in dataclasses.fields(cls)
    ]


def kinds(cls: type, field: dataclasses.Field) -> set[type]:
    hint = typing.get_type_hints(cls)[field.name]
    union = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return {typing.get_origin(a) or a for a in union} - {type(None)}


def is_numeric(cls: type, field: dataclasses.Field) -> bool:
    return bool(kinds(cls, field) & {int, float})


def out_of_range(condition: str) -> object:
    """The value just beyond one ``op bound`` condition of ``LIMITS``."""
    op, text = condition.split()
    bound = int(text) if text.lstrip("-").isdigit() else float(text)
    return {">=": bound - 1, ">": bound, "<=": bound + 1, "<": bound}[op]


def override(value: object) -> str:
    """``value`` as ``--set`` parses it (a TOML value, else the text itself)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return json.dumps(value) if isinstance(value, str | list) else repr(value).lower()


def wrong_type(kinds_: set[type]) -> object:
    """A value of none of ``kinds_``: text where a number or flag is wanted, else a number."""
    return 3 if kinds_ & {str, dict} else "many"


def refused(capsys, tmp_path: Path, key: str, value: object) -> list[str]:
    """``tvnsearch search`` with ``--set key=value``: its exit code must be 2, nothing may be
    written under ``--results``; the lines it printed."""
    results = tmp_path / "results"
    argv = ["search", str(write_recipe(tmp_path)), "--results", str(results)]
    code = main([*argv, "--set", f"{key}={override(value)}"])
    err = capsys.readouterr().err
    assert code == 2 and not results.exists(), (key, value, err)
    assert "Traceback" not in err
    return err.splitlines()


@pytest.mark.parametrize(
    ("key", "cls", "field"), [pytest.param(*f, id=f[0]) for f in recipe_fields()]
)
def test_every_recipe_setting_names_a_wrongly_typed_value(tmp_path, capsys, key, cls, field):
    value = wrong_type(kinds(cls, field))
    lines = refused(capsys, tmp_path, key, value)
    assert any(f": {key}: must be " in line and repr(value) in line for line in lines), lines


def limited_cases() -> list[tuple[str, object, str]]:
    cases = []
    for key, cls, field in recipe_fields():
        limits = cls.LIMITS.get(field.name)
        if limits is None:
            continue
        conditions = (limits,) if isinstance(limits, str) else limits
        cases += [(key, out_of_range(c), c) for c in conditions]
        if int not in kinds(cls, field):  # NaN compares false with every bound
            cases.append((key, math.nan, conditions[0]))
    return cases


@pytest.mark.parametrize(("key", "value", "condition"), limited_cases())
def test_every_limit_of_a_recipe_setting_is_refused_naming_the_key_and_range(
    tmp_path, capsys, key, value, condition
) -> None:
    lines = refused(capsys, tmp_path, key, value)
    assert any(f": {key}: must be " in line and condition in line for line in lines), lines


def test_every_numeric_setting_has_limits_or_a_reason_to_take_any_value() -> None:
    numeric = {key for key, cls, f in recipe_fields() if is_numeric(cls, f)}
    limited = {key for key, cls, f in recipe_fields() if f.name in cls.LIMITS}
    assert limited <= numeric  # LIMITS name real numeric fields
    assert numeric - limited == set(UNLIMITED), "add LIMITS, or say here why any value is fine"


def test_a_run_recorded_before_compressed_frames_goes_on_with_raw_frames(tmp_path) -> None:
    recipe = write_recipe(tmp_path)
    frozen = load_recipe(recipe)
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, text in ((old, RECIPE), (new, recipe_toml(frozen))):
        folder.mkdir()
        (folder / "recipe.toml").write_text(text.replace("spaces/", f"{tmp_path}/runners/spaces/"))
    before, now = load_run(old).data, load_run(new).data
    assert (before.cache_codec, before.cache_fps) == ("raw", None)  # as its frames were kept
    assert (now.cache_codec, now.cache_fps) == ("jpeg", 30.0)
    assert before.sized(64).frame_cache().storage != now.sized(64).frame_cache().storage


def test_the_profiler_table_names_the_runtime_and_the_node_to_measure_on(tmp_path) -> None:
    text = RECIPE + '[resources]\naddress = "auto"\n[profiler]\nruntime = "onnxruntime"\n'
    text += "resources = { jetson = 1, big_memory = 0.5 }\n"
    config = load_recipe(write_recipe(tmp_path, text))
    assert config.profiler == ProfilerSection("onnxruntime", {"jetson": 1, "big_memory": 0.5})
    frozen = recipe_from_dict(tomllib.loads(recipe_toml(config)), source="frozen")
    assert frozen == config
    overridden = load_recipe(
        write_recipe(tmp_path),
        ["resources.address=auto", "profiler.runtime=torchscript", "profiler.resources.phone=2"],
    )
    assert overridden.profiler == ProfilerSection("torchscript", {"phone": 2})
    assert load_recipe(write_recipe(tmp_path)).profiler == ProfilerSection()  # eager, anywhere


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["profiler.runtime=tensorrt"], "profiler.runtime: must be one of ['eager', "),
        (["profiler.resources.jetson=1"], "profiler.resources: places the profilers on a node "),
        (
            ["resources.address=auto", "profiler.resources.jetson=0"],
            "profiler.resources.jetson: must be a number > 0, but got 0",
        ),
        (
            ["resources.address=auto", "profiler.resources.jetson=true"],
            "profiler.resources.jetson: must be a number > 0, but got True",
        ),
        (
            ["resources.address=auto", "profiler.resources.GPU=1"],
            "profiler.resources.GPU: is Ray's own: set resources.profiler_threads",
        ),
        (
            ["profiler.runtime=executorch", "constraints.max_gpu_ms=5"],
            "profiler.runtime: executorch does not run on cuda, but max_gpu_ms is set",
        ),
        (
            ["profiler.command=adb shell bench {model}", "profiler.runtime=onnxruntime"],
            "profiler.command: cannot be filled in (KeyError('model'))",
        ),
        (
            ["profiler.command=ssh board bench {file}"],
            "profiler.command: times a file: needs profiler.runtime to be one of ['torchscript'",
        ),
    ],
)
def test_a_bad_profiler_setting_is_named(tmp_path, overrides, named) -> None:
    with pytest.raises(InputError) as caught:
        load_recipe(write_recipe(tmp_path), overrides)
    assert named in str(caught.value)
