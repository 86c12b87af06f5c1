from __future__ import annotations

import random

import pytest
from conftest import SPACES_DIR

from tvnsearch import PUBLISHED, load_space, published_genome, summarize
from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Genome


def random_genomes(num_per_space: int, seed: int, *, max_instances: int = 64) -> list[Genome]:
    """Genomes of every space; few instances keep ``summarize`` (the reference) quick."""
    rng = random.Random(seed)
    genomes = []
    for name in ("tvn", "tvn_mobile", "tiny", "tiny_streaming"):
        space = load_space(SPACES_DIR / f"{name}.toml")
        samples = (space.sample(rng) for _ in range(1000))
        small = (g for g in samples if sum(b.num_repeats for b in g.blocks) <= max_instances)
        genomes += [next(small) for _ in range(num_per_space)]
    return genomes


def assert_counts_equal_summary(genome: Genome, num_classes: int) -> None:
    cost, summary = count_cost(genome, num_classes), summarize(genome, num_classes)
    assert cost.params == summary.params
    assert cost.flops == summary.flops
    assert cost.block_params == tuple(b.params for b in summary.blocks)
    assert cost.block_flops == tuple(b.flops for b in summary.blocks)


@pytest.mark.parametrize("genome", random_genomes(5, seed=1, max_instances=6), ids=lambda g: g.id)
def test_counts_equal_the_measured_summary_on_random_genomes(genome: Genome) -> None:
    assert_counts_equal_summary(genome, 10)


@pytest.mark.parametrize("name", PUBLISHED)
def test_counts_equal_the_measured_summary_on_published_networks(name: str) -> None:
    assert_counts_equal_summary(published_genome(name), 400)


@pytest.mark.slow
def test_counts_equal_the_measured_summary_on_many_genomes() -> None:
    for genome in random_genomes(60, seed=12):
        assert_counts_equal_summary(genome, 7)


def test_memory_bound_covers_weights_and_the_largest_step() -> None:
    g = published_genome("tvn1")  # first block: 3x2x224x224 -> 256x1x112x112
    cost = count_cost(g, 400)
    largest_step = 3 * 2 * 224 * 224 + 256 * 1 * 112 * 112
    assert cost.min_memory_bytes >= 4 * (cost.params + largest_step)
