from __future__ import annotations

import pandas as pd
from genomes import genome

from tvnsearch.data.clips import ClipSpec
from tvnsearch.export.model_card import base_card, lineage_section, render_markdown
from tvnsearch.genome.cost import count_cost
from tvnsearch.train.weights import ModelInfo

FRAME = pd.DataFrame(
    {
        "candidate_id": [0, 1, 2, 3],
        "parent_id": pd.array([None, 0, 1, 0], dtype="Int64"),
        "mutation": ["random", "blocks[0].num_filters: 8 -> 16", "frame_stride: 1 -> 2", "x"],
        "genome_id": ["g0", "g1", "g2", "g3"],
        "status": ["trained", "trained", "failed", "trained"],
        "fitness": pd.array([0.5, 0.75, None, 0.25], dtype="Float64"),
    }
)


def test_the_lineage_goes_from_the_first_ancestor_mutation_by_mutation() -> None:
    steps = lineage_section(FRAME, 2)
    assert [s["candidate_id"] for s in steps] == [0, 1, 2]
    assert steps[0] == {
        "candidate_id": 0,
        "parent_id": None,
        "mutation": "random",
        "genome_id": "g0",
        "status": "trained",
        "fitness": 0.5,
    }
    assert steps[2]["parent_id"] == 1 and steps[2]["fitness"] is None
    assert all(type(s["candidate_id"]) is int for s in steps)  # JSON-ready, not numpy


def test_the_markdown_card_says_what_was_not_measured_and_escapes_table_cells() -> None:
    g = genome()
    info = ModelInfo(g, ClipSpec.of(g), ("left", "right"))
    card = base_card("net", info)
    assert card["cost"]["params"] == count_cost(g, 2).params
    card |= {
        "runtime": {"cpu_ms": 1.5, "cpu_device": "cpu|X|threads=1", "gpu_ms": None},
        "lineage": lineage_section(FRAME, 2),
        "tvn_format": {"fits": False, "why_not": "act: swish"},
        "files": {"genome.json": "the genome"},
    }
    text = render_markdown(card)
    assert "1.500 ms per clip on `cpu\\|X\\|threads=1`" in text
    assert "| GPU runtime | not measured |" in text and "| peak memory | not measured |" in text
    assert text.index("| 0 | random |") < text.index("| 2 | frame_stride: 1 -> 2 |")
    assert "`left`, `right`" in text and "no `tvn.json`" in text and "act: swish" in text
