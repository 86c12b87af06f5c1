"""The search: pure ask/tell strategies, the engine loop, the worker function, recipes, run
folders, the lineage schema and writer, progress; ``executors`` is the one module that imports Ray.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "strategies": ["Candidate", "RandomSearch", "Result", "Strategy", "make_strategy"],
        "evolution": ["Evolution"],
        "pareto_evolution": ["ParetoEvolution"],
        "engine": ["Engine"],
        "inline": ["InlineExecutor"],
        "worker": ["Evaluation", "Job", "Task", "evaluate"],
        "recipe": ["RunConfig", "load_recipe"],
        "runs": ["create_run", "load_run", "run_status"],
        "launch": ["run_search"],
        "lineage": ["LineageRecord", "LineageWriter", "read_lineage"],
        "progress": ["Progress", "Tally"],
    },
)
