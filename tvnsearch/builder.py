"""Genome -> ``torch.nn.Module``; parameters, FLOPs and output shapes per block.

The builder decides nothing: ``tvnsearch.plan`` has fixed every op, width and stride. One
instance of a block, as built here (steps that a plan leaves out are absent)::

    x ─┬─ [1x1 expand, BN, ReLU] ─ spatial op ─ temporal op ─ [1x1 expand, BN] ─ [SE] ─ [gate]
       │    ─ [1x1 project, BN] ─┬─(+)─ act ─ [non-local] ─▶
       └──── [1x1 shortcut, BN] ──┘

FLOPs are counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` on the meta
device: 2 per multiply-accumulate of every convolution, matrix product and attention; pooling,
normalisation, activations and element-wise ops are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from tvnsearch.genome import Genome, describe_block
from tvnsearch.layers import (
    ACTIVATIONS,
    ContextGate,
    Head,
    NonLocal,
    Pointwise,
    Residual,
    SpatialConv,
    SpatialPool,
    SqueezeExcite,
    TemporalConv,
    TemporalPool,
)
from tvnsearch.plan import POOLS, InstancePlan, OpPlan, Shape, plan_network

if TYPE_CHECKING:
    from tvnsearch.streaming import StreamingTVN

DROPOUT = 0.5  # the paper's head


class TVN(nn.Module):
    """A Tiny Video Network: ``blocks[i]`` holds block i's instances; clips are (B, 3, T, H, W)."""

    def __init__(self, blocks: list[nn.Sequential], head: Head) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def features(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def build_model(
    genome: Genome, num_classes: int, *, dropout: float = DROPOUT
) -> TVN | StreamingTVN:
    """The sequential TVN; with ``pipeline_depth`` k > 0, the causal network pipelined in stages
    of k units (``tvnsearch.streaming``): same clip in, same logits shape out."""
    if genome.pipeline_depth > 0:
        from tvnsearch.streaming import build_streaming_model  # it builds on this module

        return build_streaming_model(genome, num_classes, dropout=dropout)
    plan = plan_network(genome)
    blocks = []
    for b in range(len(genome.blocks)):
        blocks.append(nn.Sequential(*[build_instance(p) for p in plan.block_instances(b)]))
    model = TVN(blocks, Head(plan.out_shape[0], num_classes, dropout))
    init_weights(model)
    return model


def build_instance(p: InstancePlan) -> nn.Module:
    """One instance of a block, as ``build_model`` builds it (default-initialised weights):
    what the lookup-table latency predictor times on its own."""
    c = p.in_shape[0]
    body: list[nn.Module] = []
    if p.expand_in:
        body += _conv_bn(Pointwise(c, p.expand_in), p.expand_in, "relu")
        c = p.expand_in
    if p.spatial:
        body += _spatial(p.spatial, c)
        c = p.spatial.width
    if p.temporal:
        body += _temporal(p.temporal, c)
        c = p.temporal.width
    if p.expand_out:
        body += _conv_bn(Pointwise(c, p.expand_out), p.expand_out, None)
        c = p.expand_out
    if p.squeeze_width:
        body.append(SqueezeExcite(c, p.squeeze_width))
    if p.context_gate:
        body.append(ContextGate(c))
    if p.project_out:
        body += _conv_bn(Pointwise(c, p.project_out), p.project_out, None)
        c = p.project_out
    shortcut = None
    if p.residual_stride is not None:
        shortcut = nn.Sequential(
            *_conv_bn(Pointwise(p.in_shape[0], c, stride=p.residual_stride), c, None)
        )
    instance = Residual(nn.Sequential(*body), shortcut, ACTIVATIONS[p.act]())
    if not p.non_local_width:
        return instance
    return nn.Sequential(instance, NonLocal(c, p.non_local_width))


def _conv_bn(conv: nn.Module, width: int, act: str | None) -> list[nn.Module]:
    # TF's batch-norm momentum 0.9 is PyTorch's 0.1; eps 1e-5 as in the reference.
    layers = [conv, nn.BatchNorm3d(width, eps=1e-5, momentum=0.1)]
    return layers + ([ACTIVATIONS[act]()] if act else [])


def _spatial(op: OpPlan, c: int) -> list[nn.Module]:
    if op.type in POOLS:
        return [SpatialPool(op.type, op.kernel, op.stride)]
    groups = op.width if op.type == "depth" else 1
    return _conv_bn(Pointwise(c, op.width), op.width, op.act) + _conv_bn(
        SpatialConv(op.width, op.width, op.kernel, op.stride, groups=groups), op.width, op.act
    )


def _temporal(op: OpPlan, c: int) -> list[nn.Module]:
    if op.type in POOLS:
        return [TemporalPool(op.type, op.kernel, op.stride)]
    return _conv_bn(TemporalConv(c, op.width, op.kernel, op.stride), op.width, op.act)


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions, a small normal head (``model.head.fc``), zero biases."""
    if model.head.fc.weight.is_meta:  # shapes only: initialising is slow there and meaningless
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.normal_(model.head.fc.weight, std=0.01)
    nn.init.zeros_(model.head.fc.bias)


@dataclass(frozen=True)
class BlockSummary:
    index: int
    description: str
    output_shape: Shape
    params: int
    flops: int


@dataclass(frozen=True)
class NetworkSummary:
    input_shape: Shape
    num_classes: int
    blocks: tuple[BlockSummary, ...]
    head_params: int
    head_flops: int

    @property
    def params(self) -> int:
        return self.head_params + sum(b.params for b in self.blocks)

    @property
    def flops(self) -> int:
        return self.head_flops + sum(b.flops for b in self.blocks)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def summarize(genome: Genome, num_classes: int) -> NetworkSummary:
    """Shapes, parameters and FLOPs of every block for one clip, measured on the meta device."""
    with torch.device("meta"):
        model = build_model(genome, num_classes).eval()
        x = torch.empty(1, 3, genome.num_frames, genome.resolution, genome.resolution)
    blocks = []
    for i, block in enumerate(model.blocks):
        x, flops = _forward_counting(block, x)
        blocks.append(
            BlockSummary(
                i, describe_block(genome.blocks[i]), tuple(x.shape[1:]), count_params(block), flops
            )
        )
    _, head_flops = _forward_counting(model.head, x)
    return NetworkSummary(
        (3, genome.num_frames, genome.resolution, genome.resolution),
        num_classes,
        tuple(blocks),
        count_params(model.head),
        head_flops,
    )


def _forward_counting(module: nn.Module, x: Tensor) -> tuple[Tensor, int]:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        y = module(x)
    return y, counter.get_total_flops()
