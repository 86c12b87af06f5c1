from __future__ import annotations

import dataclasses
import random

import torch
from genomes import block, genome

from tvnsearch import build_model, plan_network, published_genome
from tvnsearch.data.clips import ClipSpec, frame_indices
from tvnsearch.genome.genes import Genome
from tvnsearch.genome.mutation import OPERATORS
from tvnsearch.genome.plan import count_non_local_positions, network_id, same_size
from tvnsearch.genome.space import Domain, SearchSpace


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


def with_gene(g: Genome, field: str, value: object) -> Genome:
    """``g`` with the gene named as ``DeadGene.field`` names it (``blocks[2].skip``) set."""
    if not field.startswith("blocks["):
        return dataclasses.replace(g, **{field: value})
    i, name = int(field[len("blocks[") : field.index("]")]), field.split(".")[1]
    blocks = list(g.blocks)
    blocks[i] = dataclasses.replace(blocks[i], **{name: value})
    return dataclasses.replace(g, blocks=tuple(blocks))


def domain(space: SearchSpace, field: str) -> Domain:
    return space.genome.get(field) or space.block[field.split(".")[-1]]


def built(g: Genome) -> tuple:
    """What ``g`` trains on and what the real builder makes of it: the clip's frames and size,
    every module with its settings (strides, kernels, pooling modes, stage clocks), and every
    parameter's shape."""
    with torch.device("meta"):
        model = build_model(g, 5)
    modules = [(name, type(m).__name__, _settings(m)) for name, m in model.named_modules()]
    shapes = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
    clip = ClipSpec.of(g)
    return clip.resolution, frame_indices(100, clip, 3), modules, shapes


def _settings(module: torch.nn.Module) -> list[tuple[str, str]]:
    plain = (int, float, str, bool, tuple, list)
    return sorted((k, repr(v)) for k, v in vars(module).items() if isinstance(v, plain))


def raw_child(parent: Genome, space: SearchSpace, rng: random.Random) -> Genome | None:
    """One operator applied as it comes, dead genes included (what ``mutate`` draws again)."""
    result = OPERATORS[rng.choice(list(OPERATORS))](parent, space, rng)
    return None if result is None or space.geometry_errors(result[0]) else result[0]


def dead_twin(parent: Genome, space: SearchSpace, rng: random.Random) -> Genome | None:
    twin = parent
    for dead in plan_network(parent).dead_genes:
        twin = with_gene(twin, dead.field, domain(space, dead.field).sample(rng))
    return None if twin == parent else twin


def test_one_network_id_is_one_built_network(space) -> None:
    rng = random.Random(5)
    seen = {True: 0, False: 0}
    for _ in range(40 if space.name.startswith("tiny") else 12):
        parent = space.sample(rng)
        parent_built = built(parent)
        others = [raw_child(parent, space, rng) for _ in range(4)] + [dead_twin(parent, space, rng)]
        for other in [o for o in others if o is not None]:
            same = network_id(other) == network_id(parent)
            assert (built(other) == parent_built) == same, (parent, other)
            seen[same] += 1
    assert seen[True] >= 5 and seen[False] >= 20, seen


def test_dead_genes_cannot_change_the_network_id(space) -> None:
    rng = random.Random(21)
    fields = set()
    for _ in range(300):
        g = space.sample(rng)
        for _ in range(3):  # every dead gene drawn again from its domain, all at once
            twin = dead_twin(g, space, rng)
            assert twin is None or network_id(twin) == network_id(g), (g, twin)
        fields |= {d.field.split(".")[-1] for d in plan_network(g).dead_genes}
    expected = {"temporal_type", "temporal_stride", "spatial_type", "spatial_act", "skip"}
    if space.name.startswith("tiny"):  # expansion 0 and pooling-only blocks
        expected |= {"inverted_bottleneck", "num_filters"}
    assert expected <= fields, fields


def test_genes_that_no_op_reads_are_dead() -> None:
    pools = genome(block(spatial_type="maxpool", temporal_type="avgpool", temporal_kernel=2))
    dead = {d.field for d in plan_network(pools).dead_genes}
    no_conv = {"spatial_act", "temporal_act", "inverted_bottleneck", "num_filters"}
    assert dead == {f"blocks[0].{f}" for f in no_conv}
    halves_frames = block(temporal_kernel=2, temporal_stride=2, skip=True)
    assert "blocks[0].skip" in _dead(genome(halves_frames))
    assert "blocks[0].skip" not in _dead(genome(dataclasses.replace(halves_frames, num_repeats=2)))
    assert "frame_stride" in _dead(genome(num_frames=1, frame_stride=3))
    assert "frame_stride" not in _dead(genome(num_frames=2, frame_stride=3))


def _dead(g: Genome) -> set[str]:
    return {d.field for d in plan_network(g).dead_genes}


def test_the_network_id_names_what_is_built_not_the_genes() -> None:
    se = genome(block(squeeze_ratio=0.1))  # 8 channels: a hidden width of 8 (at least 8)
    assert network_id(genome(block(squeeze_ratio=0.5))) == network_id(se)
    assert genome(block(squeeze_ratio=0.5)).id != se.id
    assert network_id(genome(block(squeeze_ratio=0.0))) != network_id(se)
    two_units = genome(block(num_repeats=2), pipeline_depth=2)
    deeper = dataclasses.replace(two_units, pipeline_depth=4)  # still one stage of both units
    assert network_id(deeper) == network_id(two_units) and built(deeper) == built(two_units)
    for depth in (0, 1):
        other = dataclasses.replace(two_units, pipeline_depth=depth)
        assert network_id(other) != network_id(two_units) and built(other) != built(two_units)
