"""One causal unit: an instance of a block as ``tvnsearch.models.builder`` builds it, made causal.

The builder's instance is taken apart, never rebuilt, so that a unit has the same ops, widths and
parameters as the sequential network's instance; only the ops that see time (and the spatial
pooling, which TorchScript cannot compile as ``tvnsearch.models.layers`` writes it) are swapped for
their versions in ``tvnsearch.models.causal``::

    x ─┬─ pre (per-frame ops) ─ temporal op ─ post (per-frame ops) ─┬─(+)─ act ─ [non-local] ─▶
       └──────────────────────── [shortcut] ─────────────────────────┘
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from tvnsearch.genome.plan import InstancePlan
from tvnsearch.models.causal import (
    CausalNonLocal,
    CausalTemporalConv,
    CausalTemporalPool,
    FrameContextGate,
    FramePool,
    FrameSqueezeExcite,
)
from tvnsearch.models.layers import (
    ContextGate,
    Residual,
    SpatialPool,
    SqueezeExcite,
    TemporalConv,
    TemporalPool,
)

Stateful = CausalTemporalConv | CausalTemporalPool | CausalNonLocal


class CausalUnit(nn.Module):
    """``act(post(temporal(pre(x))) + shortcut(x))``, then the non-local layer if any."""

    def __init__(
        self,
        parts: dict[str, nn.Module | None],
        *,
        stage: int,
        in_rate: int,
        out_shape: tuple[int, int, int, int],
    ) -> None:
        super().__init__()
        self.pre, self.temporal, self.post = parts["pre"], parts["temporal"], parts["post"]
        self.shortcut, self.act, self.non_local = parts["shortcut"], parts["act"], parts["nl"]
        self.stage, self.in_rate = stage, in_rate
        self.out_size = list(out_shape[2:])  # (H, W) of the temporal op and non-local buffers

    def forward(self, x: Tensor) -> Tensor:
        y = self.pre(x)
        if self.temporal is not None:
            y = self.temporal(y)
        return self._finish(x, self.post(y))

    def step(self, x: Tensor, t: int, old: list[Tensor], new: list[Tensor]) -> Tensor | None:
        """The unit on the step that arrives at frame ``t``; None when its stride emits nothing."""
        y = self.pre(x)
        if self.temporal is not None:
            z = self.temporal.step(y, t, old, new)
            if z is None:
                return None
            y = z
        y = self.post(y)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        y = self.act(y)
        if self.non_local is not None:
            y = self.non_local.step(y, t, old, new)
        return y

    def _finish(self, x: Tensor, y: Tensor) -> Tensor:
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        y = self.act(y)
        if self.non_local is not None:
            y = self.non_local(y)
        return y

    def stateful(self) -> list[Stateful]:
        return [m for m in (self.temporal, self.non_local) if m is not None]

    def allocate(self, first_slot: int) -> list[list[int]]:
        """Give the unit's buffers the slots from ``first_slot`` on; their shapes (no batch)."""
        shapes: list[list[int]] = []
        h, w = self.out_size
        for op in self.stateful():
            op.slot = first_slot + len(shapes)
            if isinstance(op, CausalNonLocal):
                shapes += op.buffer_shapes(h, w)
            else:
                shapes.append(op.buffer_shape(h, w))
        return shapes


def causal_unit(
    built: nn.Module, p: InstancePlan, *, stage: int, in_rate: int, out_rate: int
) -> CausalUnit:
    """The causal unit of ``built = tvnsearch.models.instances.build_instance(p)``; shares its
    modules."""
    residual, non_local = (
        (built[0], built[1]) if isinstance(built, nn.Sequential) else (built, None)
    )
    assert isinstance(residual, Residual), type(residual)
    body = [_causal_op(m, p, in_rate) for m in residual.body]
    split = next((i for i, m in enumerate(body) if _sees_time(m)), None)
    parts: dict[str, nn.Module | None] = {
        "pre": nn.Sequential(*body) if split is None else nn.Sequential(*body[:split]),
        "temporal": None if split is None else body[split],
        "post": nn.Sequential() if split is None else nn.Sequential(*body[split + 1 :]),
        "shortcut": residual.shortcut,
        "act": residual.act,
        "nl": None,
    }
    if non_local is not None:
        names = ("theta", "phi", "g", "out", "norm")
        parts["nl"] = CausalNonLocal(
            {n: getattr(non_local, n) for n in names}, window=p.out_shape[1], rate=out_rate
        )
    return CausalUnit(parts, stage=stage, in_rate=in_rate, out_shape=p.out_shape)


def _sees_time(m: nn.Module) -> bool:
    return isinstance(m, CausalTemporalConv | CausalTemporalPool)


_CAUSAL: dict[type[nn.Module], Callable[[nn.Module, InstancePlan, int], nn.Module]] = {
    TemporalConv: lambda m, p, rate: CausalTemporalConv(m.conv, m.kernel, m.stride, rate),
    TemporalPool: lambda m, p, rate: CausalTemporalPool(
        m.mode, m.kernel, m.stride, rate, p.temporal.width
    ),
    SpatialPool: lambda m, p, rate: FramePool(m.mode, m.kernel, m.stride),
    SqueezeExcite: lambda m, p, rate: FrameSqueezeExcite(m.reduce, m.expand),
    ContextGate: lambda m, p, rate: FrameContextGate(m.gate),
}


def _causal_op(m: nn.Module, p: InstancePlan, in_rate: int) -> nn.Module:
    convert = _CAUSAL.get(type(m))
    return m if convert is None else convert(m, p, in_rate)
