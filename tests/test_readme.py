"""The README's examples, run: what the README shows a command printing is what it prints.

The convention, in README.md: in a fenced block without a language, a line that starts with
``$ `` is a command, and the lines after it, up to the next command or the end of the block,
are what it prints on stdout (blank lines at their end aside; none shown: not checked). A line
``...`` stands for any number of lines, ``...`` inside a line for any text. In a command,
``# ...`` is a comment (``exit N`` in it: the exit code, 0 otherwise), ``[...]`` an optional
flag, left out, and ``> FILE`` sends stdout to FILE. Only ``.venv/bin/tvnsearch`` commands run
(``make`` does not); ``search`` and ``resume`` are parsed only, a search takes minutes, and so is
``dashboard``, a server that runs until stopped (``tests/cli/test_dashboard.py`` runs it).

``show``, ``sample`` and ``validate`` print the same on every machine: their lines must match,
whitespace aside. The other commands print times, measurements and a run's results: there a
number in the README matches any number (and the word after it, singular or plural), a genome
id any genome id, and a run of table rows (lines that begin with a candidate id) a run of rows,
since the README's run is not the test's.

Each block runs in a folder of the test's own, where ``search_spaces``, ``runners`` and
``tvnsearch`` are linked and ``results/local-20250301-120000`` is a copy of the session's
searched run (``tests/conftest.py``); the README's candidate ids are mapped to ids of that run
in the same role (``--id N``, ``...-cN``). Scale: ``data synth`` writes a small disc set and
``train`` runs at most 30 iterations, except in the slow test, which runs the README's data and
training block as it is written.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

from tvnsearch.cli.main import _parser, main
from tvnsearch.search.lineage import best, read_lineage

README = ROOT / "README.md"
TVNSEARCH = ".venv/bin/tvnsearch"
EXACT = {"show", "sample", "validate"}  # print the same on every machine
README_RUN = "local-20250301-120000"
SMALL_SYNTH = ["--task", "disc", "--num-videos", "18", "--size", "32", "--num-frames", "8"]
MAX_ITERATIONS = 30
PARSED_ONLY = ("search", "resume", "dashboard")  # a search takes minutes; a server runs on


@dataclass(frozen=True)
class Example:
    line: int  # in README.md
    command: str
    expected: tuple[str, ...]


def readme_blocks(text: str) -> list[list[Example]]:
    """The examples of every fenced block without a language that holds a command."""
    blocks, block, fence = [], None, None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            if fence is None and block:
                blocks.append(block)
            block = [] if fence == "" else None
        elif block is not None and line.startswith("$ "):
            block.append(Example(number, line[2:], ()))
        elif block:
            last = block[-1]
            block[-1] = Example(last.line, last.command, (*last.expected, line))
    return [[_trimmed(e) for e in b] for b in blocks]


def _trimmed(example: Example) -> Example:
    expected = list(example.expected)
    while expected and not expected[-1].strip():
        expected.pop()
    return Example(example.line, example.command, tuple(expected))


@dataclass(frozen=True)
class Command:
    argv: list[str]
    exit_code: int
    stdout_to: str | None


def parse_command(text: str) -> Command | None:
    """A README command as an argv for ``main``; None for another program's."""
    text, _, comment = text.partition(" #")
    code = re.search(r"\bexit (\d+)", comment)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text, redirect, target = text.partition(">")
    words = shlex.split(text)
    if words[0] != TVNSEARCH:
        return None
    return Command(words[1:], int(code[1]) if code else 0, target.strip() if redirect else None)


NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?"
TOKENS = re.compile(
    r"(?P<ellipsis>\s*\.\.\.)|(?P<id>\b[0-9a-f]{16}\b)"
    rf"|(?P<number>{NUMBER})(?P<unit>\s+[A-Za-z]+)?|(?P<space>\s+)|(?P<other>.)"
)
ROW = re.compile(r"\s*\d+\s{2,}\S")  # a table row: a candidate id, then its columns
ANY_LINES, ROWS = "any lines", "rows"


def line_pattern(line: str, *, loose: bool) -> re.Pattern[str]:
    parts = []
    for m in TOKENS.finditer(line.strip()):
        if m["ellipsis"]:
            parts.append(".*")
        elif m["space"]:
            parts.append(r"\s+")
        elif m["id"] and loose:
            parts.append("[0-9a-f]{16}")
        elif m["number"]:
            parts.append(NUMBER if loose else re.escape(m["number"]))
            word = (m["unit"] or "").strip()
            if word:  # singular or plural: "1 block", "3 blocks"
                parts.append(
                    rf"\s+{re.escape(word.removesuffix('s'))}s?" if loose else rf"\s+{word}"
                )
        else:
            parts.append(re.escape(m.group()))
    return re.compile("".join(parts))


def expected_items(expected: tuple[str, ...], *, loose: bool) -> list[object]:
    items: list[object] = []
    for line in expected:
        if line.strip() == "...":
            items.append(ANY_LINES)
        elif loose and ROW.match(line):
            if items[-1:] != [ROWS]:
                items.append(ROWS)
        else:
            items.append(line_pattern(line, loose=loose))
    return items


def matches(items: list[object], lines: list[str]) -> bool:
    """Whether ``lines`` are what ``items`` describe (backtracking over ``...`` and rows)."""
    if not items:
        return not lines
    item, rest = items[0], items[1:]
    if item is ANY_LINES:
        return any(matches(rest, lines[k:]) for k in range(len(lines) + 1))
    if item is ROWS:
        rows = next((k for k, line in enumerate(lines) if not ROW.match(line)), len(lines))
        return any(matches(rest, lines[k:]) for k in range(1, rows + 1))
    return bool(lines) and bool(item.fullmatch(lines[0].strip())) and matches(rest, lines[1:])


def candidate_ids(run: Path) -> dict[str, str]:
    """The README's candidate ids, each mapped to a candidate of ``run`` in the same role: the
    best (12), one mutation from a sampled genome (27), two other trained ones (4 and 22)."""
    frame = read_lineage(run)
    trained = frame[frame["status"] == "trained"]
    fittest = int(best(frame, 1).at[0, "candidate_id"])
    sampled = set(frame.loc[frame["parent_id"].isna(), "candidate_id"].astype(int))
    children = [
        int(c)
        for c, p in zip(trained["candidate_id"], trained["parent_id"], strict=True)
        if p in sampled
    ]
    others = [int(c) for c in trained["candidate_id"] if c != fittest]
    assert children and len(others) >= 2, "the fixture run lacks a candidate the README shows"
    return {"12": str(fittest), "27": str(children[0]), "4": str(others[0]), "22": str(others[1])}


def substituted(argv: list[str], run_name: str, ids: dict[str, str]) -> list[str]:
    out = []
    for i, word in enumerate(argv):
        word = word.replace(README_RUN, run_name).replace("local-...", run_name)
        if i and argv[i - 1] == "--id":
            word = ids[word]
        out.append(re.sub(r"-c(\d+)$", lambda m: f"-c{ids[m[1]]}", word))
    return out


def scaled(argv: list[str]) -> list[str]:
    """The fast test's version of a command: a small dataset, a short training."""
    if argv[:2] == ["data", "synth"]:
        return [*argv, *SMALL_SYNTH]
    if argv[0] == "train" and "--iterations" in argv:
        i = argv.index("--iterations") + 1
        argv = [*argv[:i], str(min(int(argv[i]), MAX_ITERATIONS)), *argv[i + 1 :]]
    return argv


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, searched_run: Path) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    for name in ("search_spaces", "runners", "tvnsearch"):
        (folder / name).symlink_to(ROOT / name)
    shutil.copytree(searched_run, folder / "results" / searched_run.name)
    return folder


def run_block(block: list[Example], capsys, *, run: Path | None, fast: bool) -> list[str]:
    """Run a block's commands in the current folder; every mismatch found, as text."""
    ids = candidate_ids(run) if run is not None else {}
    problems = []
    for example in block:
        command = parse_command(example.command)
        if command is None:
            continue
        argv = substituted(command.argv, run.name, ids) if run is not None else command.argv
        where = f"README.md:{example.line}: {example.command}"
        if argv[0] in PARSED_ONLY:
            try:
                _parser().parse_args(argv)
            except SystemExit:
                problems.append(f"{where}\ndoes not parse:\n{capsys.readouterr().err}")
            continue
        code, out, err = _run(scaled(argv) if fast else argv, capsys)
        if code != command.exit_code:
            problems.append(f"{where}\nexit {code}, not {command.exit_code}\n{err}")
        if command.stdout_to:
            Path(command.stdout_to).write_text(out)
        expected = [
            line.replace(README_RUN, run.name) if run else line for line in example.expected
        ]
        items = expected_items(tuple(expected), loose=argv[0] not in EXACT)
        if example.expected and not matches(items, out.splitlines()):
            shown = "\n".join(example.expected)
            problems.append(f"{where}\nthe README shows:\n{shown}\nit prints:\n{out}")
    return problems


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: the README's syntax is no longer accepted
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


BLOCKS = readme_blocks(README.read_text())


def block_id(block: list[Example]) -> str:
    return f"README.md:{block[0].line}"


@pytest.mark.parametrize("block", BLOCKS, ids=block_id)
def test_the_readme_s_examples_print_what_it_shows(block, workdir, capsys, monkeypatch) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))
    (run,) = (workdir / "results").iterdir()
    problems = run_block(block, capsys, run=run, fast=True)
    assert not problems, "\n\n".join(problems)


@pytest.mark.slow
def test_the_readme_s_data_and_training_example_as_written(tmp_path, capsys, monkeypatch) -> None:
    (block,) = [b for b in BLOCKS if any("data synth" in e.command for e in b)]
    (tmp_path / "search_spaces").symlink_to(ROOT / "search_spaces")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    problems = run_block(block, capsys, run=None, fast=False)
    assert not problems, "\n\n".join(problems)


def test_the_convention_catches_a_drift() -> None:
    """The matcher is strict where it must be: a changed genome or a lost line fails."""
    shown = ("genome e962c7f6aa18fa48 from space 'tiny' (seed 58): clip 4 frames", "...")
    printed = ["genome 0123456789abcdef from space 'tiny' (seed 58): clip 4 frames", "more"]
    assert not matches(expected_items(shown, loose=False), printed)
    assert matches(expected_items(shown, loose=True), printed)
    assert not matches(expected_items(("a", "b"), loose=True), ["a"])
    rows = ("     4  e19a8c21692ac7b7  0.626", "    22  06bccf8deb076cd7  0.835", "plot: x")
    assert matches(expected_items(rows, loose=True), ["1  2ec411b1f71b6439  0.862", "plot: x"])
    assert not matches(expected_items(rows, loose=True), ["plot: x"])
    assert matches(
        expected_items(("trained after 30 iterations in 2.2 s",), loose=True),
        ["trained after 1 iteration in 0.1 s"],
    )
