"""Small hand-made genomes for tests: a block with every gene given, overridable one by one."""

from __future__ import annotations

from tvnsearch.genome.genes import PLAIN_BLOCK, Block, Genome, plain_block


def block(**genes: object) -> Block:
    """``PLAIN_BLOCK`` (a 3x3 conv of 8 filters, nothing else) with ``genes`` changed."""
    return plain_block(**genes)


def genome(
    *blocks: Block,
    resolution: int = 16,
    num_frames: int = 4,
    frame_stride: int = 1,
    pipeline_depth: int = 0,
) -> Genome:
    return Genome(resolution, num_frames, frame_stride, pipeline_depth, blocks or (PLAIN_BLOCK,))


def small_genome(*, non_local_width: int = 0, num_filters: int = 8, resolution: int = 32) -> Genome:
    one = block(
        spatial_stride=2,
        temporal_kernel=2,
        num_filters=num_filters,
        expansion=2,
        squeeze_ratio=0.25,
        context_gate=True,
        non_local_width=non_local_width,
        skip=True,
        act="swish",
        num_repeats=2,
    )
    return genome(one, resolution=resolution, num_frames=4)
