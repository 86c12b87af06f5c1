from __future__ import annotations

import random

import torch

from tvnsearch import build_model, plan_network, published_genome
from tvnsearch.genome.plan import count_non_local_positions, same_size


def test_plan_shapes_equal_the_built_model_on_random_genomes(tiny_space) -> None:
    rng = random.Random(8)
    for _ in range(40):
        g = tiny_space.sample(rng)
        plan = plan_network(g)
        model = build_model(g, 3).eval()
        x = torch.randn(1, 3, g.num_frames, g.resolution, g.resolution)
        with torch.inference_mode():
            for b, block in enumerate(model.blocks):
                x = block(x)
                assert tuple(x.shape[1:]) == plan.block_instances(b)[-1].out_shape


def test_plan_is_torch_free_and_fast() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from tvnsearch.genome.plan import plan_network; "
        "from tvnsearch.genome.genes import Genome; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_same_size_is_ceil() -> None:
    assert [same_size(n, 3) for n in (1, 2, 3, 4, 7)] == [1, 1, 1, 2, 3]


def test_dead_genes_of_tvn2_after_the_frame_count_reaches_one() -> None:
    dead = {d.field for d in plan_network(published_genome("tvn2")).dead_genes}
    assert "blocks[1].temporal_type" not in dead  # block 1's maxpool takes T from 2 to 1
    assert all(f"blocks[{b}].temporal_kernel" in dead for b in range(2, 7))


def test_non_local_positions() -> None:
    assert count_non_local_positions(plan_network(published_genome("tvn1"))) == 0
