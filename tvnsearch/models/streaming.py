"""Causal, pipelined TVNs: a whole clip at once for training, or one frame at a time.

With pipelining depth k > 0 (see ``tvnsearch.models.stages``) the units are grouped k per stage and
each stage boundary delays its sequence by one step. At every frame all stages work at once, stage i
on what stage i - 1 produced on its previous step; ``run_stage`` is that unit of work, and stages
share nothing within a frame, so ``tvnsearch.models.pipeline`` can run them on threads or CUDA
streams::

    frame t ─▶ stage 0 ─▶ [reg 0] ─▶ stage 1 ─▶ [reg 1] ─▶ ... ─▶ stage S-1 ─▶ head ─▶ logits
                  └────── temporal skip (option) ──────┘ (stage i also gets stage i-1's input)

``forward(clip)`` computes the same as stepping through the clip frame by frame, vectorised: a
delay is the boundary's sequence shifted by one step, zeros first; backpropagation through time is
autograd over that unrolled pipeline. The head emits logits on every step of its rate; the
clip's logits are their mean over all ``ceil(T / rate)`` steps, the steps that the filling
pipeline computed from zeros included: their count is then the same for every k, and a short clip
in a deep pipeline still has a defined output (those early steps act as causal padding does).

State: a flat list of tensors, zeros at the start (``initial_state``), batch first except for
``state[0]``, the frame counter (int64, always on the CPU so that reading it never waits for a
GPU). Every stage owns a contiguous range of slots: first its output register (for the last stage
the latest logits, then their running sum), then the buffers of its temporal ops and non-local
layers in unit order.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tvnsearch.genome.genes import Genome
from tvnsearch.genome.plan import NetworkPlan, plan_network
from tvnsearch.models.causal import FrameHead
from tvnsearch.models.causal_unit import CausalUnit, causal_unit
from tvnsearch.models.instances import DROPOUT, build_instance, init_weights
from tvnsearch.models.layers import Pointwise, to_channels_last
from tvnsearch.models.stages import StageLayout, stage_layout


class StageSkip(nn.Module):
    """Temporal skip into ``stage``: stage - 1's input, projected (1x1 conv, BN) to its shape.

    The norm's scale starts at zero, so a new network starts as the one without skips.
    """

    def __init__(self, proj: Pointwise, norm: nn.BatchNorm3d, stage: int, stride: int) -> None:
        super().__init__()
        self.proj, self.norm, self.stage, self.stride = proj, norm, stage, stride
        nn.init.zeros_(self.norm.weight)

    def forward(self, source: Tensor) -> Tensor:
        return self.step(source[:, :, :: self.stride])

    def step(self, source: Tensor) -> Tensor:
        return self.norm(self.proj(source))


class StreamingTVN(nn.Module):
    """A causal TVN in stages; clips are (B, 3, T, H, W), frames (B, 3, H, W)."""

    def __init__(
        self,
        blocks: list[nn.Sequential],
        head: FrameHead,
        skips: list[StageSkip],
        layout: StageLayout,
        output_shapes: list[list[int]],
    ) -> None:
        super().__init__()
        self.blocks, self.head, self.skips = nn.ModuleList(blocks), head, nn.ModuleList(skips)
        self.layout = layout
        self.num_stages, self.output_rate = layout.num_stages, layout.output_rate
        self.stage_in_rate = [layout.stage_in_rate(s) for s in range(self.num_stages)]
        self.state_shapes, self.stage_lo, self.stage_hi = _allocate(self.units(), output_shapes)

    def units(self) -> list[CausalUnit]:
        return [unit for block in self.blocks for unit in block]

    def forward(self, x: Tensor) -> Tensor:  # named as ``TVN.forward``'s: exporters use it
        return self.head(self.features(x))

    def forward_steps(self, clip: Tensor) -> Tensor:
        """Logits of every output step, (B, ceil(T / output_rate), num_classes)."""
        return self.head.steps(self.features(clip))

    def features(self, clip: Tensor) -> Tensor:
        clip = to_channels_last(clip)  # kept by every layer: see ``tvnsearch.models.layers``
        source, x, y = clip, clip, clip
        for stage in range(self.num_stages):
            y = x
            for skip in self.skips:
                if skip.stage == stage:
                    y = y + skip(source)
            for block in self.blocks:
                for unit in block:
                    if unit.stage == stage:
                        y = unit(y)
            if stage < self.num_stages - 1:
                source, x = x, _delay(y)
        return y

    @torch.jit.export
    def initial_state(self, batch_size: int = 1) -> list[Tensor]:
        ref = self.head.fc.weight
        state = [torch.zeros([], dtype=torch.long)]
        for shape in self.state_shapes:
            size = [batch_size] + shape  # noqa: RUF005 (TorchScript cannot unpack a list here)
            state.append(torch.zeros(size, dtype=ref.dtype, device=ref.device))
        return state

    @torch.jit.export
    def step(self, frame: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """One frame through every stage, one after another: (latest logits, new state)."""
        parts: list[list[Tensor]] = []
        for stage in range(self.num_stages):
            parts.append(self.run_stage(stage, frame, state))
        return self.assemble(state, parts)

    @torch.jit.export
    def run_stage(self, stage: int, frame: Tensor, state: list[Tensor]) -> list[Tensor]:
        """Stage ``stage``'s work on ``frame``: the new values of the slots it owns."""
        lo, hi = self.stage_lo[stage], self.stage_hi[stage]
        old, new = state[lo:hi], state[lo:hi]
        t = int(state[0])
        if t % self.stage_in_rate[stage] != 0:
            return new
        y: Tensor | None = self._stage_input(stage, frame, state)
        for block in self.blocks:
            for unit in block:
                if unit.stage == stage and y is not None:
                    y = unit.step(y, t, old, new)
        if y is None:
            return new
        if stage < self.num_stages - 1:
            new[0] = y
        else:
            new[0] = self.head.steps(y)[:, 0]
            new[1] = old[1] + new[0]
        return new

    @torch.jit.export
    def assemble(
        self, state: list[Tensor], parts: list[list[Tensor]]
    ) -> tuple[Tensor, list[Tensor]]:
        """The new state from every stage's ``run_stage``, and the latest logits in it."""
        new = [state[0] + 1]
        for part in parts:
            new.extend(part)
        return new[self.stage_lo[-1]], new

    @torch.jit.export
    def clip_logits(self, state: list[Tensor]) -> Tensor:
        """The mean of the logits of every output step so far (the whole clip's, at its end)."""
        num_steps = (int(state[0]) - 1) // self.output_rate + 1
        return state[self.stage_lo[-1] + 1] / num_steps

    def _stage_input(self, stage: int, frame: Tensor, state: list[Tensor]) -> Tensor:
        x = frame.unsqueeze(2) if stage == 0 else state[self.stage_lo[stage - 1]]
        for skip in self.skips:
            if skip.stage == stage:
                source = frame.unsqueeze(2) if stage == 1 else state[self.stage_lo[stage - 2]]
                x = x + skip.step(source)
        return x


def _delay(y: Tensor) -> Tensor:
    return torch.cat([torch.zeros_like(y[:, :, :1]), y[:, :, :-1]], 2)


def _allocate(
    units: list[CausalUnit], output_shapes: list[list[int]]
) -> tuple[list[list[int]], list[int], list[int]]:
    shapes: list[list[int]] = []
    lo, hi = [], []
    for stage, output in enumerate(output_shapes):
        own = [output] if stage < len(output_shapes) - 1 else [output, output]
        for unit in (u for u in units if u.stage == stage):
            own += unit.allocate(len(own))
        lo.append(1 + len(shapes))  # slot 0 is the frame counter
        shapes += own
        hi.append(1 + len(shapes))
    return shapes, lo, hi


def build_streaming_model(
    genome: Genome, num_classes: int, *, temporal_skips: bool = False, dropout: float = DROPOUT
) -> StreamingTVN:
    """The causal network of ``genome`` in stages of ``genome.pipeline_depth`` units (one stage
    when it is 0); ``temporal_skips`` adds the skips of ``tvnsearch.models.stages``."""
    plan = plan_network(genome)
    layout = stage_layout(plan, genome.pipeline_depth, temporal_skips=temporal_skips)
    blocks: list[list[CausalUnit]] = [[] for _ in genome.blocks]
    for u, p in enumerate(plan.instances):
        unit = causal_unit(
            build_instance(p),
            p,
            stage=layout.unit_stage[u],
            in_rate=layout.unit_in_rate[u],
            out_rate=layout.unit_out_rate[u],
        )
        blocks[p.block].append(unit)
    skips = [_skip(plan, layout, s) for s in range(1, layout.num_stages)] if temporal_skips else []
    outputs = [_stage_output(plan, layout, s) for s in range(layout.num_stages - 1)]
    head = FrameHead(plan.out_shape[0], num_classes, dropout)
    model = StreamingTVN(
        [nn.Sequential(*b) for b in blocks], head, skips, layout, [*outputs, [num_classes]]
    )
    init_weights(model)
    return model


def _stage_output(plan: NetworkPlan, layout: StageLayout, stage: int) -> list[int]:
    c, _, h, w = plan.instances[layout.stage_units(stage)[-1]].out_shape
    return [c, 1, h, w]


def _skip(plan: NetworkPlan, layout: StageLayout, stage: int) -> StageSkip:
    source = plan.instances[layout.stage_units(stage - 1)[0]].in_shape
    target = plan.instances[layout.stage_units(stage)[0]].in_shape
    spatial = 1
    for u in layout.stage_units(stage - 1):
        op = plan.instances[u].spatial
        spatial *= op.stride if op else 1
    stride = layout.stage_in_rate(stage) // layout.stage_in_rate(stage - 1)
    proj = Pointwise(source[0], target[0], stride=spatial)
    return StageSkip(proj, nn.BatchNorm3d(target[0]), stage, stride)
