"""Delta inference for video: every linear layer recomputes only where its input changed.

``enable_delta`` copies a network, folds each batch norm into the convolution before it (so that
the delta covers conv + BN as one linear map, the activation staying after it) and swaps every
convolution and fully connected layer for its delta version (``tvnsearch.delta.conv``,
``tvnsearch.delta.linear``; the shared bookkeeping is ``tvnsearch.delta.layers``). Layers that
mix all positions (squeeze-excitation, context gate, non-local) run densely as before: their
outputs change everywhere when anything changes. ``tvnsearch.delta.measure`` times the result.

Feed it one frame per call, e.g. a ``num_frames=1`` TVN with clips ``(B, 3, 1, H, W)``::

    net = enable_delta(build_model(genome, 10).eval())
    for frame in frames:
        logits = net(frame[None, :, None])
    net.reset()  # before the next video
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from torch import Tensor, nn

from tvnsearch.delta.conv import DeltaConv2d, supports_delta
from tvnsearch.delta.layers import DeltaLayer, DeltaPolicy, LayerStats
from tvnsearch.delta.linear import DeltaLinear
from tvnsearch.models.inference import fold_batch_norms
from tvnsearch.models.layers import NonLocal


@dataclass(frozen=True)
class DeltaSummary:
    """Per-layer statistics of a delta network and their totals."""

    layers: tuple[LayerStats, ...]

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.layers)

    @property
    def work_share(self) -> float:
        """Multiply-accumulates done, as a share of what the dense layers would have done."""
        dense = sum(s.dense_macs for s in self.layers)
        return sum(s.work_share * s.dense_macs for s in self.layers) / max(dense, 1)

    @property
    def num_refreshes(self) -> int:
        return sum(s.num_refreshes for s in self.layers)


class DeltaNetwork(nn.Module):
    """A network whose convolutions and fully connected layers run as delta layers.

    Call it as the network it was made from. Its layers keep the last frame's input and output:
    ``reset`` before each new stream; outputs must not be modified in place.
    """

    def __init__(self, model: nn.Module, layers: dict[str, DeltaLayer]) -> None:
        super().__init__()
        self.model = model
        self.delta_layers = dict(layers)  # views into ``model``, by qualified name

    def forward(self, *args: Tensor) -> Tensor:
        return self.model(*args)

    def step(self, frame: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """One frame of a streaming network (``tvnsearch.models.streaming.StreamingTVN.step``)."""
        return self.model.step(frame, state)

    def reset(self) -> None:
        for layer in self.delta_layers.values():
            layer.reset()

    def clear_stats(self) -> None:
        for layer in self.delta_layers.values():
            layer.clear_stats()

    def summary(self) -> DeltaSummary:
        return DeltaSummary(tuple(layer.stats(n) for n, layer in self.delta_layers.items()))


def enable_delta(
    model: nn.Module,
    *,
    threshold: float = 0.0,
    refresh_limit: float = 0.05,
    all_layers: bool = False,
) -> DeltaNetwork:
    """A delta copy of ``model`` in eval mode; ``model`` itself is left as it was.

    ``threshold`` 0 is exact (to float rounding). Above 0, difference entries at most
    ``threshold`` are held back, and a layer is recomputed densely once the error they can
    cause passes ``refresh_limit`` times the norm of its output. Layers too small for delta to
    pay run densely unless ``all_layers`` (see ``tvnsearch.delta.layers``).
    """
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite number >= 0, but got {threshold=}.")
    if not (math.isfinite(refresh_limit) and refresh_limit > 0):
        raise ValueError(f"refresh_limit must be a finite number > 0, but got {refresh_limit=}.")
    copied = copy.deepcopy(model).eval()
    fold_batch_norms(copied)
    layers = swap_delta_layers(copied, DeltaPolicy(threshold, refresh_limit, all_layers))
    return DeltaNetwork(copied, layers)


def swap_delta_layers(module: nn.Module, policy: DeltaPolicy) -> dict[str, DeltaLayer]:
    """Replace, in place, every supported ``nn.Conv2d`` and every ``nn.Linear`` under
    ``module`` (outside non-local blocks) by its delta layer; returns them by qualified name."""
    layers: dict[str, DeltaLayer] = {}
    dense = [n for n, m in module.named_modules() if isinstance(m, NonLocal | DeltaLayer)]
    for name, parent in list(module.named_modules()):
        if any(name == d or name.startswith(f"{d}.") for d in dense):
            continue
        for child_name, child in list(parent.named_children()):
            layer = _delta_of(child, policy)
            if layer is not None:
                setattr(parent, child_name, layer)
                layers[f"{name}.{child_name}" if name else child_name] = layer
    return layers


def _delta_of(child: nn.Module, policy: DeltaPolicy) -> DeltaLayer | None:
    if isinstance(child, nn.Conv2d) and supports_delta(child):
        return DeltaConv2d(child, policy)
    if isinstance(child, nn.Linear):
        return DeltaLinear(child, policy)
    return None
