"""A search recipe: frozen dataclasses read from TOML, with checked ``--set key=value`` overrides.

A recipe has six tables: ``[search]`` (space, strategy and its ``[search.options]``, budget, seed),
``[data]``, ``[train]`` (the fields of ``tvnsearch.train.config.TrainConfig``), ``[constraints]``
(``tvnsearch.measure.constraints.Constraints``), ``[resources]`` and ``[profiler]`` (the runtime
budgets are measured in, and the node they are measured on). Paths in a recipe file resolve
against the file's folder; paths given with ``--set`` against the current folder. Every unknown key
and wrongly typed value is named. ``recipe_toml`` writes a recipe back with absolute paths: the
frozen copy that a run folder keeps, which is all ``resume`` needs besides the lineage.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import re
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tvnsearch.data.frame_files import CODECS, Storage
from tvnsearch.errors import InputError, Problem
from tvnsearch.files import read_toml
from tvnsearch.measure.constraints import TIME_LIMITS, Constraints, constraints_from_dict
from tvnsearch.measure.file_timing import command_problem
from tvnsearch.measure.runtimes import RUNTIMES
from tvnsearch.train.config import TrainConfig

if TYPE_CHECKING:
    from tvnsearch.data.frame_cache import FrameCache

Limits = dict[str, str | tuple[str, ...]]  # a table's key: its conditions, "op number" each


@dataclass(frozen=True)
class SearchSection:
    space: str  # a search space TOML
    budget: int  # candidates told at most: trained, rejected, failed and duplicates alike
    # Trained candidates wanted (the paper's "200 random, then 500 rounds" is 700 trained); the
    # search ends when it has them, or at ``budget``, whichever comes first. None: at ``budget``.
    num_trained: int | None = None
    strategy: str = "evolution"  # a name in tvnsearch.search.strategies.STRATEGIES
    seed: int = 0
    name: str = "search"  # the run folder is results/<name>-<timestamp>
    keep_weights: bool = True  # trained weights in RUN/weights/, for export
    # A mutated child starts from its parent's trained weights wherever a tensor keeps its shape
    # (the layers the mutation left alone); needs keep_weights. Off: every candidate from scratch.
    inherit_weights: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # the strategy's keyword arguments

    LIMITS: ClassVar[Limits] = {"budget": ">= 1", "num_trained": ">= 1"}


@dataclass(frozen=True)
class DataSection:
    path: str  # class folders, or a .csv / .jsonl list
    cache_dir: str | None = None  # decoded frames; default: the machine's shared cache
    # Cached frames' shorter side, px; None: the largest clip resolution of the space (of the
    # genome, for ``tvnsearch train``), written into the run's frozen recipe.
    cache_size: int | None = None
    val_fraction: float = 0.2  # held out per class when the data has no split
    split_seed: int = 0
    # How the frame cache keeps each video (``tvnsearch.data.frame_files.Storage``): faster
    # videos put on a grid of cache_fps; jpeg (any frame alone, fast), h264 (several times
    # smaller, for large frames) or raw; quality 1-100 (h264: 90 is x264's CRF 18).
    cache_fps: float | None = Storage.max_fps
    cache_codec: str = Storage.codec
    cache_quality: int = Storage.quality
    cache_budget_gb: float | None = None  # the most the cache folder may hold; None: no bound

    LIMITS: ClassVar[Limits] = {
        "cache_size": Storage.LIMITS["short_side"],
        "val_fraction": ("> 0", "< 1"),
        "cache_fps": Storage.LIMITS["max_fps"],
        "cache_quality": Storage.LIMITS["quality"],
        "cache_budget_gb": "> 0",
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"cache_codec": CODECS}

    def sized(self, resolution: int) -> DataSection:
        """These settings with ``cache_size`` set to ``resolution`` where it is not set."""
        return (
            self
            if self.cache_size is not None
            else dataclasses.replace(self, cache_size=resolution)
        )

    def frame_cache(self) -> FrameCache:
        """The frame cache these settings describe (at the machine's default folder unless
        ``cache_dir`` names one: resolved where this runs, so each node finds its own)."""
        from tvnsearch.data.frame_cache import FrameCache, cache_dir

        if self.cache_size is None:
            raise ValueError("data.cache_size is not set: size it first (DataSection.sized)")

        budget = None if self.cache_budget_gb is None else round(self.cache_budget_gb * 1e9)
        return FrameCache(
            cache_dir(self.cache_dir),
            self.cache_size,
            max_fps=self.cache_fps,
            codec=self.cache_codec,
            quality=self.cache_quality,
            budget=budget,
        )


@dataclass(frozen=True)
class ResourcesSection:
    num_workers: int = 1  # training tasks in flight
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    profiler_threads: int = 1  # CPU cores a profiler reserves (and pins itself to)
    num_profilers: int = 1  # per device kind: measurements that run at once, each on its cores
    max_retries: int = 1  # attempts again after a worker process dies, then recorded failed
    address: str | None = None  # a Ray cluster ("auto", "host:6379"); none: embedded local Ray
    num_cpus: int | None = None  # embedded Ray's CPUs; default: every usable core

    LIMITS: ClassVar[Limits] = {
        "num_workers": ">= 1",
        "cpus_per_worker": "> 0",
        "gpus_per_worker": ">= 0",
        "profiler_threads": ">= 1",
        "num_profilers": ">= 1",
        "max_retries": ">= 0",
        "num_cpus": ">= 1",
    }


@dataclass(frozen=True)
class ProfilerSection:
    # What every runtime budget is measured in (``tvnsearch.measure.runtimes``): the lineage's
    # cpu_ms and gpu_ms, the Pareto axes and the model card's latency are this runtime's.
    runtime: str = "eager"
    # Ray custom resources of the node to measure on (``{ jetson = 1 }``): every profiler is
    # placed on a node that has them (a target device that joined the cluster with
    # ``ray start --resources``), and its measurements carry that node's device signature.
    resources: dict[str, float] = field(default_factory=dict)
    # A device that cannot run Ray (a phone over adb, a board over ssh): a shell command that
    # times the runtime's file there and prints a JSON line (``tvnsearch.measure.file_timing``).
    command: str = ""

    LIMITS: ClassVar[Limits] = {}  # the amounts of ``resources``: checked by RunConfig
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"runtime": tuple(RUNTIMES)}


@dataclass(frozen=True)
class RunConfig:
    search: SearchSection
    data: DataSection
    train: TrainConfig
    constraints: Constraints
    resources: ResourcesSection
    profiler: ProfilerSection = field(default_factory=ProfilerSection)

    def __post_init__(self) -> None:
        """What one table cannot say alone (each table's ``LIMITS`` are checked as it is read)."""
        problems = []
        wanted = self.search.num_trained
        if wanted is not None and wanted > self.search.budget:
            why = f"must be at most search.budget ({self.search.budget}), but got {wanted}"
            problems.append(Problem("search.num_trained", why))
        if self.search.inherit_weights and not self.search.keep_weights:
            why = "needs search.keep_weights = true: a child starts from its parent's kept weights"
            problems.append(Problem("search.inherit_weights", why))
        name = self.search.name
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", name):
            why = f"must be a plain folder name (letters, digits, . _ -), but got {name!r}"
            problems.append(Problem("search.name", why))
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.train.device):
            why = f"must be cpu, cuda or cuda:N, but got {self.train.device!r}"
            problems.append(Problem("train.device", why))
        problems += _placement_problems(self.profiler, self.resources)
        problems += _runtime_problems(self.profiler, self.constraints)
        if problems:
            raise InputError("recipe", problems)


def _placement_problems(profiler: ProfilerSection, resources: ResourcesSection) -> list[Problem]:
    problems = [
        Problem(f"profiler.resources.{name}", f"must be a number > 0, but got {amount!r}")
        for name, amount in profiler.resources.items()
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not amount > 0
    ]
    problems += [
        Problem(f"profiler.resources.{name}", "is Ray's own: set resources.profiler_threads")
        for name in profiler.resources
        if name in ("CPU", "GPU", "memory", "object_store_memory")
    ]
    if profiler.resources and resources.address is None:
        why = "places the profilers on a node of a Ray cluster: needs resources.address"
        problems.append(Problem("profiler.resources", why))
    return problems


def _runtime_problems(profiler: ProfilerSection, constraints: Constraints) -> list[Problem]:
    runtime = RUNTIMES.get(profiler.runtime)
    if runtime is None:  # CHOICES names it
        return []
    if profiler.command and (why := command_problem(profiler.command)):
        return [Problem("profiler.command", why)]
    if profiler.command and runtime.file_name is None:
        files = [name for name, r in RUNTIMES.items() if r.file_name]
        why = f"times a file: needs profiler.runtime to be one of {files}, not {runtime.name}"
        return [Problem("profiler.command", why)]
    return [
        Problem("profiler.runtime", f"{runtime.name} does not run on {kind}, but {limit} is set")
        for kind, limit in TIME_LIMITS.items()
        if getattr(constraints, limit) is not None and kind not in runtime.devices
    ]


PATH_KEYS = {("search", "space"), ("data", "path"), ("data", "cache_dir")}


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a recipe TOML file and apply ``key=value`` overrides (``train.iterations=50``)."""
    path = Path(path)
    data = read_toml(path)
    _resolve_paths(data, path.resolve().parent)
    for override in overrides:
        _apply(data, override)
    return recipe_from_dict(data, source=str(path))


# A recipe's tables and their records (``constraints`` is read by its own module).
TABLES: dict[str, type] = {
    "search": SearchSection,
    "data": DataSection,
    "train": TrainConfig,
    "constraints": Constraints,
    "resources": ResourcesSection,
    "profiler": ProfilerSection,
}


def recipe_from_dict(data: dict[str, Any], *, source: str) -> RunConfig:
    sections = {name: cls for name, cls in TABLES.items() if name != "constraints"}
    problems = [Problem(k, "unknown table") for k in data if k not in TABLES]
    built = {name: _section(data, name, cls, problems) for name, cls in sections.items()}
    if problems:
        raise InputError(source, problems)
    constraints = constraints_from_dict(
        data.get("constraints", {}), source=source, name="constraints"
    )
    try:
        return RunConfig(constraints=constraints, **built)
    except InputError as exc:
        raise InputError(source, list(exc.problems)) from None


def table_from_dict(data: dict[str, Any], name: str, cls: type, *, source: str) -> Any:
    """One table of a recipe (``data["train"]`` as ``TrainConfig``...), every problem named."""
    problems: list[Problem] = []
    table = _section(data, name, cls, problems)
    if problems:
        raise InputError(source, problems)
    return table


def _section(data: dict[str, Any], name: str, cls: type, problems: list[Problem]) -> Any:
    table = data.get(name, {})
    if not isinstance(table, dict):
        problems.append(Problem(name, f"must be a table, but got {table!r}"))
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems += [Problem(f"{name}.{k}", "unknown key") for k in table if k not in fields]
    required = [n for n, f in fields.items() if _is_required(f)]
    problems += [Problem(f"{name}.{k}", "is required") for k in required if k not in table]
    for key, value in table.items():
        why = _type_problem(hints[key], value) if key in hints else None
        if why:
            problems.append(Problem(f"{name}.{key}", why))
    if problems:
        return None
    built = cls(**table)
    problems += limit_problems(built, name)
    return built


def limit_problems(table: Any, name: str) -> list[Problem]:
    """Each value of ``table`` (a recipe table's dataclass) outside its class's ``LIMITS``
    (``{"iterations": ">= 1", "val_fraction": ("> 0", "< 1")}``), named ``name.key``; a value
    of None is left unchecked (it means "not set")."""
    cls = type(table)
    return [
        Problem(f"{name}.{key}", f"must be {allowed_range(cls, key)}, but got {value!r}")
        for key in getattr(cls, "LIMITS", {})
        if (value := getattr(table, key)) is not None and not within_limits(cls, key, value)
    ] + [
        Problem(f"{name}.{key}", f"must be one of {list(choices)}, but got {value!r}")
        for key, choices in getattr(cls, "CHOICES", {}).items()
        if (value := getattr(table, key)) is not None and value not in choices
    ]


def allowed_range(cls: type, key: str) -> str | None:
    """What the ``LIMITS`` of ``cls`` allow for ``key`` (``"> 0 and < 1"``); None: any value."""
    limits = getattr(cls, "LIMITS", {}).get(key)
    return None if limits is None else " and ".join(_conditions(limits))


def within_limits(cls: type, key: str, value: float) -> bool:
    """Whether ``value`` meets every condition of ``cls.LIMITS[key]`` (and is finite)."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    limits = getattr(cls, "LIMITS", {}).get(key, ())
    return all(_holds(value, c) for c in _conditions(limits))


def _conditions(limits: str | tuple[str, ...]) -> tuple[str, ...]:
    return (limits,) if isinstance(limits, str) else limits


_OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def _holds(value: float, condition: str) -> bool:
    op, bound = condition.split()
    # An integer bound stays exact: a float would round a seed's 2**63 - 1 up to 2**63.
    return _OPERATORS[op](value, int(bound) if bound.lstrip("-").isdigit() else float(bound))


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _type_problem(hint: Any, value: Any) -> str | None:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:  # "not set", as a card's JSON writes it
        return None
    allowed = tuple(typing.get_origin(a) or a for a in allowed if a is not type(None))
    ok = any(_is_a(value, a) for a in allowed)
    names = " or ".join(a.__name__ for a in allowed)
    return None if ok else f"must be {names}, but got {value!r}"


def _is_a(value: Any, kind: type) -> bool:
    if isinstance(value, bool) != (kind is bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _resolve_paths(data: dict[str, Any], folder: Path) -> None:
    for section, key in PATH_KEYS:
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value:
            data[section][key] = str((folder / Path(value).expanduser()).resolve())


def _apply(data: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    keys = key.strip().split(".")
    if not sep or len(keys) < 2 or not all(keys):
        raise InputError("--set", f"{override!r}: must be section.key=value")
    table = data
    for part in keys[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise InputError("--set", f"{key}: {part} is not a table")
    value = _parse_value(text.strip())
    if tuple(keys) in PATH_KEYS and isinstance(value, str):
        value = str(Path(value).expanduser().resolve())
    table[keys[-1]] = value
    _check_override_key(keys)


def _check_override_key(keys: list[str]) -> None:
    cls = TABLES.get(keys[0])
    names = {f.name for f in dataclasses.fields(cls)} if cls else set()
    is_option = keys[:2] == ["search", "options"] and len(keys) == 3
    is_resource = keys[:2] == ["profiler", "resources"] and len(keys) == 3
    if not (is_option or is_resource) and (len(keys) != 2 or keys[1] not in names):
        raise InputError("--set", f"{'.'.join(keys)}: unknown key")


def _parse_value(text: str) -> Any:
    """A TOML value (``50``, ``1e-3``, ``true``, ``"x"``, ``[1, 2]``), else the text itself."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def recipe_toml(config: RunConfig, *, space: str | None = None) -> str:
    """The recipe as TOML with every field written out (``space`` replaces the space path)."""
    tables = {name: dataclasses.asdict(getattr(config, name)) for name in TABLES}
    if space is not None:
        tables["search"]["space"] = space
    options = tables["search"].pop("options")
    lines: list[str] = []
    for name, table in [*tables.items(), ("search.options", options)]:
        lines += [f"[{name}]"] + [f"{k} = {_toml(v)}" for k, v in table.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)  # strings and arrays: JSON's forms are valid TOML
