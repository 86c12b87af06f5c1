"""One instance of a block as a ``torch.nn.Module``, and the weight initialisation.

The module decides nothing: ``tvnsearch.genome.plan`` has fixed every op, width and stride. One
instance of a block, as built here (steps that a plan leaves out are absent)::

    x ─┬─ [1x1 expand, BN, ReLU] ─ spatial op ─ temporal op ─ [1x1 expand, BN] ─ [SE] ─ [gate]
       │    ─ [1x1 project, BN] ─┬─(+)─ act ─ [non-local] ─▶
       └──── [1x1 shortcut, BN] ──┘

The clip network (``tvnsearch.models.builder``) and the causal one (``tvnsearch.models.streaming``)
both stack these.
"""

from __future__ import annotations

from torch import nn

from tvnsearch.genome.plan import POOLS, InstancePlan, OpPlan
from tvnsearch.models.layers import (
    ACTIVATIONS,
    ContextGate,
    NonLocal,
    Pointwise,
    Residual,
    SpatialConv,
    SpatialPool,
    SqueezeExcite,
    TemporalConv,
    TemporalPool,
)

DROPOUT = 0.5  # the paper's head


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
