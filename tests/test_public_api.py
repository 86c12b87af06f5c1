"""The public surface: every room's re-exported names load; the imports the README shows work."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest
from conftest import ROOT

ROOMS = ("genome", "models", "delta", "data", "measure", "train", "search", "inspect", "export")
ROOMS += ("cli",)


@pytest.mark.parametrize("name", ["tvnsearch", *(f"tvnsearch.{room}" for room in ROOMS)])
def test_every_public_name_of_a_room_loads(name: str) -> None:
    package = importlib.import_module(name)
    assert package.__doc__ and package.__all__
    for attribute in package.__all__:
        assert getattr(package, attribute) is not None, f"{name}.{attribute}"


def test_the_imports_shown_in_the_readme_work() -> None:
    text = (ROOT / "README.md").read_text()
    imports = re.findall(r"^from (tvnsearch[\w.]*) import ([\w, ]+)$", text, flags=re.M)
    assert len(imports) >= 4
    for module, names in imports:
        loaded = importlib.import_module(module)
        for name in names.split(","):
            assert hasattr(loaded, name.strip()), f"from {module} import {name.strip()}"


def test_the_console_script_and_python_m_reach_the_same_command() -> None:
    script = re.search(
        r'^tvnsearch = "([\w.]+):(\w+)"$', (ROOT / "pyproject.toml").read_text(), re.M
    )
    module, function = script.groups()
    assert callable(getattr(importlib.import_module(module), function))
    done = subprocess.run([sys.executable, "-m", "tvnsearch", "--help"], capture_output=True)
    assert done.returncode == 0 and b"search" in done.stdout


def test_torch_free_rooms_load_without_torch() -> None:
    code = (
        "import sys, tvnsearch.genome as g, tvnsearch.search.strategies, tvnsearch.search.runs; "
        "g.Genome, g.load_space, g.mutate, g.plan_network, g.count_cost; "
        "print('torch' in sys.modules, 'ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
