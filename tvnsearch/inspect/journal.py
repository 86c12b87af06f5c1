"""A run's candidates as an Optuna journal, the store optuna-dashboard reads and shows live.

``RUN/optuna-journal.log`` holds one study, named after the run, with one trial per candidate in
the order told:

- the genes as parameters, named and encoded as Optuna's own strategies ask them
  (``tvnsearch.search.optuna_strategy.trial_params``: ``num_blocks``, ``resolution``,
  ``b0.spatial_type``, ...), with the distributions of the run's space;
- the strategy's objectives as the trial's values (fitness, and ``cpu_ms`` for NSGA-II, ...),
  named for the dashboard; every measured lineage column as a user attribute (``candidate_id``,
  ``status``, ``parent_id``, ``mutation``, ``reason``, ``cpu_ms``, ``params``, ...);
- the status as a trial state (``trial_state``: trained complete, rejected pruned, failed
  failed); the fitness at each rung of multi-fidelity training as intermediate values;
- when it was asked and told as the trial's start and end.

The lineage stays the one source of truth: the journal is written from lineage parts only after
they are on disk, so it is always a prefix of the lineage, and ``sync_journal`` brings it up to
date, appending what it lacks, or rebuilding it whole (written aside, then renamed) when it is
no such prefix: damaged, foreign, or from a lineage since repaired. Only the run's views process
writes it, a lineage part at a time: one lock and one fsync per part, not per candidate
(``_Batched``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tvnsearch.genome.genes import genome_from_dict
from tvnsearch.genome.space import SearchSpace, load_space
from tvnsearch.search.lineage import LineageRecord
from tvnsearch.search.optuna_strategy import trial_params, trial_state
from tvnsearch.search.recipe import RunConfig
from tvnsearch.search.runs import RECIPE_FILE, new_strategy
from tvnsearch.search.strategies import Objectives

JOURNAL_FILE = "optuna-journal.log"
# Lineage columns that are not user attributes: the trial's parameters (the genome), its times
# and its intermediate values (the rungs), and what only a replay reads.
_NOT_ATTRIBUTES = {
    "genome_json",
    "asked_at",
    "finished_at",
    "rungs",
    "run_id",
    "seed",
    "num_asked_at_tell",
}
_ATTRIBUTES = tuple(f.name for f in fields(LineageRecord) if f.name not in _NOT_ATTRIBUTES)


class _Batched(BaseJournalBackend):
    """Optuna's journal file, appended one batch at a time by its only writer: the logs of a
    batch wait in memory (and are read from there) until ``flush`` writes them at once."""

    def __init__(self, path: Path) -> None:
        self._file = JournalFileBackend(str(path))
        self._on_disk: int | None = None  # logs in the file; None: not read yet
        self._pending: list[dict[str, Any]] = []

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        if self._on_disk is None or log_number_from < self._on_disk:
            logs = list(self._file.read_logs(log_number_from))
            self._on_disk = log_number_from + len(logs)
            return logs + self._pending
        return self._pending[log_number_from - self._on_disk :]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._pending.extend(logs)

    def flush(self) -> None:
        if self._pending:
            self._file.append_logs(self._pending)
            self._on_disk = (self._on_disk or 0) + len(self._pending)
            self._pending = []


@dataclass(frozen=True)
class Study:
    """What a run's study is: its name, the space its genes come from, what it optimises."""

    name: str
    space: SearchSpace
    objectives: Objectives


class Journal:
    """A run's journal, open for appending the candidates told after those it holds."""

    def __init__(self, path: Path, study: Study) -> None:
        self.path = path
        self.study = study
        self._backend = _Batched(path)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study or trial
        self.storage = JournalStorage(self._backend)
        summaries = self.storage.get_all_studies()
        if not summaries:
            directions = [StudyDirection[d.upper()] for _, d in study.objectives]
            self._study_id = self.storage.create_new_study(directions, study.name)
            names = [n for n, _ in study.objectives]
            self.storage.set_study_system_attr(self._study_id, _OBJECTIVE_NAMES, names)
            self._backend.flush()
        elif len(summaries) == 1:
            self._study_id = summaries[0]._study_id
        else:
            raise ValueError(f"holds {len(summaries)} studies, not one")

    def candidate_ids(self) -> list[int]:
        """The candidate ids of its trials, in the order told."""
        trials = self.storage.get_all_trials(self._study_id, deepcopy=False)
        return [t.user_attrs.get("candidate_id", -1) for t in trials]

    def append(self, records: Iterable[LineageRecord]) -> int:
        """Add a trial per record, written at once; how many."""
        count = 0
        for record in records:
            self.storage.create_new_trial(self._study_id, template_trial=self._trial(record))
            count += 1
        self._backend.flush()
        return count

    def _trial(self, record: LineageRecord) -> FrozenTrial:
        genome = genome_from_dict(json.loads(record.genome_json), source="lineage")
        params, distributions = _within(*trial_params(self.study.space, genome))
        attributes = {n: v for n in _ATTRIBUTES if (v := getattr(record, n)) is not None}
        state = trial_state(record.status, record.fitness)
        values = [getattr(record, n) for n, _ in self.study.objectives]
        if state == TrialState.COMPLETE and None in values:
            state = TrialState.FAIL  # a fitness, but an objective unmeasured: nothing to plot
        complete = state == TrialState.COMPLETE
        return FrozenTrial(
            number=record.candidate_id,  # numbered anew by the storage, in the order told
            trial_id=record.candidate_id,
            state=state,
            value=None,
            values=[float(v) for v in values] if complete else None,
            datetime_start=record.asked_at,
            datetime_complete=record.finished_at,
            params=params,
            distributions=distributions,
            user_attrs=attributes,
            system_attrs={},
            intermediate_values=_rungs(record.rungs),
        )


# Where optuna-dashboard reads the objectives' names (``optuna_dashboard.set_objective_names``
# writes the same; setting it here spares the driver's child process the dashboard's imports).
_OBJECTIVE_NAMES = "dashboard:objective_names"


def _within(
    params: dict[str, Any], distributions: dict[str, BaseDistribution]
) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
    """The parameters inside their distributions: a gene outside the run's space (a lineage
    recorded before the space was edited) is left out rather than break the journal."""
    keep = [n for n, v in params.items() if _contains(distributions[n], v)]
    return {n: params[n] for n in keep}, {n: distributions[n] for n in keep}


def _contains(distribution: BaseDistribution, value: Any) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    return distribution.low <= value <= distribution.high  # type: ignore[attr-defined]


def _rungs(rungs: str | None) -> dict[int, float]:
    """The fitness at each rung, by iterations: the trial's learning curve."""
    return {int(i): float(f) for i, f in json.loads(rungs)} if rungs else {}


def sync_journal(path: Path, study: Study, records: Sequence[LineageRecord]) -> Journal:
    """The journal at ``path`` holding exactly ``records`` (a run's lineage, in the order told):
    appended to when it holds a prefix of them, else rebuilt whole and renamed into place."""
    if _intact(path):
        try:
            journal = Journal(path, study)
            held = journal.candidate_ids()
            if held == [r.candidate_id for r in records[: len(held)]]:
                journal.append(records[len(held) :])
                return journal
        except (ValueError, KeyError, TypeError, OSError):
            pass  # unreadable, or not this run's: rebuilt below
    aside = path.with_name(f".{path.name}.rebuild")
    aside.unlink(missing_ok=True)  # a rebuild cut short
    Journal(aside, study).append(records)
    os.replace(aside, path)
    return Journal(path, study)


def _intact(path: Path) -> bool:
    """Whether every line of the file at ``path`` is a whole JSON log: a line torn by a crash
    while appending would break every read once more lines follow it."""
    try:
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    return False
                json.loads(line)
    except (OSError, ValueError):
        return False
    return True


def run_study(run_dir: Path, config: RunConfig) -> Study:
    """The study of a run: named after its folder, over its space, for its strategy's
    objectives."""
    space = load_space(config.search.space)
    strategy = new_strategy(config, space, source=str(run_dir / RECIPE_FILE))
    return Study(run_dir.name, space, strategy.objectives)


def load_trials(path: Path) -> list[FrozenTrial]:
    """The trials of a run's journal, as optuna-dashboard sees them."""
    storage = JournalStorage(JournalFileBackend(str(path)))
    (summary,) = storage.get_all_studies()
    return optuna.load_study(study_name=summary.study_name, storage=storage).trials
