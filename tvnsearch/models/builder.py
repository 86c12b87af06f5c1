"""Genome -> ``torch.nn.Module``; parameters, FLOPs and output shapes per block.

The builder decides nothing: ``tvnsearch.genome.plan`` has fixed every op, width and stride;
``tvnsearch.models.instances`` builds each block instance.

FLOPs are counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` on the meta
device: 2 per multiply-accumulate of every convolution, matrix product and attention; pooling,
normalisation, activations and element-wise ops are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from tvnsearch.genome.genes import Genome, describe_block
from tvnsearch.genome.plan import Shape, plan_network
from tvnsearch.models.instances import DROPOUT, build_instance, init_weights
from tvnsearch.models.layers import Head, to_channels_last
from tvnsearch.models.streaming import StreamingTVN, build_streaming_model


class TVN(nn.Module):
    """A Tiny Video Network: ``blocks[i]`` holds block i's instances; clips are (B, 3, T, H, W)."""

    def __init__(self, blocks: list[nn.Sequential], head: Head) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def features(self, x: Tensor) -> Tensor:
        x = to_channels_last(x)  # kept by every layer: see ``tvnsearch.models.layers``
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def build_model(
    genome: Genome, num_classes: int, *, dropout: float = DROPOUT
) -> TVN | StreamingTVN:
    """The sequential TVN; with ``pipeline_depth`` k > 0, the causal network pipelined in stages
    of k units (``tvnsearch.models.streaming``): same clip in, same logits shape out."""
    if genome.pipeline_depth > 0:
        return build_streaming_model(genome, num_classes, dropout=dropout)
    plan = plan_network(genome)
    blocks = []
    for b in range(len(genome.blocks)):
        blocks.append(nn.Sequential(*[build_instance(p) for p in plan.block_instances(b)]))
    model = TVN(blocks, Head(plan.out_shape[0], num_classes, dropout))
    init_weights(model)
    return model


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
