"""Op-level features of a genome for the latency predictor, read from its plan without torch.

Every op that ``tvnsearch.models.layers`` runs is listed with its family, its work and the bytes it
reads and writes. Work is FLOPs for convolutions and attention, and window reads (output elements
times kernel size) for pooling, whose kernels loop over every window. Runtime on one device is close
to linear in these per family: a throughput, a bandwidth and a per-call overhead each.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tvnsearch.genome.genes import Genome
from tvnsearch.genome.plan import POOLS, InstancePlan, OpPlan, plan_network, same_size

FAMILIES = (
    "pointwise",  # 1x1 convolutions: expansions, projections, shortcuts, non-local embeddings
    "conv_std",
    "conv_depth",
    "conv_temporal",
    "maxpool",
    "avgpool",  # SAME average pooling also divides by the count of real elements
    "norm",  # batch norm, residual sums
    "relu",
    "swish",
    "hswish",
    "copy",  # frames folded into the batch, SAME padding: layout copies around 2-D kernels
    "global",  # SE and context gate: global mean, small convolutions, rescaling
    "attention",
    "head",
)
BYTES = 4  # float32


@dataclass(frozen=True)
class Op:
    """One kernel call: its work, the bytes it reads and writes, and the bytes it allocates."""

    family: str
    work: int
    bytes: int
    output: int


def network_ops(genome: Genome, num_classes: int) -> Iterator[Op]:
    plan = plan_network(genome)
    for p in plan.instances:
        yield from instance_ops(p)
    c, t, h, w = plan.out_shape
    yield Op("head", 2 * c * num_classes, BYTES * (c * t * h * w + c * num_classes), 0)


def instance_ops(p: InstancePlan) -> Iterator[Op]:
    walk = _Walk(*p.in_shape)
    if p.expand_in:
        yield from walk.conv("pointwise", p.expand_in, act="relu")
    if p.spatial:
        yield from walk.spatial(p.spatial)
    if p.temporal:
        yield from walk.temporal(p.temporal)
    if p.expand_out:
        yield from walk.conv("pointwise", p.expand_out)
    if p.squeeze_width:
        yield from walk.rescale(4 * walk.c * p.squeeze_width)
    if p.context_gate:
        yield from walk.rescale(2 * walk.c * walk.c)
    if p.project_out:
        yield from walk.conv("pointwise", p.project_out)
    if p.residual_stride is not None:
        c_in, positions = p.in_shape[0], walk.t * walk.h * walk.w
        flops, read = 2 * c_in * walk.c * positions, BYTES * c_in * (positions + walk.c)
        yield Op("pointwise", flops, read + walk.bytes, walk.bytes)
        yield walk.elementwise("norm")
        yield walk.elementwise("norm", num_inputs=2)  # the sum
    yield walk.elementwise(p.act)
    if p.non_local_width:
        yield from walk.non_local(p.non_local_width)


class _Walk:
    """The running shape of one instance while its ops are listed."""

    def __init__(self, c: int, t: int, h: int, w: int) -> None:
        self.c, self.t, self.h, self.w = c, t, h, w

    @property
    def bytes(self) -> int:
        return BYTES * self.c * self.t * self.h * self.w

    def conv(
        self,
        family: str,
        width: int,
        *,
        kernel: int = 1,
        stride: int = 1,
        frame_stride: int = 1,
        groups: int = 1,
        act: str | None = None,
    ) -> Iterator[Op]:
        c_in, bytes_in = self.c, self.bytes
        self.c, self.t = width, same_size(self.t, frame_stride)
        self.h, self.w = same_size(self.h, stride), same_size(self.w, stride)
        weights = width * (c_in // groups) * kernel
        flops = 2 * weights * self.t * self.h * self.w
        yield Op(family, flops, bytes_in + BYTES * weights + self.bytes, self.bytes)
        yield self.elementwise("norm")
        if act is not None:
            yield self.elementwise(act)

    def elementwise(self, family: str, *, num_inputs: int = 1) -> Op:
        return Op(family, 0, (num_inputs + 1) * self.bytes, self.bytes)

    def rescale(self, flops: int) -> Iterator[Op]:
        """Squeeze-and-excitation or a context gate: mean, tiny convolutions, multiply."""
        yield Op("global", flops, self.bytes + BYTES * flops // 2, 0)  # 2 FLOPs per weight
        yield self.elementwise("global")

    def spatial(self, op: OpPlan) -> Iterator[Op]:
        yield from (self.elementwise("copy"), self.elementwise("copy"))  # fold frames, pad
        if op.type in POOLS:
            bytes_in = self.bytes
            self.h, self.w = same_size(self.h, op.stride), same_size(self.w, op.stride)
            windows = self.bytes // BYTES * op.kernel**2
            yield Op(op.type, windows, bytes_in + self.bytes, self.bytes)
            return
        yield from self.conv("pointwise", op.width, act=op.act)
        family, groups = ("conv_depth", op.width) if op.type == "depth" else ("conv_std", 1)
        yield from self.conv(
            family, op.width, kernel=op.kernel**2, stride=op.stride, groups=groups, act=op.act
        )

    def temporal(self, op: OpPlan) -> Iterator[Op]:
        yield from (self.elementwise("copy"), self.elementwise("copy"))  # contiguous (T, H*W), pad
        if op.type in POOLS:
            bytes_in = self.bytes
            self.t = same_size(self.t, op.stride)
            yield Op(op.type, self.bytes // BYTES * op.kernel, bytes_in + self.bytes, self.bytes)
            return
        yield from self.conv(
            "conv_temporal", op.width, kernel=op.kernel, frame_stride=op.stride, act=op.act
        )

    def non_local(self, width: int) -> Iterator[Op]:
        n = self.t * self.h * self.w
        embedded = BYTES * width * n
        for _ in range(3):  # theta, phi, g
            weights = BYTES * self.c * width
            yield Op("pointwise", 2 * self.c * width * n, self.bytes + weights + embedded, embedded)
        scores = BYTES * n * n  # the kernel holds the N x N attention matrix
        yield Op("attention", 4 * n * n * width, 4 * embedded + 2 * scores, scores)
        weights = BYTES * self.c * width
        yield Op("pointwise", 2 * width * self.c * n, embedded + weights + self.bytes, self.bytes)
        yield self.elementwise("norm")
        yield self.elementwise("norm", num_inputs=2)  # the sum
