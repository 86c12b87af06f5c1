"""How a pipelined network is cut into stages, and the clocks and delays that follow; no torch.

A *unit* is one instance of a block as the plan lists it: its residual shortcut and its non-local
layer included, so that no residual ever crosses a stage boundary (a skip across a one-frame delay
would add features of two different frames). Pipelining depth k puts k consecutive units in one
stage; k = 0 keeps the whole network in one stage (causal, no delay).

Clocks: a unit whose input has passed temporal strides whose product is r receives an input on
frames 0, r, 2r, ... (its *rate*); a temporal stride s inside it emits on every s-th of those. A
stage boundary delays its sequence by one step: at a boundary of rate r that is r frames, and every
stage of a rate works on the same frames, so all of them run at once.

Temporal skips (an option, not a gene): stage i >= 1 also receives the input that stage i - 1 is
working on in the same frame, projected to its own shape. That path skips stage i - 1 and its
delay, so later stages see fresher (less processed) features and the pipeline's latency falls.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvnsearch.genome.plan import NetworkPlan


@dataclass(frozen=True)
class StageLayout:
    """Stage of every unit and the frame rates at which units and stages run."""

    depth: int  # the genome's pipeline_depth k; 0 = one stage
    temporal_skips: bool
    unit_stage: tuple[int, ...]
    unit_in_rate: tuple[int, ...]
    unit_out_rate: tuple[int, ...]

    @property
    def num_stages(self) -> int:
        return self.unit_stage[-1] + 1

    def stage_units(self, stage: int) -> tuple[int, ...]:
        return tuple(u for u, s in enumerate(self.unit_stage) if s == stage)

    def stage_in_rate(self, stage: int) -> int:
        return self.unit_in_rate[self.stage_units(stage)[0]]

    def stage_out_rate(self, stage: int) -> int:
        return self.unit_out_rate[self.stage_units(stage)[-1]]

    @property
    def output_rate(self) -> int:
        """Frames between two outputs of the head."""
        return self.unit_out_rate[-1]

    @property
    def latency_frames(self) -> int:
        """The head's output at frame t depends on input frames up to t - latency_frames."""
        age_in = [0]  # newest input frame behind each stage's own input, in frames of age
        newest = 0
        for stage in range(self.num_stages):
            newest = age_in[stage]
            if self.temporal_skips and stage > 0:
                newest = min(newest, age_in[stage - 1])
            age_in.append(newest + self.stage_out_rate(stage))
        return newest


def stage_layout(plan: NetworkPlan, depth: int, *, temporal_skips: bool = False) -> StageLayout:
    """Group the plan's units ``depth`` at a time (all in one stage when ``depth`` is 0)."""
    assert depth >= 0, depth
    stages, in_rates, out_rates = [], [], []
    rate = 1
    for u, p in enumerate(plan.instances):
        stages.append(u // depth if depth else 0)
        in_rates.append(rate)
        rate *= p.temporal.stride if p.temporal else 1
        out_rates.append(rate)
    return StageLayout(depth, temporal_skips, tuple(stages), tuple(in_rates), tuple(out_rates))
