from __future__ import annotations

import math

import pytest
import torch

from tvnsearch.train.metrics import (
    average_precision,
    mean_average_precision,
    multi_class_scores,
    multi_label_scores,
    top_k_accuracy,
)


def test_top_k_accuracy() -> None:
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]])
    labels = torch.tensor([1, 2, 2, 0])
    assert top_k_accuracy(logits, labels, 1) == pytest.approx(2 / 4)
    assert top_k_accuracy(logits, labels, 2) == pytest.approx(3 / 4)
    assert top_k_accuracy(logits, labels, 5) == 1.0  # k beyond the classes: all of them


def test_average_precision_by_hand() -> None:
    # Ranked by score: hit, miss, hit, miss, hit -> precisions at the hits 1/1, 2/3, 3/5.
    scores = torch.tensor([0.5, 0.9, 0.6, 0.7, 0.8])
    positives = torch.tensor([1, 1, 0, 1, 0])
    assert average_precision(scores, positives) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert average_precision(scores, torch.ones(5)) == 1.0
    assert math.isnan(average_precision(scores, torch.zeros(5)))


def test_mean_average_precision_by_hand_skips_classes_without_positives() -> None:
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.3],
            [0.8, 0.7, 0.2],
            [0.3, 0.8, 0.9],
            [0.1, 0.2, 0.4],
        ]
    )
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    # Class 0: ranking rows 0, 1, 2, 3 -> hit, miss, hit: (1 + 2/3) / 2.
    # Class 1: ranking rows 2, 1, 3, 0 -> hit, hit: 1.  Class 2: no positive, left out.
    expected = ((1 + 2 / 3) / 2 + 1) / 2
    assert mean_average_precision(scores, targets) == pytest.approx(expected)
    assert multi_label_scores(torch.logit(scores), targets) == pytest.approx(
        {"mean_ap": expected, "fitness": expected}
    )
    assert math.isnan(mean_average_precision(scores, torch.zeros(4, 3)))


def test_multi_class_fitness_is_top1_plus_top5() -> None:
    logits = torch.arange(8.0).flip(0).repeat(4, 1)  # class r ranks (r + 1)-th in every row
    scores = multi_class_scores(logits, torch.tensor([0, 2, 5, 4]))  # ranks 1, 3, 6, 5
    assert scores["top1"] == pytest.approx(1 / 4)
    assert scores["top5"] == pytest.approx(3 / 4)
    assert scores["fitness"] == pytest.approx(1.0)


def test_with_five_classes_or_fewer_top5_is_every_class() -> None:
    scores = multi_class_scores(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([0]))
    assert scores == {"top1": 0.0, "top5": 1.0, "fitness": 1.0}
