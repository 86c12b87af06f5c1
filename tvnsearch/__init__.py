"""tvnsearch: evolutionary neural-architecture search for tiny video networks.

The package is a house whose rooms are its concepts; dependence runs one way, from the top down
(``make lint`` checks it):

    cli ─ export ─ inspect ─ search ─ train | delta ─ measure | data ─ models ─ genome ─ status,
    errors, files

The names below are the public API, loaded on first use, so that the torch-free parts (genomes,
spaces, plans, mutations) load in milliseconds without torch.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "errors": ["InputError", "Problem"],
        "status": ["Status"],
        "genome.genes": ["Block", "Genome", "genome_from_dict"],
        "genome.tvn_format": [
            "PUBLISHED",
            "from_tvn_dict",
            "load_genome",
            "published_genome",
            "to_tvn_dict",
        ],
        "genome.space": ["SearchSpace", "load_space"],
        "genome.mutation": ["mutate"],
        "genome.plan": ["plan_network"],
        "models.builder": ["build_model", "summarize"],
        "models.streaming": ["build_streaming_model"],
        "measure.stream_timing": ["measure_stream"],
    },
)
