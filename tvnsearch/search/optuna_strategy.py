"""Optuna samplers as strategies through Optuna's ask/tell: TPE, and NSGA-II for several objectives.

A genome is a set of conditional parameters: ``num_blocks`` first, then the genome's genes by
name, then ``b{i}.{gene}`` for every block ``i < num_blocks``. A list of choices becomes a
categorical, an integer range an integer (log-uniform when ``log``), a float range a float. A
range with an ``off`` value gets a categorical switch ``{name}.on`` first and its own parameter
only when switched on; Optuna learns how often to switch a gene off, so ``p_off`` is not used.
Genes fixed to one value are not parameters. Optuna refuses ``log`` with a ``step``: such a range
is asked as a log-uniform integer rounded to its step, as ``Range.sample`` does.

A genome with impossible geometry is told as failed and asked again. A rejected candidate is told
as pruned (TPE ranks pruned trials below every completed one, so it learns to avoid constraint
breakers), a failed one as failed (which the samplers ignore).

Resume: ``replay`` asks the sampler again at every recorded ask, seeded as before, and tells the
recorded results at the recorded points. With the same Optuna version and space this rebuilds the
very study, sampler RNG and NSGA-II generations: a resumed search goes on as an uninterrupted one
would, as for evolution. Should a re-asked genome differ from the recorded one (another Optuna
version, an edited space), the recorded genome is enqueued and asked instead: the study keeps all
it learned, but the candidates after that point may differ. Replay costs one sampler call per
recorded candidate, as long as those asks took in the first place.
"""

from __future__ import annotations

import math
import random
from abc import abstractmethod
from collections.abc import Iterator
from typing import ClassVar

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import BaseTrial, TrialState

from tvnsearch.genome.genes import BLOCK_FIELDS, GENOME_FIELDS, Block, Genome
from tvnsearch.genome.space import Choice, Domain, Range, SearchSpace, Value
from tvnsearch.search.strategies import (
    DIRECTIONS,
    Candidate,
    Objectives,
    Record,
    Result,
    Strategy,
    check_objectives,
)
from tvnsearch.status import Status

MAX_ASKS_PER_CANDIDATE = 1000  # asks whose genome has impossible geometry, before giving up


def distribution(domain: Domain) -> BaseDistribution:
    """The Optuna distribution of a domain's values (its ``off`` value aside)."""
    if isinstance(domain, Choice):
        return CategoricalDistribution(domain.values)
    if domain.is_float:  # Optuna includes the high end, a space excludes it
        high = math.nextafter(domain.high, domain.low)
        return FloatDistribution(domain.low, high, log=domain.log)
    top = domain.low + domain.step * ((domain.high - domain.low) // domain.step)
    if domain.log:
        return IntDistribution(domain.low, top, log=True)
    return IntDistribution(domain.low, top, step=domain.step)


def trial_state(status: Status | str, fitness: float | None) -> TrialState:
    """A candidate's fate as an Optuna trial state: complete with a fitness (trained, or a
    duplicate of a trained network), failed, or pruned (rejected, or a duplicate of a rejected
    network: stopped before training by a rule)."""
    if fitness is not None:
        return TrialState.COMPLETE
    return TrialState.FAIL if status == Status.FAILED else TrialState.PRUNED


def genome_from_trial(space: SearchSpace, trial: BaseTrial) -> Genome:
    """The genome a trial describes, asking its parameters in order (see the module doc)."""
    num_blocks = _suggest(trial, "num_blocks", space.genome["num_blocks"])
    genes = {name: _suggest(trial, name, space.genome[name]) for name in GENOME_FIELDS}
    blocks = tuple(
        Block(**{gene: _suggest(trial, f"b{i}.{gene}", space.block[gene]) for gene in BLOCK_FIELDS})
        for i in range(num_blocks)
    )
    return Genome(**genes, blocks=blocks)


def params_of(space: SearchSpace, genome: Genome) -> dict[str, Value]:
    """The parameters that describe ``genome``: the inverse of ``genome_from_trial``."""
    return trial_params(space, genome)[0]


def trial_params(
    space: SearchSpace, genome: Genome
) -> tuple[dict[str, Value], dict[str, BaseDistribution]]:
    """The parameters that describe ``genome`` and their distributions, as a trial of this
    space records them (``params_of``; the run's journal, ``tvnsearch.inspect.journal``)."""
    params: dict[str, Value] = {}
    distributions: dict[str, BaseDistribution] = {}
    for name, domain, value in _genes(space, genome):
        if _is_fixed(domain):
            continue
        if _has_off(domain):
            on = not (value == domain.off and type(value) is type(domain.off))
            params[f"{name}.on"] = on
            distributions[f"{name}.on"] = CategoricalDistribution((False, True))
            if not on:
                continue
        params[name], distributions[name] = value, distribution(domain)
    return params, distributions


def _genes(space: SearchSpace, genome: Genome) -> Iterator[tuple[str, Domain, Value]]:
    """Each parameter's name, domain and value, in the order ``genome_from_trial`` asks them."""
    yield "num_blocks", space.genome["num_blocks"], len(genome.blocks)
    for name in GENOME_FIELDS:
        yield name, space.genome[name], getattr(genome, name)
    for i, block in enumerate(genome.blocks):
        for gene in BLOCK_FIELDS:
            yield f"b{i}.{gene}", space.block[gene], getattr(block, gene)


def _suggest(trial: BaseTrial, name: str, domain: Domain) -> Value:
    if _is_fixed(domain):
        return domain.values[0]
    if _has_off(domain) and not trial.suggest_categorical(f"{name}.on", (False, True)):
        return domain.off
    dist = distribution(domain)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    value = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return domain.low + domain.step * round((value - domain.low) / domain.step)


def _is_fixed(domain: Domain) -> bool:
    return isinstance(domain, Choice) and len(domain.values) == 1


def _has_off(domain: Domain) -> bool:
    return isinstance(domain, Range) and domain.off is not None


class OptunaStrategy(Strategy):
    """An Optuna sampler behind the strategy protocol; ``objectives`` name lineage columns
    (``fitness`` or a ``Result.metrics`` key such as ``cpu_ms``) with their directions."""

    default_objectives: ClassVar[Objectives] = (("fitness", "maximize"),)

    def __init__(
        self, space: SearchSpace, *, seed: int, objectives: Objectives | None = None
    ) -> None:
        super().__init__(space, seed=seed)
        self.objectives = tuple(objectives or self.default_objectives)
        bad = [d for _, d in self.objectives if d not in DIRECTIONS]
        if bad or not self.objectives:
            raise ValueError(f"objectives need directions in {DIRECTIONS}, but got {objectives=}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial
        sampler_seed = random.Random(f"{seed}:sampler").getrandbits(32)  # what NumPy accepts
        self._study = optuna.create_study(
            sampler=self._sampler(sampler_seed), directions=[d for _, d in self.objectives]
        )
        self._trials: dict[int, optuna.Trial] = {}  # in flight, by candidate id

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.objectives if n != "fitness")

    @property
    def study(self) -> optuna.Study:
        """The underlying study, to read (its trials, Pareto front); tell through ``tell``."""
        return self._study

    @abstractmethod
    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler: ...

    def tell(self, candidate: Candidate, result: Result) -> None:
        check_objectives(candidate, result, self.objectives)
        super().tell(candidate, result)

    def _new(self, candidate_id: int) -> Candidate:
        for _ in range(MAX_ASKS_PER_CANDIDATE):
            trial = self._study.ask()
            genome = genome_from_trial(self.space, trial)
            if not self.space.geometry_errors(genome):
                self._trials[candidate_id] = trial
                return Candidate(candidate_id, genome, None, "optuna", self.name)
            self._study.tell(trial, state=TrialState.FAIL)
        raise ValueError(
            f"{self.name}: no genome with possible geometry in {MAX_ASKS_PER_CANDIDATE} asks "
            f"in space {self.space.name!r}"
        )

    def _learn(self, candidate: Candidate, result: Result) -> None:
        trial = self._trials.pop(candidate.candidate_id)
        state = trial_state(result.status, result.fitness)
        if state == TrialState.COMPLETE:
            self._study.tell(trial, [result.value(n) for n, _ in self.objectives])
        else:
            self._study.tell(trial, state=state)

    def _recorded(self, record: Record) -> Candidate:
        recorded = super()._recorded(record)
        candidate = self._new(record.candidate_id)  # the sampler's RNG moves on as it did
        if candidate.genome == recorded.genome:
            return candidate
        self._study.tell(self._trials.pop(record.candidate_id), state=TrialState.FAIL)
        self._study.enqueue_trial(params_of(self.space, recorded.genome))
        self._trials[record.candidate_id] = trial = self._study.ask()
        genome_from_trial(self.space, trial)  # a trial holds only the parameters asked of it
        return recorded


class TPE(OptunaStrategy):
    name = "tpe"

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        # The constant liar keeps parallel asks apart: in-flight trials count as bad guesses.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


class NSGAII(OptunaStrategy):
    name = "nsga2"
    default_objectives: ClassVar[Objectives] = (("fitness", "maximize"), ("cpu_ms", "minimize"))

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        objectives: Objectives | None = None,
        population_size: int = 50,
    ) -> None:
        self.population_size = population_size  # read by _sampler, during the base __init__
        super().__init__(space, seed=seed, objectives=objectives)

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(population_size=self.population_size, seed=seed)
