"""Every subcommand against a table of bad inputs: a missing, empty or binary file, a folder where
a file is wanted, a value of the wrong type, a number out of range for every numeric flag, a
destination that cannot be written, and foreign run folders.

Every case must end in exit 2 (argparse's own usage errors exit 2 too) or, where the input is
fine after all, 0; with no traceback and no exception escaping ``main``; with a line that starts
``tvnsearch <command>`` and names the file or field; and with nothing half-written: the
destination not made, no new file anywhere in the case's folder, no hidden ``.*.tmp`` file.
``search`` and ``resume`` only get inputs refused before Ray starts (a case that starts Ray
fails). A few cases run as a real process, for the exit code end to end.

Placeholders in a case: ``{i}`` the case's own folder of inputs (made anew for each case),
``{g}`` a genome JSON there, ``{s}`` the tiny space, ``{d}`` a small synthetic dataset, ``{r}``
the session's searched run (read only), and the foreign run folders of ``FOREIGN``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SPACES_DIR
from genomes import small_genome

from tvnsearch.cli.main import _parser, main
from tvnsearch.data.synth import SynthConfig, write_synth
from tvnsearch.inspect.journal import JOURNAL_FILE
from tvnsearch.inspect.report import REPORT_FILE
from tvnsearch.search.recipe import recipe_from_dict, recipe_toml

UNWRITABLE = "/proc/tvnsearch-fuzz"  # no one may create files in /proc, root included
RECIPE = """
[search]
space = "{s}"
budget = 4
[data]
path = "{data}"
cache_dir = "{i}/frames"
cache_size = 64
[train]
iterations = 2
batch_size = 2
"""


@dataclass(frozen=True)
class Case:
    argv: str  # with placeholders, split as a shell would
    named: str | None  # what the line must name (a path or a field); None: no line needed
    exit: int | None = 2  # None: 0 or 2 (a damaged input that a command may go on without)
    absent: str | None = None  # a destination that must not exist afterwards


def cases_of(command: str, table: list[tuple[str, str | None]], **common: object) -> list:
    return [
        pytest.param(Case(f"{command} {argv}", named, **common), id=f"{command} {argv}")
        for argv, named in table
    ]


# What every command that reads a file meets: (arguments, what the error names).
def file_cases(template: str) -> list[tuple[str, str]]:
    """``template`` with each bad file for ``{f}``."""
    files = ["{i}/missing.json", "{i}/empty.json", "{i}/binary", "{i}/folder", "{i}/list.json"]
    return [(template.replace("{f}", f), f) for f in files]


def range_cases(template: str, flag: str, values: list[str]) -> list[tuple[str, str]]:
    return [(f"{template} {flag} {shlex.quote(v)}", flag) for v in values]


SHOW = [
    *file_cases("{f}"),
    *range_cases("{g}", "--num-classes", ["0", "-1", "many", "1.5", "100001", ""]),
]
SAMPLE = [
    *file_cases("--space {f}"),
    *range_cases("--space {s}", "--seed", ["many", "1.5"]),
    ("--space {s} --out {i}/file/sub.json", "{i}/file/sub.json"),
    ("--space {s} --out {i}/folder", "{i}/folder"),
    (f"--space {{s}} --out {UNWRITABLE}.json", f"{UNWRITABLE}.json"),
]
VALIDATE = [*file_cases("{f} --space {s}"), *file_cases("{g} --space {f}")]
PROFILE = [
    *file_cases("{f}"),
    *range_cases("{g}", "--threads", ["0", "-1", "many", "999"]),
    *range_cases("{g}", "--runs", ["0", "many", "10001"]),
    *range_cases("{g}", "--warmup", ["0", "many", "1001"]),
    *range_cases("{g}", "--min-seconds", ["-1", "nan", "inf", "601", "1e9", "many"]),
    *range_cases("{g}", "--num-classes", ["0", "100001"]),
    ("{g} --device tpu", "device"),
    ("{g} --device cuda:99", "device"),
]
TRAIN = [
    *[(f"{argv} --data {{d}}", named) for argv, named in file_cases("{f}")],
    ("{g} --data {i}/missing", "{i}/missing"),
    ("{g} --data {i}/binary", "{i}/binary"),
    ("{g} --data {i}/empty.json", "{i}/empty.json"),
    ("{g} --data {i}/folder", "{i}/folder"),
    ("{g}", "--data"),
    *range_cases("{g} --data {d}", "--iterations", ["0", "-1", "many", "1.5"]),
    *range_cases("{g} --data {d}", "--batch-size", ["0", "4097"]),
    *range_cases("{g} --data {d}", "--seed", ["-1", str(2**64)]),
    *range_cases("{g} --data {d}", "--num-workers", ["-2", "257"]),  # -1: as many as help
    *range_cases("{g} --data {d}", "--cache-size", ["0", "7", "4097"]),
    ("{g} --data {d} --device tpu", "--device"),
    ("{g} --data {d} --format onnx", "--format"),
    ("{g} --data {d} --out {i}/new --format pdf", "--format"),
    ("{g} --data {d} --out {i}/folder", "{i}/folder"),
    ("{g} --data {d} --cache-dir {i}/file/sub", "{i}/file/sub"),
    (f"{{g}} --data {{d}} --cache-dir {UNWRITABLE}", UNWRITABLE),
]
EVALUATE = [  # an export folder is wanted
    ("{i}/missing", "{i}/missing"),
    ("{i}/binary", "{i}/binary"),
    ("{i}/folder", "{i}/folder/genome.json"),
    ("{i}/full", "{i}/full/genome.json"),
    *range_cases("{i}/folder", "--clips", ["0", "101", "many"]),
    *range_cases("{i}/folder", "--batch-size", ["0", "4097"]),
    ("{i}/folder --split nope", "--split"),
    ("{i}/folder --device tpu", "--device"),
]
TRAIN_OUT = [  # refused before training starts
    ("{g} --data {d} --iterations 1 --out {i}/file/sub", "{i}/file/sub"),
    (f"{{g}} --data {{d}} --iterations 1 --out {UNWRITABLE}", UNWRITABLE),
]
SYNTH = [
    ("--out {i}/file/sub", "{i}/file/sub"),
    (f"--out {UNWRITABLE}", UNWRITABLE),
    ("--out {i}/file", "{i}/file"),
    ("--out {i}/full", "{i}/full"),
    ("--out {i}/new --task nope", "task"),
    *range_cases("--out {i}/new", "--seed", ["-1", "many"]),
    *range_cases("--out {i}/new --task disc", "--num-videos", ["0", "many"]),
    ("--out {i}/new --task disc --num-videos 7", "num_videos"),
    ("--out {i}/new --task disc --num-videos 100008", "num_videos"),
    ("--out {i}/new --task disc --num-videos 18 --size 15", "size"),
    ("--out {i}/new --task disc --num-videos 18 --size 257", "size"),
    ("--out {i}/new --task disc --num-videos 18 --num-frames 257", "num_frames"),
    *range_cases("--out {i}/new", "--size", ["0", "many"]),
    *range_cases("--out {i}/new", "--num-frames", ["0", "1.5"]),
]
# Foreign run folders (made by ``_make_foreign_runs``); the commands that read runs must name
# the folder. The damaged ones have a recipe that reads and a lineage that does not: a command
# may note the damage and go on, or refuse.
FOREIGN = (
    "missing",
    "file",
    "empty_run",
    "garbage_recipe",
    "binary_recipe",
    "bad_value",
    "no_space",
)
DAMAGED = ("garbage_part", "empty_part", "lineage_file")
RUN_READERS = {
    "status": "",
    "pareto": "",
    "lineage": "--id 0",
    "export": "--best --out {i}/exports",
    "report": "",
}
STATUS_OK = {"no_space", "garbage_part", "empty_part", "lineage_file"}  # status needs no space


def run_reader_cases() -> list:
    params = []
    for command, extra in RUN_READERS.items():
        for name in FOREIGN + DAMAGED:
            ok = command == "status" and name in STATUS_OK
            case = Case(
                f"{command} {{i}}/{name} {extra}",
                None if ok else f"{{i}}/{name}",
                exit=None if name in DAMAGED else (0 if ok else 2),
                absent="{i}/exports" if command == "export" else None,
            )
            params.append(pytest.param(case, id=f"{command} {name}"))
    return params


RUN_FLAGS = [
    *cases_of("lineage {r}", range_cases("", "--id", ["-1", "many", str(10**30)])),
    *cases_of(
        "export {r}",
        [
            ("--id -1", "--id"),
            ("--id many", "--id"),
            (f"--id {10**30}", "candidate"),
            ("--best --format pdf", "--format"),
            ("--best --format ''", "--format"),
            ("--pareto --x nope", "--x"),
            ("--best --x params", "--x"),
            ("--best --out {i}/file/sub", "{i}/file/sub"),
            ("--best --out {i}/file", "{i}/file"),
            (f"--best --out {UNWRITABLE}", UNWRITABLE),
        ],
    ),
    *cases_of(
        "pareto {r}",
        [
            ("--x nope", "--x"),
            ("--x params --y params", "--y"),
            ("--z nope", "--z"),
            ("--x gpu_ms", "--x"),
            ("--plot {i}/plot.pdf", "--plot"),
            ("--plot {i}/file/sub.png", "{i}/file/sub.png"),
            ("--plot {i}/folder", "--plot"),
            (f"--plot {UNWRITABLE}.png", f"{UNWRITABLE}.png"),
        ],
    ),
    pytest.param(
        Case(
            "pareto {r} --plot {i}/first.png {i}/file/sub.html",
            "{i}/file/sub.html",
            absent="{i}/first.png",
        ),
        id="pareto second plot unwritable",
    ),
]
SEARCH = [
    *file_cases("{f}"),
    ("{recipe} --set train.iterations=0", "train.iterations"),
    ("{recipe} --set train.seed=-1", "train.seed"),
    ("{recipe} --set nonsense", "--set"),
    ("{recipe} --set train.iters=3", "train.iters"),
    ("{recipe} --set search.options.foo=1", "search.options.foo"),
    ("{recipe} --set search.options=3", "search.options"),
    ("{recipe} --set search.strategy=nope", "search.strategy"),
    ("{recipe} --set constraints.max_params=1.5", "constraints.max_params"),
    ("{recipe} --set resources.num_workers=50", "resources.num_workers"),
    ("{recipe} --name ../x", "search.name"),
    ("{recipe} --name ''", "search.name"),
    ("{recipe} --set data.path={i}/missing", "data.path"),
    ("{recipe} --set data.path={i}/folder", "{i}/folder"),
    ("{recipe} --set data.path={i}/binary", "{i}/binary"),
    ("{recipe} --set search.space={i}/binary", "{i}/binary"),
    ("{recipe} --set data.cache_dir={i}/file/sub", "{i}/file/sub"),
    ("{recipe} --results {i}/file/sub", "{i}/file/sub"),
    (f"{{recipe}} --results {UNWRITABLE}", UNWRITABLE),
    ("{recipe} --set data.path={i}/missing --address 127.0.0.1:1", "data.path"),
]
RESUME = [
    *[(f"{{i}}/{name}", f"{{i}}/{name}") for name in FOREIGN],
    ("{i}/garbage_part_no_data", "{i}/missing"),
]

CASES = [
    *cases_of("show", SHOW),
    *cases_of("sample", SAMPLE),
    pytest.param(Case("sample --space {s} --seed -1", None, exit=0), id="sample any seed"),
    *cases_of("validate", VALIDATE),
    *cases_of("profile", PROFILE),
    *cases_of("train", TRAIN),
    *cases_of("train", TRAIN_OUT, absent="{i}/file/sub"),
    *cases_of("evaluate", EVALUATE),
    *cases_of("data synth", SYNTH, absent="{i}/new"),
    *run_reader_cases(),
    # A server that starts runs until stopped: only runs it refuses, and ports it cannot use.
    *cases_of("dashboard", [(f"{{i}}/{name}", f"{{i}}/{name}") for name in FOREIGN]),
    *cases_of("dashboard", range_cases("{i}/empty_run", "--port", ["-1", "65536", "many"])),
    *RUN_FLAGS,
    *cases_of("search", SEARCH, absent="{i}/results"),
    *cases_of("resume", RESUME),
    pytest.param(
        Case("resume {i}/lineage_file", "{i}/lineage_file/lineage"), id="resume lineage_file"
    ),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-data") / "synth"
    write_synth(root, SynthConfig(num_videos=18, size=32, num_frames=4))
    return root


def make_inputs(folder: Path, dataset: Path) -> dict[str, str]:
    """The case's folder of bad inputs and foreign runs; the placeholders' values."""
    folder.mkdir()
    (folder / "genome.json").write_text(small_genome().to_json())
    (folder / "empty.json").write_text("")
    (folder / "binary").write_bytes(bytes(range(256)))
    (folder / "list.json").write_text("[1, 2]")
    (folder / "folder").mkdir()
    (folder / "file").write_text("a file, not a folder\n")
    (folder / "full").mkdir()
    (folder / "full" / "notes.txt").write_text("a folder of someone's own\n")
    values = {"i": str(folder), "s": str(SPACES_DIR / "tiny.toml"), "d": str(dataset)}
    recipe = folder / "recipe.toml"
    recipe.write_text(RECIPE.format(data=dataset, **values))
    _make_foreign_runs(folder, dataset, values)
    return {**values, "g": str(folder / "genome.json"), "recipe": str(recipe)}


def _make_foreign_runs(folder: Path, dataset: Path, values: dict[str, str]) -> None:
    (folder / "empty_run").mkdir()
    bad_value = _frozen(values, dataset).replace("budget = 4\n", "budget = -4\n")
    for name, text in [("garbage_recipe", "[[[ not toml"), ("bad_value", bad_value)]:
        (folder / name).mkdir()
        (folder / name / "recipe.toml").write_text(text)
    (folder / "binary_recipe").mkdir()
    (folder / "binary_recipe" / "recipe.toml").write_bytes(bytes(range(256)))
    (folder / "no_space").mkdir()
    (folder / "no_space" / "recipe.toml").write_text(_frozen(values, dataset, space="space.toml"))
    for name, part in [("garbage_part", b"garbage" * 50), ("empty_part", b"")]:
        for run, data in [(name, dataset), (f"{name}_no_data", folder / "missing")]:
            (folder / run / "lineage").mkdir(parents=True)
            (folder / run / "recipe.toml").write_text(_frozen(values, data))
            (folder / run / "lineage" / "part-000001-0badf00d.parquet").write_bytes(part)
    (folder / "lineage_file").mkdir()
    (folder / "lineage_file" / "recipe.toml").write_text(_frozen(values, dataset))
    (folder / "lineage_file" / "lineage").write_text("not a folder\n")


def _frozen(values: dict[str, str], data: Path, *, space: str = "") -> str:
    """A run folder's frozen recipe, as ``create_run`` writes it."""
    search = {"space": space or values["s"], "budget": 4}
    config = recipe_from_dict({"search": search, "data": {"path": str(data)}}, source="fuzz")
    return recipe_toml(config)


def snapshot(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


class RayStarted(BaseException):  # no ``except Exception`` on the way may swallow it
    pass


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise RayStarted("Ray was started: the case is not refused before its search starts")

    monkeypatch.setattr(ray, "init", refuse)


def _log(case: Case, code: object, tracebacks: int) -> None:
    """With ``TVNSEARCH_FUZZ_LOG`` set, one JSON line per case (``bench/robustness_bench.py``)."""
    if path := os.environ.get("TVNSEARCH_FUZZ_LOG"):
        row = {"case": case.argv, "exit": code, "tracebacks": tracebacks}
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_in_one_line_naming_it_and_writes_nothing(
    case: Case, dataset, searched_run, tmp_path, capsys, monkeypatch, no_ray
) -> None:
    values = make_inputs(tmp_path / "in", dataset) | {"r": str(searched_run)}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "in" / "cache"))
    monkeypatch.chdir(tmp_path / "in")
    argv = [word.format(**values) for word in shlex.split(case.argv)]
    before = snapshot(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    except BaseException:
        _log(case, "exception", 1)
        pytest.fail(f"an exception escaped main:\n{traceback.format_exc()}")
    out, err = capsys.readouterr()
    _log(case, code, (out + err).count("Traceback"))
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code == case.exit if case.exit is not None else code in (0, 2), (code, err)
    command = " ".join(argv[:2] if argv[0] == "data" else argv[:1])
    lines = err.splitlines()
    if case.named is not None:
        named = case.named.format(**values)
        said = [line for line in lines if line.startswith(f"tvnsearch {command}") and named in line]
        assert said, f"no line names {named!r}:\n{err}"
    if code == 2 and not lines[-1].startswith(f"tvnsearch {command}: error: "):  # argparse's
        assert all(line.startswith(f"tvnsearch {command}: ") for line in lines), err
        assert out == "" or argv[0] in ("search", "resume"), out  # they name the run first
    new = snapshot(tmp_path) - before
    caches = {("in", "cache"), ("in", "frames")}  # decoded videos are kept, whatever happens
    # ``report`` on a damaged run that it reads past writes what it is for: the run's views.
    views = {REPORT_FILE, JOURNAL_FILE} if argv[0] == "report" and code == 0 else set()
    new = {p for p in new if p.parts[:2] not in caches and p.name not in views}
    assert not new, f"left behind: {new}"
    assert not list(tmp_path.rglob(".*.tmp")), "a hidden temporary file was left"
    if case.absent is not None:
        assert not Path(case.absent.format(**values)).exists()


def test_the_table_covers_every_subcommand_and_numeric_flag() -> None:
    """A new subcommand or numeric flag must get its cases here."""
    import argparse

    covered = [c.values[0].argv for c in CASES]
    for path, parser in _subparsers(_parser()):
        assert any(a.startswith(path + " ") for a in covered), f"no case for {path}"
        for action in parser._actions:
            numeric = action.type is not None and action.option_strings
            if numeric and not isinstance(action, argparse._HelpAction):
                flag = action.option_strings[0]
                mine = [a for a in covered if a.startswith(path + " ")]
                assert any(f" {flag} " in a + " " for a in mine), f"no case for {path} {flag}"


def _subparsers(parser, prefix: str = "") -> list:
    import argparse

    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                inner = _subparsers(sub, f"{prefix}{name} ")
                found += inner or [(f"{prefix}{name}", sub)]
    return found


END_TO_END = [
    (["show", "{i}/missing.json"], "{i}/missing.json"),
    (["profile", "{g}", "--runs", "10001"], "--runs"),
    (["data", "synth", "--out", "{i}/new", "--task", "disc", "--size", "257"], "size"),
    (["status", "{i}/garbage_recipe"], "{i}/garbage_recipe/recipe.toml"),
    (["search", "{i}/binary"], "{i}/binary"),
    (["train", "{g}", "--data", "{d}", "--out", UNWRITABLE], UNWRITABLE),
]


def test_bad_input_exits_2_end_to_end(dataset, tmp_path) -> None:
    """The exit code and the one line of a real ``python -m tvnsearch`` process."""
    values = make_inputs(tmp_path / "in", dataset)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for argv, named in END_TO_END:
        argv = [word.format(**values) for word in argv]
        done = subprocess.run(
            [sys.executable, "-m", "tvnsearch", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        lines = done.stderr.splitlines()
        assert done.returncode == 2 and "Traceback" not in done.stderr, (argv, done.stderr)
        assert named.format(**values) in lines[-1] and lines[-1].startswith("tvnsearch "), lines
