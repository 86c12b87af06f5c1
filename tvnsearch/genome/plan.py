"""Every architectural decision of a genome, made once, without torch.

``plan_network`` walks the genome exactly as the reference TVN code does (see SEMANTICS.md in the
reference folder) and returns, for every instance of every block, which ops run, at which width and
stride, and the shapes in and out. The builder turns a plan into modules without deciding anything;
validation and ``show`` read shapes and dead genes from the same plan, and ``network_id`` names a
network by its plan, so that genomes that differ only in dead genes are known to be one network.

Shapes are ``(C, T, H, W)`` for one clip. All padding is TensorFlow SAME: ``out = ceil(in / s)``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from tvnsearch.genome.genes import Block, Genome

Shape = tuple[int, int, int, int]
POOLS = ("maxpool", "avgpool")


@dataclass(frozen=True)
class OpPlan:
    """A spatial or temporal op: conv types get a pointwise/temporal conv to ``width``."""

    type: str
    kernel: int
    stride: int
    width: int
    act: str | None  # None for a pooling op, which has no activation


@dataclass(frozen=True)
class InstancePlan:
    """One repeat of one block, in execution order (None = the step does not run)."""

    block: int
    repeat: int
    in_shape: Shape
    expand_in: int | None  # inverted bottleneck: 1x1 conv + BN + ReLU to this width
    spatial: OpPlan | None
    temporal: OpPlan | None
    expand_out: int | None  # 1x1 conv + BN (no act) to this width
    squeeze_width: int | None  # squeeze-and-excitation hidden width
    context_gate: bool
    project_out: int | None  # inverted bottleneck: 1x1 conv + BN back to num_filters
    residual_stride: int | None  # 1x1 projection shortcut with this stride
    act: str
    non_local_width: int | None
    out_shape: Shape


@dataclass(frozen=True)
class DeadGene:
    """A gene that cannot change the network, and why."""

    field: str
    reason: str


@dataclass(frozen=True)
class NetworkPlan:
    input_shape: Shape
    instances: tuple[InstancePlan, ...]
    dead_genes: tuple[DeadGene, ...]

    @property
    def out_shape(self) -> Shape:
        return self.instances[-1].out_shape

    def block_instances(self, block: int) -> tuple[InstancePlan, ...]:
        return tuple(p for p in self.instances if p.block == block)


def same_size(size: int, stride: int) -> int:
    return -(-size // stride)


def plan_network(genome: Genome, *, in_channels: int = 3) -> NetworkPlan:
    shape: Shape = (in_channels, genome.num_frames, genome.resolution, genome.resolution)
    instances = []
    for b, block in enumerate(genome.blocks):
        for r in range(block.num_repeats):
            instance = plan_instance(block, b, r, shape)
            instances.append(instance)
            shape = instance.out_shape
    input_shape = (in_channels, genome.num_frames, genome.resolution, genome.resolution)
    return NetworkPlan(input_shape, tuple(instances), _dead_genes(genome, instances))


def plan_instance(block: Block, b: int, r: int, in_shape: Shape) -> InstancePlan:
    """Repeat 0 uses the block's strides; later repeats stride 1, temporal op on even repeats."""
    c, t, h, w = in_shape
    expanded = max(block.num_filters * block.expansion, block.num_filters)
    inverted = block.inverted_bottleneck and block.expansion > 0
    op_width = expanded if block.inverted_bottleneck else block.num_filters
    spatial_stride = block.spatial_stride if r == 0 else 1
    temporal_stride = block.temporal_stride if r == 0 else 1
    expand_in = expanded if inverted else None
    c = expand_in or c
    spatial = None
    if block.spatial_kernel > 1:
        is_conv = block.spatial_type not in POOLS
        c = op_width if is_conv else c
        act = block.spatial_act if is_conv else None
        spatial = OpPlan(block.spatial_type, block.spatial_kernel, spatial_stride, c, act)
        h, w = same_size(h, spatial_stride), same_size(w, spatial_stride)
    temporal = None
    if block.temporal_kernel > 1 and t > 1 and r % 2 == 0:
        is_conv = block.temporal_type not in POOLS
        c = op_width if is_conv else c
        act = block.temporal_act if is_conv else None
        temporal = OpPlan(block.temporal_type, block.temporal_kernel, temporal_stride, c, act)
        t = same_size(t, temporal_stride)
    expand_out = expanded if block.expansion > 0 and not inverted else None
    c = expand_out or c
    # The reference sizes SE from `expanded`, equal to the width here in every genome it
    # builds; sizing from the actual width keeps the other genomes buildable too.
    squeeze = max(int(c * block.squeeze_ratio), 8) if block.squeeze_ratio > 0 else None
    project_out = block.num_filters if inverted else None
    c = project_out or c
    residual = None
    if block.skip and t == in_shape[1]:
        residual = spatial_stride if (h, w) != in_shape[2:] else 1
    return InstancePlan(
        block=b,
        repeat=r,
        in_shape=in_shape,
        expand_in=expand_in,
        spatial=spatial,
        temporal=temporal,
        expand_out=expand_out,
        squeeze_width=squeeze,
        context_gate=block.context_gate,
        project_out=project_out,
        residual_stride=residual,
        act=block.act,
        non_local_width=block.non_local_width or None,
        out_shape=(c, t, h, w),
    )


@functools.lru_cache(maxsize=4096)
def network_id(genome: Genome) -> str:
    """16 hex digits naming what ``genome`` builds and trains on, where ``Genome.id`` names its
    genes: equal for genomes whose differences the builder never sees (dead genes, a squeeze
    ratio that rounds to the same width), so a mutation that changes nothing built is known
    for one, and a network trained once is not trained again under other genes.

    Kept for the genomes seen last: a child's id is asked by the mutation that made it, the
    strategy that hands it out and the engine that screens and releases it, and a plan costs
    about 0.2 ms."""
    plan = plan_network(genome)
    dead_stride = any(d.field == "frame_stride" for d in plan.dead_genes)
    frame_stride = None if dead_stride else genome.frame_stride  # a clip's, not a layer's
    # Stages group ``pipeline_depth`` units each (``tvnsearch.models.stages``): any depth past
    # the number of units is one stage, as that number is; 0 is the clip network.
    units_per_stage = min(genome.pipeline_depth, len(plan.instances))
    # A dataclass's repr lists its fields and values in order: the same on every host and run,
    # and a fifth of the cost of a JSON form.
    built = repr((plan.instances, frame_stride, units_per_stage))
    return hashlib.sha256(built.encode()).hexdigest()[:16]


def _dead_genes(genome: Genome, instances: list[InstancePlan]) -> tuple[DeadGene, ...]:
    dead = []
    if genome.num_frames == 1:
        # ``ClipSpec.span`` is 1: a one-frame clip reads the same frame whatever the stride.
        dead.append(DeadGene("frame_stride", "a one-frame clip has no stride"))
    for b, block in enumerate(genome.blocks):
        own = [p for p in instances if p.block == b]
        dead += [
            DeadGene(f"blocks[{b}].{field}", why) for field, why in _dead_block_genes(block, own)
        ]
    return tuple(dead)


def _dead_block_genes(block: Block, instances: list[InstancePlan]) -> list[tuple[str, str]]:
    """Read off the block's plan: an op that does not run, or runs without the gene."""
    first = instances[0]
    dead = _dead_spatial_genes(first.spatial) + _dead_temporal_genes(first)
    if block.expansion == 0:
        dead.append(("inverted_bottleneck", "expansion 0 leaves no wider layer to invert"))
    if not any(_has_conv(p) for p in instances):
        dead.append(("num_filters", "no convolution in the block takes its width"))
    if all(p.out_shape[1] != p.in_shape[1] for p in instances):
        dead.append(("skip", "every repeat changes the frame count, so no shortcut fits"))
    return dead


def _dead_spatial_genes(op: OpPlan | None) -> list[tuple[str, str]]:
    if op is None:
        why = "spatial kernel 1 skips the spatial op"
        return [(f, why) for f in ("spatial_type", "spatial_stride", "spatial_act")]
    return [("spatial_act", "a pooling op has no activation")] if op.act is None else []


def _dead_temporal_genes(first: InstancePlan) -> list[tuple[str, str]]:
    if first.in_shape[1] == 1:
        why = "the frame count is already 1, so no temporal op runs"
        names = ("temporal_type", "temporal_kernel", "temporal_stride", "temporal_act")
        return [(f, why) for f in names]
    if first.temporal is None:
        why = "temporal kernel 1 skips the temporal op"
        return [(f, why) for f in ("temporal_type", "temporal_stride", "temporal_act")]
    return (
        [("temporal_act", "a pooling op has no activation")] if first.temporal.act is None else []
    )


def _has_conv(p: InstancePlan) -> bool:
    ops = [op for op in (p.spatial, p.temporal) if op is not None and op.type not in POOLS]
    return bool(ops or p.expand_in or p.expand_out or p.project_out)


def count_non_local_positions(plan: NetworkPlan) -> int:
    """The largest T*H*W that a non-local layer attends over (its attention is N x N)."""
    sizes = [
        p.out_shape[1] * p.out_shape[2] * p.out_shape[3]
        for p in plan.instances
        if p.non_local_width
    ]
    return max(sizes, default=0)
