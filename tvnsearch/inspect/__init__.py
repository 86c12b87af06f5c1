"""Reading a run: Pareto fronts over its lineage and their hypervolume, and plots of the front and
of the search's progress."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "hypervolume": ["Reference", "hypervolume_by_told", "reference_for"],
        "pareto": ["OBJECTIVES", "pareto_front"],
        "plots": ["write_pareto_plot", "write_progress_plot"],
    },
)
