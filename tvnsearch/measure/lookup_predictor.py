"""A kernel-level latency predictor: a network's runtime as the sum of its instances' runtimes.

In the spirit of nn-Meter: every distinct block instance (an ``InstancePlan`` without its block
and repeat indices fixes the module and its input shape) and the head are timed once, on their
own, with the profiler's own routine; a network is predicted as ``a * sum + b``, with ``a`` and
``b`` fitted (non-negative, relative error) on the networks measured so far, since kernels timed
apart miss what they share in a network (warm caches, one call overhead). A mutated child shares
most instances with its parent, so predicting it times only the few it does not.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tvnsearch.genome.genes import Genome
from tvnsearch.genome.plan import InstancePlan, Shape, plan_network
from tvnsearch.measure.device import check_device, device_signature
from tvnsearch.measure.predictor import CheckedPredictions, fit
from tvnsearch.measure.profile import DEFAULT_SETTINGS, Settings


@dataclass(frozen=True)
class HeadPlan:
    """The classifier head on a ``(C, T, H, W)`` feature map."""

    in_shape: Shape
    num_classes: int


Kernel = InstancePlan | HeadPlan


def network_kernels(genome: Genome, num_classes: int) -> Counter[Kernel]:
    """The kernels a network runs, each with how many times it runs."""
    plan = plan_network(genome)
    kernels: Counter[Kernel] = Counter(
        dataclasses.replace(p, block=0, repeat=0) for p in plan.instances
    )
    kernels[HeadPlan(plan.out_shape, num_classes)] += 1
    return kernels


def time_kernel(kernel: Kernel, settings: Settings) -> float:
    """Median runtime (ms) of one kernel on a random batch-1 input, timed as a network is."""
    import torch  # here: the gate and the records need no torch

    from tvnsearch.measure import timing
    from tvnsearch.models.instances import DROPOUT, build_instance
    from tvnsearch.models.layers import Head

    with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG left as it was
        torch.manual_seed(settings.seed)
        if isinstance(kernel, HeadPlan):
            module = Head(kernel.in_shape[0], kernel.num_classes, DROPOUT)
        else:
            module = build_instance(kernel)
    module = module.eval().to(settings.device)
    generator = torch.Generator().manual_seed(settings.seed)
    x = torch.randn((1, *kernel.in_shape), generator=generator).to(settings.device)
    with timing.fixed_threads(settings.threads):
        runs_ms, _ = timing._time_runs(module, x, settings, None)
    return statistics.median(runs_ms)


class KernelTable:
    """Kernel runtimes on one device, each timed once, on first use.

    ``num_measurements`` and ``seconds`` count the kernels timed and the wall time that took. A
    kernel that fails to run is remembered as unknown (None), and is not tried again."""

    def __init__(
        self,
        settings: Settings = DEFAULT_SETTINGS,
        *,
        timer: Callable[[Kernel, Settings], float] = time_kernel,
    ) -> None:
        check_device(settings.device, threads=settings.threads, source="kernel table")
        self.settings = settings
        self.signature = device_signature(settings.device, settings.threads)
        self.timer = timer
        self.num_measurements = 0
        self.seconds = 0.0
        self._ms: dict[tuple[str, Kernel], float | None] = {}

    def __len__(self) -> int:
        return len(self._ms)

    def runtime_ms(self, kernel: Kernel) -> float | None:
        key = (self.signature.key, kernel)
        if key not in self._ms:
            self._ms[key] = self._time(kernel)
        return self._ms[key]

    def _time(self, kernel: Kernel) -> float | None:
        start = time.perf_counter()
        try:
            return self.timer(kernel, self.settings)
        except Exception:  # a kernel that cannot run leaves the network to be measured
            return None
        finally:
            self.num_measurements += 1
            self.seconds += time.perf_counter() - start

    def total_ms(self, kernels: Counter[Kernel]) -> float | None:
        """The sum of the kernels' runtimes, times their counts; None if one is unknown."""
        total = 0.0
        for kernel, count in kernels.items():
            ms = self.runtime_ms(kernel)
            if ms is None:
                return None
            total += count * ms
        return total


class LookupPredictor(CheckedPredictions):
    """Predicts ``a * (sum of kernel runtimes) + b``, from the first candidate on.

    Until ``min_fit_size`` networks are measured, ``a = 1`` and ``b = 0``. As in
    ``LatencyPredictor``, a prediction is then corrected by the error made on the measured network
    that shares the most kernel time with it, in proportion to that share.
    """

    def __init__(self, table: KernelTable, min_fit_size: int = 2) -> None:
        super().__init__()
        self.table = table
        self.min_fit_size = min_fit_size
        self.coefficients = np.array([1.0, 0.0])  # (a, b)
        self._kernels: list[Counter[Kernel]] = []
        self._sums: list[float] = []
        self._y: list[float] = []

    @property
    def num_samples(self) -> int:
        return len(self._y)

    def predict(self, genome: Genome, num_classes: int) -> float | None:
        kernels = network_kernels(genome, num_classes)
        total = self.table.total_ms(kernels)
        if total is None:
            return None
        modelled = self._modelled(total)
        if modelled <= 0:  # no kernel time and no fitted overhead: nothing to go by
            return None
        share, ratio = self._nearest(kernels, modelled)
        return modelled * ratio**share

    def _modelled(self, total_ms: float) -> float:
        a, b = self.coefficients
        return float(a * total_ms + b)

    def _nearest(self, kernels: Counter[Kernel], modelled: float) -> tuple[float, float]:
        """(share of modelled time in common, measured / modelled) of the closest sample."""
        a = self.coefficients[0]
        best_share, best_index = 0.0, -1
        for i, sample in enumerate(self._kernels):
            common = sum(
                min(n, sample[k]) * a * self.table.runtime_ms(k)
                for k, n in kernels.items()
                if k in sample
            )
            if common / modelled > best_share:
                best_share, best_index = common / modelled, i
        if best_index < 0:
            return 0.0, 1.0
        return min(best_share, 1.0), self._y[best_index] / self._modelled(self._sums[best_index])

    def learn(
        self, genome: Genome, num_classes: int, measured_ms: float, predicted_ms: float | None
    ) -> None:
        """Add one measurement (and the prediction made before it); refit ``a`` and ``b``.

        Kernels not timed yet are timed here. A genome learned before is ignored, and so is one
        with a kernel that cannot be timed."""
        if not self._first_sight(genome, num_classes, measured_ms, predicted_ms):
            return
        kernels = network_kernels(genome, num_classes)
        total = self.table.total_ms(kernels)
        if total is None:
            return
        self._kernels.append(kernels)
        self._sums.append(total)
        self._y.append(measured_ms)
        if self.num_samples >= self.min_fit_size:
            x = np.column_stack([self._sums, np.ones(self.num_samples)])
            self.coefficients = fit(x, np.array(self._y))
