"""Searches at equal training compute, for ``bench/search_quality.py`` (``compare``, ``front``).

Each search is the real loop (``Engine``, the strategy, the gate measuring every candidate on this
machine's CPU) with an in-process executor, one training at a time, until it has spent its compute:
``COMPUTE_FULL`` full trainings' worth of iterations. A candidate costs the iterations it trained:
the recipe's, or, with multi-fidelity training, the rung where it was stopped.

What makes dozens of searches fit in an hour is that trainings are shared, never approximated.
Training is deterministic under its seed, and a candidate that goes on past a rung continues the
very curve it would have followed unstopped (``tests/train/test_train.py``): so each network is
trained once, in full or as far as some search needed it, with scores at every rung, and every
search that meets it again (random search and evolution start from the same random genomes) reads
its result off that curve, and is charged for it as if it had trained it. The curves are kept
between benchmark runs in a folder named by the training settings and the data's path. A child
that inherits its parent's weights (``search.inherit_weights``) follows a curve of its own, kept
under its parent's weights' hash. The gate's verdict is shared the same way within a seed's
searches (one process), so every strategy of a seed meets the same constraint decisions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tvnsearch.files import atomic_write_bytes, atomic_write_text
from tvnsearch.genome.genes import Genome, genome_from_dict
from tvnsearch.genome.plan import network_id
from tvnsearch.genome.space import load_space
from tvnsearch.measure.gate import Gate, Verdict
from tvnsearch.measure.profile import Settings
from tvnsearch.measure.profiler import Profiler
from tvnsearch.search.engine import Engine, rung_history_of
from tvnsearch.search.inline import InlineExecutor
from tvnsearch.search.lineage import LineageWriter, read_lineage
from tvnsearch.search.progress import Progress, Tally
from tvnsearch.search.recipe import RunConfig
from tvnsearch.search.strategies import make_strategy
from tvnsearch.search.worker import Evaluation, Job
from tvnsearch.status import Status
from tvnsearch.train.fidelity import Cuts, rungs_to_json, stop_rung
from tvnsearch.train.training import TrainConfig, TrainData, prepare_data, train_model
from tvnsearch.train.weights import ModelInfo, weights_bytes

COMPUTE_FULL = 20  # each search's compute by default: this many full trainings' iterations


@dataclass(frozen=True)
class Arm:
    """One strategy as a search runs it."""

    strategy: str
    options: dict[str, Any] = field(default_factory=dict)
    rungs: int = 1  # 3: multi-fidelity (ASHA, reduction factor 3)
    inherit_weights: bool = False  # a mutated child starts from its parent's weights


ARMS = {
    # local.toml's evolution: 8 random, then tournaments of 4.
    "random": Arm("random"),
    "evolution": Arm("evolution", {"initial_size": 8, "tournament_size": 4}),
    "evolution+inherit": Arm(
        "evolution", {"initial_size": 8, "tournament_size": 4}, inherit_weights=True
    ),
    # About four times as many candidates for the same compute: the random phase and the
    # tournaments scaled alike.
    "evolution+asha": Arm("evolution", {"initial_size": 24, "tournament_size": 8}, rungs=3),
    "tpe": Arm("tpe"),
    "pareto": Arm("pareto", {"initial_size": 8, "tournament_size": 2}),
    "nsga2": Arm("nsga2", {"population_size": 8}),
}
SINGLE = ("random", "evolution", "evolution+asha", "evolution+inherit", "tpe")
MULTI = ("random", "pareto", "nsga2")


class BudgetSpent(Exception):
    """The search has trained for its compute: it ends here."""


class SharedVerdicts:
    """The gate, judging each network once for every search of this process."""

    def __init__(self, gate: Gate) -> None:
        self.gate, self.profilers = gate, gate.profilers
        self._verdicts: dict[str, Verdict] = {}

    def check(self, genome: Genome) -> Verdict:
        key = network_id(genome)
        if key not in self._verdicts:
            self._verdicts[key] = self.gate.check(genome)
        return dataclasses.replace(self._verdicts[key], genome_id=genome.id)

    def passes_bounds(self, genome: Genome) -> bool:
        return self.gate.passes_bounds(genome)


@dataclass
class SharedTraining:
    """The evaluator of one search: trainings read off the curves kept in ``folder`` (one JSON
    file per network and training seed), a network trained only where no curve reaches far
    enough; raises ``BudgetSpent`` once the search has spent ``budget`` iterations."""

    data: TrainData
    train: TrainConfig  # with the multi-fidelity arm's rungs: every curve is scored at them
    folder: Path
    budget: int
    multi_fidelity: bool
    spent: int = 0
    num_trained_here: int = 0  # trainings this search ran (the others were read off curves)

    def __call__(self, job: Job, task: object) -> Evaluation:
        if self.spent >= self.budget:
            raise BudgetSpent
        genome, cuts, parent = job.genome, job.cuts, job.parent_weights
        wanted = cuts if self.multi_fidelity else (None,) * (self.train.rungs - 1)
        # A child that inherits follows a curve of its own: one per parent's weights.
        start = f"-from-{hashlib.sha256(parent).hexdigest()[:16]}" if parent else ""
        path = self.folder / f"{network_id(genome)}{start}-seed{self.train.seed}.json"
        entry = json.loads(path.read_text()) if path.exists() else None
        if entry is None or (entry["curve"] and stop_rung(_curve(entry), wanted) is None):
            entry = self._trained(job, wanted, entry, path)
        if entry["status"] != Status.TRAINED:
            self.spent += entry["iterations"]
            return Evaluation(Status.FAILED, reason=entry["reason"], iterations=None)
        curve = _curve(entry)
        reached = curve[: stop_rung(curve, wanted) + 1]
        iterations, fitness = reached[-1]
        self.spent += iterations
        weights = path.with_suffix(".safetensors")
        in_full = iterations == curve[-1][0] == self.train.iterations
        return Evaluation(
            Status.TRAINED,
            fitness=fitness,
            fitness_noise=entry["noise"] if iterations == curve[-1][0] else None,
            train_seconds=entry["seconds_per_iteration"] * iterations,
            iterations=iterations,
            rungs=rungs_to_json(reached if self.multi_fidelity else reached[-1:]),
            inherited=entry["inherited"] if parent else None,
            weights=weights.read_bytes() if in_full and weights.exists() else None,
        )

    def _trained(self, job: Job, cuts: Cuts, kept: dict | None, path: Path) -> dict:
        result, model = train_model(
            job.genome, self.data, self.train, cuts, parent_weights=job.parent_weights
        )
        self.num_trained_here += 1
        if model is not None and result.iterations == self.train.iterations:
            ds = self.data.dataset
            info = ModelInfo(job.genome, result.clip, ds.classes, ds.multi_label)
            atomic_write_bytes(path.with_suffix(".safetensors"), weights_bytes(model, info))
        entry = {
            "status": str(result.status),
            "reason": result.reason,
            "iterations": result.iterations,
            "curve": [list(p) for p in result.rungs],
            "noise": result.fitness_noise,
            "seconds_per_iteration": result.train_seconds / max(1, result.iterations),
            "inherited": result.inherited,
        }
        if kept is None or len(entry["curve"]) > len(kept["curve"]):
            atomic_write_text(path, json.dumps(entry) + "\n")
        return entry


def _curve(entry: dict) -> tuple[tuple[int, float], ...]:
    return tuple((int(i), float(f)) for i, f in entry["curve"])


def run_seed(job: tuple[int, list[str], RunConfig, str, str, Path, int]) -> list[dict[str, Any]]:
    """Every arm's search for one seed, in this (fresh) process, each until it has spent
    ``compute`` full trainings' iterations; one summary per search."""
    seed, arms, recipe, data_path, cache, work, compute = job
    torch.set_num_threads(1)  # one core for training, as a search's worker
    frames = dataclasses.replace(recipe.data, cache_dir=str(cache)).frame_cache()
    data = prepare_data(data_path, frames)
    settings = Settings(device="cpu", threads=1)
    gate = Gate(
        recipe.constraints,
        num_classes=data.dataset.num_classes,
        profilers={"cpu": Profiler(settings)},
    )
    verdicts = SharedVerdicts(gate)
    return [_search(name, seed, recipe, data, verdicts, work, compute) for name in arms]


def curves_folder(work: Path, train: TrainConfig, data_path: str) -> Path:
    """Where the curves of these training settings on this data are kept."""
    key = json.dumps([dataclasses.asdict(train), data_path], sort_keys=True)
    folder = work / f"curves-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _search(
    name: str,
    seed: int,
    recipe: RunConfig,
    data: TrainData,
    gate: SharedVerdicts,
    work: Path,
    compute: int,
) -> dict[str, Any]:
    arm = ARMS[name]
    space = load_space(recipe.search.space)
    strategy = make_strategy(arm.strategy, space, seed=seed, **arm.options)
    strategy.feasible = gate.passes_bounds
    train = dataclasses.replace(recipe.train, rungs=ARMS["evolution+asha"].rungs)
    budget = compute * recipe.train.iterations
    folder = curves_folder(work, train, str(data.dataset.source))
    training = SharedTraining(data, train, folder, budget, arm.rungs > 1)
    run_dir = work / "runs" / f"{name}-seed{seed}"
    tally = Tally(100_000)
    weights: dict[int, bytes] = {}  # this search's trained candidates', for children to inherit
    with LineageWriter(run_dir) as writer:
        engine = Engine(
            strategy,
            gate,  # type: ignore[arg-type]  # a Gate whose verdicts are shared
            InlineExecutor(training),
            writer,
            run_id=run_dir.name,
            tally=tally,
            num_workers=1,
            rung_history=rung_history_of(train, []) if arm.rungs > 1 else None,
            save_weights=weights.__setitem__,
            load_weights=weights.get if arm.inherit_weights else None,
            progress=Progress(tally, stream=io.StringIO()),
        )
        with contextlib.suppress(BudgetSpent):
            engine.run()
    print(
        f"  {name:<15} seed {seed}: {tally.done} told, {tally.trained} trained "
        f"({training.num_trained_here} trained here), pid {os.getpid()}",
        flush=True,
    )
    return {"arm": name, "seed": seed, "run_dir": str(run_dir)}


def from_scratch(
    genomes: list[Genome], recipe: RunConfig, data_path: str, cache: str, work: Path
) -> list[float | None]:
    """Each genome's fitness trained from scratch with the searches' settings: what the
    architecture a search found is worth apart from any weights it inherited (read off the kept
    curves where a search trained it from scratch already)."""
    torch.set_num_threads(1)
    frames = dataclasses.replace(recipe.data, cache_dir=str(cache)).frame_cache()
    data = prepare_data(data_path, frames)
    train = dataclasses.replace(recipe.train, rungs=ARMS["evolution+asha"].rungs)
    folder = curves_folder(work, train, str(data.dataset.source))
    training = SharedTraining(data, train, folder, budget=2**62, multi_fidelity=False)
    return [training(Job(genome), None).fitness for genome in genomes]


def best_genome(run_dir: str | Path, full: int) -> Genome | None:
    """The genome of the fittest candidate trained in full, within the search's compute."""
    frame = read_lineage(run_dir)
    trained = frame[(frame["iterations"] == full) & frame["fitness"].notna()]
    if not len(trained):
        return None
    row = trained.sort_values(["fitness", "candidate_id"], ascending=[False, True]).iloc[0]
    return genome_from_dict(json.loads(row["genome_json"]))


def spent_and_best(run_dir: str | Path, full: int) -> pd.DataFrame:
    """Row by row in the order told: iterations spent so far and, among candidates trained in
    full, the best fitness so far (NaN before the first)."""
    frame = read_lineage(run_dir).sort_values("num_asked_at_tell", kind="stable")
    iterations = frame["iterations"].to_numpy(dtype=float, na_value=0.0)
    iterations[frame["status"].to_numpy() == str(Status.DUPLICATE)] = 0.0  # nothing trained
    fitness = frame["fitness"].to_numpy(dtype=float, na_value=np.nan)
    full_fitness = np.where(iterations == full, fitness, np.nan)
    return pd.DataFrame(
        {
            "spent": np.cumsum(iterations),
            "best": pd.Series(full_fitness).cummax().to_numpy(),
            "status": frame["status"].astype(str).to_numpy(),
        }
    )


def best_at(curve: pd.DataFrame, compute: np.ndarray) -> np.ndarray:
    """The best fitness of ``spent_and_best`` once ``compute`` iterations had been spent."""
    best = curve["best"].ffill().to_numpy()
    index = np.searchsorted(curve["spent"].to_numpy(), compute, side="right") - 1
    return np.where(index >= 0, best[np.maximum(index, 0)], np.nan)


def wilcoxon_greater(differences: list[float]) -> tuple[float, int]:
    """Wilcoxon's signed-rank test, exact, one-sided: the p-value that paired differences this
    far above zero arise by chance when none is favoured (every sign pattern equally likely);
    zeros dropped (Wilcoxon's rule). And the number of pairs it used. For 5 pairs the smallest
    p-value there is, all five positive, is 1/32 = 0.031."""
    d = np.array([x for x in differences if x != 0.0])
    if not len(d):
        return 1.0, 0
    ranks = pd.Series(np.abs(d)).rank(method="average").to_numpy()
    observed = ranks[d > 0].sum()
    signs = np.array(np.meshgrid(*[[0, 1]] * len(d))).reshape(len(d), -1).T
    totals = signs @ ranks
    return float(np.mean(totals >= observed - 1e-9)), len(d)
