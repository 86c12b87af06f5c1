"""Parameters, FLOPs and a memory lower bound of a genome, counted from its plan without torch.

The counts equal ``tvnsearch.models.builder.summarize`` exactly (the tests compare them on random
genomes of every shipped space) at about a thousandth of its cost, which makes them the gate's
first, cheapest check. FLOPs follow PyTorch's ``FlopCounterMode``: 2 per multiply-accumulate of
every convolution, matrix product and attention; pooling, normalisation, activations and
element-wise ops count nothing, and neither do biases.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvnsearch.genome.genes import Genome
from tvnsearch.genome.plan import POOLS, InstancePlan, OpPlan, Shape, plan_network, same_size

BYTES_PER_VALUE = 4  # float32


@dataclass(frozen=True)
class Cost:
    """Counts for one clip; ``min_memory_bytes`` is a bound no forward pass can go below."""

    params: int
    flops: int
    min_memory_bytes: int
    block_params: tuple[int, ...]
    block_flops: tuple[int, ...]


def count_cost(genome: Genome, num_classes: int) -> Cost:
    plan = plan_network(genome)
    num_blocks = len(genome.blocks)
    block_params, block_flops = [0] * num_blocks, [0] * num_blocks
    for p in plan.instances:
        params, flops = instance_cost(p, per_frame=genome.pipeline_depth > 0)
        block_params[p.block] += params
        block_flops[p.block] += flops
    width = plan.out_shape[0]
    params = sum(block_params) + width * num_classes + num_classes
    # A pipelined (causal) network's head classifies every output step, not the clip's mean.
    head_steps = plan.out_shape[1] if genome.pipeline_depth > 0 else 1
    # While an instance runs, its input and its output are both alive, beside the weights.
    activations = max(_numel(p.in_shape) + _numel(p.out_shape) for p in plan.instances)
    return Cost(
        params=params,
        flops=sum(block_flops) + 2 * width * num_classes * head_steps,
        min_memory_bytes=BYTES_PER_VALUE * (params + activations),
        block_params=tuple(block_params),
        block_flops=tuple(block_flops),
    )


def instance_cost(p: InstancePlan, *, per_frame: bool = False) -> tuple[int, int]:
    """(parameters, FLOPs) of one instance, step by step in the builder's order; ``per_frame``:
    causal, so squeeze-excite and the context gate squeeze every frame on its own."""
    counter = _Counter(p.in_shape, per_frame=per_frame)
    if p.expand_in:
        counter.conv(p.expand_in)
    if p.spatial:
        _spatial(counter, p.spatial)
    if p.temporal:
        counter.t = same_size(counter.t, p.temporal.stride)
        if p.temporal.type not in POOLS:
            counter.conv(p.temporal.width, kernel=p.temporal.kernel)
    if p.expand_out:
        counter.conv(p.expand_out)
    if p.squeeze_width:
        counter.global_conv(p.squeeze_width, then_back=True)
    if p.context_gate:
        counter.global_conv(counter.c)
    if p.project_out:
        counter.conv(p.project_out)
    if p.residual_stride is not None:
        counter.shortcut(p.in_shape[0], positions=_positions(p.out_shape))
    if p.non_local_width:
        counter.non_local(p.non_local_width)
    assert (counter.c, counter.t, counter.h, counter.w) == p.out_shape
    return counter.params, counter.flops


def _spatial(counter: _Counter, op: OpPlan) -> None:
    is_conv = op.type not in POOLS
    if is_conv:  # the pointwise conv runs before the stride
        counter.conv(op.width)
    counter.h, counter.w = same_size(counter.h, op.stride), same_size(counter.w, op.stride)
    if is_conv:
        groups = op.width if op.type == "depth" else 1
        counter.conv(op.width, kernel=op.kernel**2, groups=groups)


class _Counter:
    """Running width, shape, parameters and FLOPs while walking one instance."""

    def __init__(self, shape: Shape, *, per_frame: bool = False) -> None:
        self.c, self.t, self.h, self.w = shape
        self.params = self.flops = 0
        self.per_frame = per_frame

    def conv(self, width: int, *, kernel: int = 1, groups: int = 1) -> None:
        """A bias-free convolution to ``width`` then batch norm (scale and shift)."""
        weights = width * (self.c // groups) * kernel
        self.params += weights + 2 * width
        self.flops += 2 * weights * self.t * self.h * self.w
        self.c = width

    def global_conv(self, width: int, *, then_back: bool = False) -> None:
        """1x1x1 convolutions with bias on the globally pooled vector (SE, context gate)."""
        widths = (width, self.c) if then_back else (width,)
        c_in = self.c
        vectors = self.t if self.per_frame else 1
        for c_out in widths:
            self.params += c_in * c_out + c_out
            self.flops += 2 * c_in * c_out * vectors
            c_in = c_out

    def shortcut(self, c_in: int, *, positions: int) -> None:
        self.params += c_in * self.c + 2 * self.c
        self.flops += 2 * c_in * self.c * positions

    def non_local(self, width: int) -> None:
        """theta, phi, g (with bias), attention over all positions, output conv and batch norm."""
        n = self.t * self.h * self.w
        self.params += 3 * (self.c * width + width) + width * self.c + 2 * self.c
        self.flops += 4 * 2 * self.c * width * n + 4 * n * n * width


def _positions(shape: Shape) -> int:
    return shape[1] * shape[2] * shape[3]


def _numel(shape: Shape) -> int:
    return shape[0] * _positions(shape)
