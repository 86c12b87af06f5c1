"""Architectures as data: genomes, the published TVN format, search spaces, mutations, plans, cost.

A ``Genome`` is a frozen record of genes with a canonical JSON form and a content-hash id. This
room knows nothing of torch: the plan (``plan_network``) fixes every op, width and shape of a
genome, its cost (``count_cost``) is counted from that plan, and ``network_id`` names the network
it builds: one id for genomes that differ only in genes the builder never reads.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "genes": ["Block", "Genome", "describe_block", "genome_from_dict"],
        "tvn_format": [
            "PUBLISHED",
            "fits_tvn_format",
            "from_tvn_dict",
            "load_genome",
            "published_genome",
            "to_tvn_dict",
        ],
        "space": ["SearchSpace", "load_space", "space_from_dict"],
        "mutation": ["Mutation", "mutate"],
        "plan": ["NetworkPlan", "network_id", "plan_network"],
        "cost": ["Cost", "count_cost"],
    },
)
