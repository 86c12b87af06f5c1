"""Reading a run: Pareto fronts over its lineage and their hypervolume, plots of the front and of
the search's progress, and the run's live views: its Optuna journal (optuna-dashboard's store),
its HTML report with the lineage tree, and the summary a terminal prints when a search ends."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "hypervolume": ["Reference", "hypervolume_by_told", "reference_for"],
        "journal": ["sync_journal"],
        "pareto": ["OBJECTIVES", "pareto_front"],
        "plots": ["write_pareto_plot", "write_progress_plot"],
        "report": ["write_report"],
        "summary": ["summarize", "summary_table"],
    },
)
