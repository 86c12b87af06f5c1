"""The run's Optuna journal: one trial per candidate, written from the lineage, read by Optuna."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from tvnsearch.genome.genes import genome_from_dict
from tvnsearch.genome.space import SearchSpace, load_space
from tvnsearch.inspect.journal import (
    JOURNAL_FILE,
    Journal,
    Study,
    load_trials,
    run_study,
    sync_journal,
)
from tvnsearch.search.lineage import LineageRecord, read_lineage, records_from_frame
from tvnsearch.search.optuna_strategy import genome_from_trial
from tvnsearch.search.runs import load_run

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STATES = {"trained": "COMPLETE", "rejected": "PRUNED", "failed": "FAIL"}


def records(space: SearchSpace, count: int, **fields) -> list[LineageRecord]:
    """``count`` candidates of real genomes: trained, rejected and failed in turn."""
    rng = random.Random(5)
    out = []
    for i in range(count):
        status = ("trained", "rejected", "failed")[i % 3]
        genome = space.sample(rng)
        out.append(
            LineageRecord(
                run_id="run",
                candidate_id=i,
                genome_id=genome.id,
                parent_id=None if i < 3 else i - 3,
                mutation="random" if i < 3 else "resolution: 32 -> 48",
                strategy="evolution",
                genome_json=genome.canonical_json,
                status=status,
                seed=0,
                num_asked_at_tell=i + 1,
                asked_at=T0 + timedelta(seconds=i),
                finished_at=T0 + timedelta(seconds=i + 0.5),
                fitness=0.5 + i / 100 if status == "trained" else None,
                reason=None if status == "trained" else f"{status} because",
                cpu_ms=1.0 + i,
                params=1000 * i,
                **fields,
            )
        )
    return out


SINGLE = (("fitness", "maximize"),)


def test_the_finished_runs_journal_is_its_lineage_trial_by_trial(searched_run: Path) -> None:
    """The driver's views kept the journal of a real search: one trial per candidate in the
    order told, the genes as parameters that rebuild the genome, the status as the state, the
    fitness as the value, the rungs as intermediate values."""
    frame = read_lineage(searched_run)
    trials = load_trials(searched_run / JOURNAL_FILE)
    space = load_space(load_run(searched_run).search.space)
    assert [t.user_attrs["candidate_id"] for t in trials] == frame["candidate_id"].tolist()
    for trial, (_, row) in zip(trials, frame.iterrows(), strict=True):
        genome = genome_from_dict(json.loads(row["genome_json"]), source="test")
        assert genome_from_trial(space, trial) == genome
        assert trial.user_attrs["status"] == row["status"]
        assert trial.user_attrs["mutation"] == row["mutation"]
        parent = None if pd.isna(row["parent_id"]) else int(row["parent_id"])
        assert trial.user_attrs.get("parent_id") == parent
        if row["status"] in STATES:
            assert trial.state.name == STATES[row["status"]]
        if trial.state == TrialState.COMPLETE:
            assert trial.values == [pytest.approx(row["fitness"])]
        if isinstance(row["rungs"], str):
            rungs = {int(i): f for i, f in json.loads(row["rungs"])}
            assert trial.intermediate_values == pytest.approx(rungs)
        assert trial.datetime_start.replace(tzinfo=UTC) == row["asked_at"].to_pydatetime()


def test_appending_keeps_the_file_and_adds_a_batch_at_once(tiny_space, tmp_path) -> None:
    path = tmp_path / JOURNAL_FILE
    told = records(tiny_space, 12)
    sync_journal(path, Study("run", tiny_space, SINGLE), told[:5])
    inode, size = path.stat().st_ino, path.stat().st_size
    journal = sync_journal(path, Study("run", tiny_space, SINGLE), told)
    assert path.stat().st_ino == inode and path.stat().st_size > size  # appended, not rebuilt
    assert journal.candidate_ids() == list(range(12))
    lines = path.read_bytes().count(b"\n")
    journal._backend.append_logs([{"op_code": 0, "worker_id": "x"}])  # waits for a flush
    assert path.read_bytes().count(b"\n") == lines
    states = [t.state.name for t in load_trials(path)]
    assert states == [STATES[r.status] for r in told]


def test_a_journal_that_is_no_prefix_of_the_lineage_is_rebuilt(tiny_space, tmp_path) -> None:
    path = tmp_path / JOURNAL_FILE
    told = records(tiny_space, 6)
    sync_journal(path, Study("run", tiny_space, SINGLE), told[1:4])  # lacks candidate 0
    sync_journal(path, Study("run", tiny_space, SINGLE), told)
    assert [t.user_attrs["candidate_id"] for t in load_trials(path)] == list(range(6))
    path.write_bytes(b'{"op_code": 0, "worker_id"\n')  # torn
    sync_journal(path, Study("run", tiny_space, SINGLE), told)
    assert [t.user_attrs["candidate_id"] for t in load_trials(path)] == list(range(6))
    assert not list(tmp_path.glob(".*"))  # nothing left aside


def test_several_objectives_are_named_values(tiny_space, tmp_path) -> None:
    path = tmp_path / JOURNAL_FILE
    objectives = (("fitness", "maximize"), ("cpu_ms", "minimize"))
    told = records(tiny_space, 4)
    told.append(dataclasses.replace(told[0], candidate_id=4, cpu_ms=None))
    sync_journal(path, Study("run", tiny_space, objectives), told)
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.load_study(study_name="run", storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert storage.get_study_system_attrs(study._study_id)["dashboard:objective_names"] == [
        "fitness",
        "cpu_ms",
    ]
    trials = study.trials
    assert trials[0].values == [pytest.approx(0.5), pytest.approx(1.0)]
    assert trials[3].values == [pytest.approx(0.53), pytest.approx(4.0)]
    # a fitness without its other objective: nothing to plot, so not complete
    assert trials[4].state == TrialState.FAIL and trials[4].user_attrs["fitness"] == 0.5


def test_a_gene_outside_the_runs_space_is_left_out(tiny_space, tmp_path) -> None:
    told = records(tiny_space, 1)
    data = json.loads(told[0].genome_json)
    data["resolution"] = 999  # outside any space
    odd = dataclasses.replace(told[0], genome_json=json.dumps(data))
    Journal(tmp_path / JOURNAL_FILE, Study("run", tiny_space, SINGLE)).append([odd])
    (trial,) = load_trials(tmp_path / JOURNAL_FILE)
    assert "resolution" not in trial.params and "num_frames" in trial.params


def test_the_lineage_of_a_run_folder_copied_elsewhere_is_journaled(searched_run, tmp_path):
    """``sync_journal`` on a copy without a journal builds it; on one with it, changes nothing."""
    run = tmp_path / searched_run.name
    shutil.copytree(searched_run, run)
    (run / JOURNAL_FILE).unlink()
    told = records_from_frame(read_lineage(run))
    sync_journal(run / JOURNAL_FILE, run_study(run, load_run(run)), told)
    assert (run / JOURNAL_FILE).read_bytes().count(b"\n") == (
        searched_run / JOURNAL_FILE
    ).read_bytes().count(b"\n")
