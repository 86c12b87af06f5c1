from __future__ import annotations

import io
import itertools
import json
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from tvnsearch.cli.main import main
from tvnsearch.inspect.pareto import OBJECTIVES, pareto_front
from tvnsearch.measure.constraints import Constraints
from tvnsearch.measure.gate import Gate
from tvnsearch.search.engine import Engine
from tvnsearch.search.inline import InlineExecutor
from tvnsearch.search.lineage import LineageWriter, read_lineage, records_from_frame
from tvnsearch.search.progress import Progress, Tally
from tvnsearch.search.runs import save_run_log
from tvnsearch.search.strategies import RandomSearch
from tvnsearch.search.worker import Evaluation, failed


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def run_copy(searched_run: Path, tmp_path: Path) -> Path:
    """A copy of the searched run that a command may write plots into."""
    return Path(shutil.copytree(searched_run, tmp_path / searched_run.name))


def test_pareto_prints_the_front_and_writes_default_plots(capsys, run_copy) -> None:
    code, out, err = run_cli(capsys, "pareto", str(run_copy))
    assert code == 0, err
    front = pareto_front(read_lineage(run_copy), ("cpu_ms", "fitness"))
    lines = out.splitlines()
    assert "non-dominated over cpu_ms (minimised), fitness (maximised)" in lines[0]
    table = [line.split() for line in lines[2 : 2 + len(front)]]
    assert [int(cells[0]) for cells in table] == front["candidate_id"].tolist()
    assert [cells[1] for cells in table] == front["genome_id"].tolist()
    plots = sorted(p.name for p in (run_copy / "plots").iterdir())
    expected = ["pareto-cpu_ms-fitness.html", "pareto-cpu_ms-fitness.png"]
    assert plots == [*expected, "progress.html", "progress.png"]
    assert all(f"plot: {run_copy / 'plots' / name}" in out for name in plots)


def test_pareto_json_with_three_objectives_to_chosen_paths(capsys, searched_run, tmp_path):
    wanted = [tmp_path / "a.png", tmp_path / "sub" / "b.html"]
    argv = ["pareto", str(searched_run), "--x", "params", "--z", "cpu_ms", "--json"]
    code, out, err = run_cli(capsys, *argv, "--plot", *map(str, wanted))
    assert code == 0, err
    data = json.loads(out)
    front = pareto_front(read_lineage(searched_run), ("params", "fitness", "cpu_ms"))
    assert [r["candidate_id"] for r in data["front"]] == front["candidate_id"].tolist()
    assert [r["params"] for r in data["front"]] == front["params"].tolist()
    assert data["objectives"] == {"params": "minimise", "fitness": "maximise", "cpu_ms": "minimise"}
    assert data["plots"] == [str(p) for p in wanted] and all(p.stat().st_size for p in wanted)
    assert all(r["genome"].endswith(("block", "blocks")) for r in data["front"])
    assert not (searched_run / "plots").exists()  # only the paths given


def test_pareto_runs_without_ray(searched_run, tmp_path) -> None:
    script = (
        "import sys; from tvnsearch.cli.main import main; "
        f"code = main(['pareto', {str(searched_run)!r}, '--plot', {str(tmp_path / 'p.png')!r}]); "
        "print('ray' in sys.modules, code)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "False 0", done.stderr[-2000:]


def only_rejected_run(searched_run: Path, tmp_path: Path) -> Path:
    frame = read_lineage(searched_run)
    rejected = frame[frame["status"] == "rejected"]
    assert len(rejected), "the fixture run should reject some candidates"
    run = tmp_path / "rejected-run"
    with LineageWriter(run) as writer:
        for record in records_from_frame(rejected):
            writer.append(record)
    return run


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--x", "latency"], "command line: --x: must be one of"),
        (["--y", "cpu_ms"], "command line: --y: 'cpu_ms' is already an objective"),
        (["--x", "gpu_ms"], "lineage: --x: 'gpu_ms' was not measured in this run"),
        (["--plot", "out.svg"], "command line: --plot: must end in .png or .html"),
    ],
)
def test_pareto_bad_options_exit_2_naming_the_field(capsys, searched_run, argv, expected):
    code, out, err = run_cli(capsys, "pareto", str(searched_run), *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and expected in err and err.startswith("tvnsearch pareto: ")
    if "must be one of" in expected:
        assert all(name in err for name in OBJECTIVES)


def test_pareto_bad_runs_exit_2_naming_the_file(capsys, searched_run, tmp_path) -> None:
    cases = {
        tmp_path / "missing": "not a run folder: no such directory",
        tmp_path: f"{tmp_path / 'lineage'}: no such folder",
        only_rejected_run(searched_run, tmp_path): "no trained candidate with cpu_ms and fitness",
    }
    for run, expected in cases.items():
        code, out, err = run_cli(capsys, "pareto", str(run))
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert expected in err


def test_lineage_goes_from_the_random_root_to_the_candidate(capsys, searched_run) -> None:
    frame = read_lineage(searched_run)
    child = int(frame[frame["parent_id"].notna()]["candidate_id"].iloc[-1])
    code, out, err = run_cli(capsys, "lineage", str(searched_run), "--id", str(child), "--json")
    assert code == 0, err
    steps = json.loads(out)["ancestry"]
    assert steps[0]["parent_id"] is None and steps[0]["mutation"] == "random"
    assert steps[-1]["candidate_id"] == child
    for parent, step in itertools.pairwise(steps):
        assert step["parent_id"] == parent["candidate_id"]
        row = frame[frame["candidate_id"] == step["candidate_id"]].iloc[0]
        assert step["mutation"] == row["mutation"] and step["status"] == row["status"]
    code, out, _ = run_cli(capsys, "lineage", str(searched_run), "--id", str(child))
    lines = out.splitlines()
    assert lines[0].startswith(f"candidate {child} (genome {steps[-1]['genome_id']}): ")
    assert [int(line.split()[0]) for line in lines[3:]] == [s["candidate_id"] for s in steps]
    assert all(s["mutation"] in line for s, line in zip(steps, lines[3:], strict=True))


def test_lineage_of_an_unknown_id_exits_2(capsys, searched_run) -> None:
    code, out, err = run_cli(capsys, "lineage", str(searched_run), "--id", "999")
    assert code == 2 and out == ""
    assert err.startswith("tvnsearch lineage: command line: --id: no candidate 999 in ")


def test_lineage_shows_a_failed_candidate_s_reason_and_log(capsys, tmp_path, tiny_space) -> None:
    def broken(job, task) -> Evaluation:
        try:
            raise ValueError(f"cannot train {job.genome.id}")
        except ValueError as exc:
            return failed(exc)

    tally = Tally(3)
    with LineageWriter(tmp_path) as writer:
        Engine(
            RandomSearch(tiny_space, seed=0),
            Gate(Constraints(), num_classes=9),
            InlineExecutor(broken),
            writer,
            run_id="r",
            tally=tally,
            progress=Progress(tally, stream=io.StringIO()),
            save_log=partial(save_run_log, tmp_path),
        ).run()
    code, out, _ = run_cli(capsys, "lineage", str(tmp_path), "--id", "1")
    assert code == 0 and "reason: ValueError: cannot train" in out
    assert f"log: {tmp_path / 'logs' / 'candidate-1.log'}" in out
    assert "Traceback (most recent call last)" in out and "in broken" in out
    code, out, _ = run_cli(capsys, "lineage", str(tmp_path), "--id", "1", "--json")
    shown = json.loads(out)
    assert shown["reason"].startswith("ValueError") and "in broken" in shown["story"]
