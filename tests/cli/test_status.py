"""``tvnsearch status``: counts, best and pace, and the hypervolume of the run's front over time."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SEARCHED_RECIPE, SPACES_DIR

from tvnsearch.cli.main import main
from tvnsearch.inspect.hypervolume import in_told_order
from tvnsearch.inspect.pareto import pareto_front
from tvnsearch.search.lineage import read_lineage
from tvnsearch.search.runs import create_run

SEARCHED_MAX_CPU_MS = 10_000.0  # the searched run's constraint: its reference runtime


def status_json(capsys, run: Path) -> dict:
    assert main(["status", str(run), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def strips(frame, objectives: tuple[str, str], reference: tuple[float, float]) -> float:
    """The area of a (maximised, minimised) front as horizontal strips: a sum independent of
    the code's columns."""
    front = pareto_front(frame, objectives).sort_values(objectives[0])
    up, down = front[list(objectives)].to_numpy(dtype=float).T
    return float(np.sum(np.diff(np.r_[reference[0], up]) * (reference[1] - down)))


def test_status_reports_the_hypervolume_of_the_front_over_time(capsys, searched_run) -> None:
    frame = read_lineage(searched_run)
    found = status_json(capsys, searched_run)["hypervolume"]
    assert found["objectives"] == {"fitness": "maximise", "cpu_ms": "minimise"}
    assert found["reference"] == {"fitness": 0.0, "cpu_ms": SEARCHED_MAX_CPU_MS}
    assert found["reference_basis"] == {"fitness": "lowest possible", "cpu_ms": "max_cpu_ms"}
    expected = strips(frame, ("fitness", "cpu_ms"), (0.0, SEARCHED_MAX_CPU_MS))
    assert found["value"] == pytest.approx(expected) and expected > 0
    told, values = zip(*found["grew"], strict=True)
    assert list(told) == sorted(set(told)) and list(values) == sorted(values)
    assert values[-1] == found["value"]
    first = in_told_order(frame).head(told[0])  # nothing on a front before it
    assert strips(first, ("fitness", "cpu_ms"), (0.0, SEARCHED_MAX_CPU_MS)) == pytest.approx(
        values[0]
    )
    assert list(found["at"]) == ["25%", "50%", "75%"]
    assert main(["status", str(searched_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith(
        f"  front    hypervolume {found['value']:.4g} over fitness x cpu_ms"
    )
    assert "from fitness 0 (lowest possible), cpu_ms 10000 (max_cpu_ms)" in lines[-2]
    assert lines[-1].strip().endswith("after 75% of the candidates told")


def test_status_counts_how_far_multi_fidelity_training_went(capsys, searched_run) -> None:
    trained = read_lineage(searched_run).query("status == 'trained'")
    reached = status_json(capsys, searched_run)["iterations_reached"]
    assert reached == {str(i): int((trained["iterations"] == i).sum()) for i in (2, 4)}
    assert main(["status", str(searched_run)]) == 0
    line = f"rungs    trained candidates by the iterations they reached: {reached['2']} at 2"
    assert line in capsys.readouterr().out


def test_status_reads_a_run_without_importing_torch(searched_run) -> None:
    code = (
        "import sys\n"
        "from tvnsearch.cli.main import main\n"
        f"assert main(['status', {str(searched_run)!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'status imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_recipe_names_the_objectives_of_its_front(capsys, searched_run, tmp_path) -> None:
    run = Path(shutil.copytree(searched_run, tmp_path / searched_run.name))
    recipe = (run / "recipe.toml").read_text().replace('"evolution"', '"pareto"')
    objectives = '[["fitness", "maximize"], ["params", "minimize"]]'
    (run / "recipe.toml").write_text(f"{recipe}objectives = {objectives}\n")  # [search.options]
    found = status_json(capsys, run)["hypervolume"]
    assert found["objectives"] == {"fitness": "maximise", "params": "minimise"}
    trained = read_lineage(run).query("status == 'trained'")
    largest = 1.1 * trained["params"].max()
    assert found["reference"] == {"fitness": 0.0, "params": pytest.approx(largest)}
    assert found["value"] == pytest.approx(
        strips(read_lineage(run), ("fitness", "params"), (0.0, largest))
    )


def test_a_run_with_nothing_told_has_no_volume_yet(capsys, tmp_path) -> None:
    from tvnsearch.data.synth import SynthConfig, write_synth

    write_synth(tmp_path / "data", SynthConfig(num_videos=18, size=32, num_frames=4))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        SEARCHED_RECIPE.format(space=SPACES_DIR / "tiny.toml", data="data", cache="frames")
    )
    run = create_run(recipe, results_dir=tmp_path / "results")
    found = status_json(capsys, run)["hypervolume"]
    assert found["value"] == 0.0 and found["grew"] == [] and found["at"] == {}
    assert found["reference"] == {"fitness": 0.0, "cpu_ms": SEARCHED_MAX_CPU_MS}
    assert main(["status", str(run)]) == 0
    assert "front    hypervolume 0 over fitness x " in capsys.readouterr().out


@pytest.mark.slow
def test_the_pareto_recipe_searches_for_a_front(tmp_path) -> None:
    from tvnsearch.data.synth import SynthConfig, write_synth

    write_synth(tmp_path / "synth", SynthConfig(num_videos=18, size=32, num_frames=8))
    sets = {
        "search.budget": 12,
        "search.num_trained": 8,
        "search.options.initial_size": 4,
        "search.options.population_size": 5,
        "train.iterations": 5,
        "data.path": json.dumps(str(tmp_path / "synth")),
        "data.cache_dir": json.dumps(str(tmp_path / "frames")),
    }
    argv = [sys.executable, "-m", "tvnsearch", "search", str(ROOT / "runners" / "pareto.toml")]
    argv += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    argv += ["--results", str(tmp_path / "results")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "results").iterdir()
    frame = read_lineage(run)
    assert set(frame["strategy"]) == {"pareto"} and frame["parent_id"].notna().any()
    status = subprocess.run(
        [sys.executable, "-m", "tvnsearch", "status", str(run), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(status.stdout)["hypervolume"]
    assert found["reference"] == {"fitness": 0.0, "cpu_ms": 4.0} and found["value"] > 0
