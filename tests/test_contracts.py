"""The import contracts of ``make lint`` hold for the package, and each fails when it is broken:
a copy of the package with one scratch import added must fail ``lint-imports``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy, before the installed package
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "tvnsearch", tmp_path / "tvnsearch", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_line(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n\n{line}\n")


def test_the_package_keeps_every_contract() -> None:
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "4 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # a lower room importing a higher one
        ("models/layers.py", "from tvnsearch.search import lineage", "Rooms depend downwards only"),
        # torch in the genome room, even inside a function
        ("genome/plan.py", "def _shape():\n    import torch", "Genomes and strategies are pure"),
        # a third module importing Ray
        ("search/engine.py", "import ray", "Ray only where a search starts it"),
        # a cycle hidden in a function: space imports plan, plan imports space
        (
            "genome/plan.py",
            "def _space():\n    from tvnsearch.genome import space",
            "No import cycles",
        ),
    ],
)
def test_a_scratch_import_that_breaks_a_contract_fails_lint(copy, module, line, broken) -> None:
    add_line(copy / "tvnsearch" / module, line)
    done = lint(copy)
    assert done.returncode != 0 and f"{broken}" in done.stdout
    assert "BROKEN" in done.stdout.split(broken, 1)[1].splitlines()[0]
