"""Scores of a trained candidate on the validation split, and fitness.

Multi-class fitness is top-1 + top-k accuracy with k = min(5, classes), in [0, 2], as in the TVN
paper; with five classes or fewer top-k is 1 for every network, which shifts fitness and leaves
the ranking alone. Multi-label fitness is the mean average precision, in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def top_k_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits (``(N, C)``, ``(N,)``)."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1).float().mean().item()


def average_precision(scores: Tensor, positives: Tensor) -> float:
    """AP of one class: the mean, over its positives, of the precision at each one's rank.

    Scores ``(N,)`` sorted high to low; ties keep input order. NaN when there is no positive.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    hits = positives[order].bool()
    if not hits.any():
        return math.nan
    ranks = torch.arange(1, len(hits) + 1, dtype=torch.float64)
    precision = hits.cumsum(0).double() / ranks
    return precision[hits].mean().item()


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """Mean AP over the classes that have a positive (``(N, C)`` scores and 0/1 targets).

    NaN when no class has a positive.
    """
    aps = [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
    aps = [ap for ap in aps if not math.isnan(ap)]
    return sum(aps) / len(aps) if aps else math.nan


def multi_class_scores(logits: Tensor, labels: Tensor) -> dict[str, float]:
    k = min(5, logits.shape[1])
    top1 = top_k_accuracy(logits, labels, 1)
    top5 = top_k_accuracy(logits, labels, k)
    return {"top1": top1, "top5": top5, "fitness": top1 + top5}


def multi_label_scores(logits: Tensor, targets: Tensor) -> dict[str, float]:
    mean_ap = mean_average_precision(torch.sigmoid(logits.double()), targets)
    return {"mean_ap": mean_ap, "fitness": mean_ap}
