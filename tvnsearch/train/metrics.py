"""Scores of a trained candidate on the validation split, fitness, and the noise of fitness.

Multi-class fitness is top-1 + top-k accuracy with k = min(5, classes), in [0, 2], as in the TVN
paper; with five classes or fewer top-k is 1 for every network, which shifts fitness and leaves
the ranking alone. Multi-label fitness is the mean average precision, in [0, 1].

``fitness_noise`` is the standard error of fitness over the choice of validation videos: how far
fitness would move, the trained weights fixed, on another validation set as large and drawn
alike. Multi-class fitness is a mean over videos of a per-video score (top-1 hit + top-k hit), so
its standard error is those scores' sample standard deviation over the square root of their
number. Mean AP is no such mean: its standard error is a bootstrap over videos with a fixed seed.
It costs no second training, and leaves out the candidate's own training noise: another seed
(initial weights, clip order, crops, dropout) trains other weights, and on the synthetic
benchmark at 150 iterations fitness moved between seeds by about 1 to 2 times this estimate. Nor
does it know that candidates scored on the same videos err together (the noise of a difference
is then smaller than the sum). It is a floor on the noise of one training's fitness, not all of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

# Resamples of the bootstrap: its standard error is itself within about 1/sqrt(2 * 200) = 5 %,
# plenty for calling ties, at 200 sorts of the (videos, classes) scores.
NUM_BOOTSTRAP = 200
BOOTSTRAP_SEED = 0  # fixed: the same scores give the same noise


def top_k_hits(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """Whether each row's label is among its ``k`` largest logits (``(N, C)``, ``(N,)``)."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1)


def top_k_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits (``(N, C)``, ``(N,)``)."""
    return top_k_hits(logits, labels, k).float().mean().item()


def class_average_precisions(scores: Tensor, targets: Tensor) -> Tensor:
    """AP of every class of ``(N, C)`` scores and 0/1 targets, as float64 ``(C,)``: the mean,
    over a class's positives, of the precision at each one's rank. Ties keep input order; NaN
    for a class without a positive."""
    order = torch.argsort(scores, dim=0, descending=True, stable=True)
    hits = (targets.gather(0, order) != 0).double()
    ranks = torch.arange(1, len(hits) + 1, dtype=torch.float64)[:, None]
    return (hits.cumsum(0) / ranks * hits).sum(0) / hits.sum(0)


def average_precision(scores: Tensor, positives: Tensor) -> float:
    """AP of one class from ``(N,)`` scores and 0/1 positives; NaN when there is no positive."""
    return class_average_precisions(scores[:, None], positives[:, None])[0].item()


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """Mean AP over the classes that have a positive (``(N, C)`` scores and 0/1 targets).

    NaN when no class has a positive.
    """
    return class_average_precisions(scores, targets).nanmean().item()


def bootstrap_standard_error(statistic: Callable[[Tensor], float], num_rows: int) -> float:
    """Standard error of ``statistic(rows)``, a score of the rows (videos) at the indices
    ``rows``, over ``NUM_BOOTSTRAP`` resamples of the rows with replacement drawn from a fixed
    seed. A resample whose statistic is NaN (mean AP without a positive) is left out; NaN with
    fewer than two rows or two finite resamples."""
    if num_rows < 2:
        return math.nan
    generator = torch.Generator().manual_seed(BOOTSTRAP_SEED)
    draws = torch.randint(num_rows, (NUM_BOOTSTRAP, num_rows), generator=generator)
    values = torch.tensor([statistic(rows) for rows in draws], dtype=torch.float64)
    values = values[~values.isnan()]
    return values.std().item() if len(values) >= 2 else math.nan


def standard_error(values: Tensor) -> float:
    """Standard error of the mean of ``values`` (sample standard deviation over sqrt(N));
    NaN with fewer than two."""
    if len(values) < 2:
        return math.nan
    return (values.double().std() / math.sqrt(len(values))).item()


def multi_class_scores(logits: Tensor, labels: Tensor) -> dict[str, float]:
    k = min(5, logits.shape[1])
    top1, topk = top_k_hits(logits, labels, 1), top_k_hits(logits, labels, k)
    top1_accuracy, topk_accuracy = top1.float().mean().item(), topk.float().mean().item()
    return {
        "top1": top1_accuracy,
        "top5": topk_accuracy,
        "fitness": top1_accuracy + topk_accuracy,
        "fitness_noise": standard_error(top1.double() + topk.double()),
    }


def multi_label_scores(logits: Tensor, targets: Tensor) -> dict[str, float]:
    probabilities = torch.sigmoid(logits.double())
    mean_ap = mean_average_precision(probabilities, targets)
    noise = bootstrap_standard_error(
        lambda rows: mean_average_precision(probabilities[rows], targets[rows]), len(targets)
    )
    return {"mean_ap": mean_ap, "fitness": mean_ap, "fitness_noise": noise}
