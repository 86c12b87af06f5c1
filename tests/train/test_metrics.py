from __future__ import annotations

import math

import pytest
import torch

from tvnsearch.train.metrics import (
    average_precision,
    bootstrap_standard_error,
    class_average_precisions,
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
    labelled = multi_label_scores(torch.logit(scores), targets)
    assert labelled["mean_ap"] == pytest.approx(expected) == labelled["fitness"]
    assert math.isnan(mean_average_precision(scores, torch.zeros(4, 3)))


def test_multi_class_fitness_is_top1_plus_top5() -> None:
    logits = torch.arange(8.0).flip(0).repeat(4, 1)  # class r ranks (r + 1)-th in every row
    scores = multi_class_scores(logits, torch.tensor([0, 2, 5, 4]))  # ranks 1, 3, 6, 5
    assert scores["top1"] == pytest.approx(1 / 4)
    assert scores["top5"] == pytest.approx(3 / 4)
    assert scores["fitness"] == pytest.approx(1.0)
    # Per-video top-1 + top-5 hits: 2, 1, 0, 1 -> mean 1, sample variance
    # (1 + 0 + 1 + 0) / 3 = 2/3, standard error sqrt(2/3 / 4).
    assert scores["fitness_noise"] == pytest.approx(math.sqrt(2 / 3 / 4))


def test_with_five_classes_or_fewer_top5_is_every_class() -> None:
    scores = multi_class_scores(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([0]))
    assert {k: scores[k] for k in ("top1", "top5", "fitness")} == {
        "top1": 0.0,
        "top5": 1.0,
        "fitness": 1.0,
    }
    assert math.isnan(scores["fitness_noise"])  # one video: no spread to measure


def test_fitness_noise_is_zero_when_every_video_scores_alike() -> None:
    logits = torch.eye(3).repeat(2, 1)  # every video right
    assert multi_class_scores(logits, torch.tensor([0, 1, 2] * 2))["fitness_noise"] == 0.0


def test_class_average_precisions_agree_with_one_class_at_a_time() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(40, 5, generator=generator).round(decimals=1)  # ties too
    targets = (torch.rand(40, 5, generator=generator) < 0.3).float()
    targets[:, 4] = 0
    each = [average_precision(scores[:, c], targets[:, c]) for c in range(5)]
    together = class_average_precisions(scores, targets)
    assert together[:4].tolist() == pytest.approx(each[:4]) and together[4].isnan()


def test_the_bootstrap_standard_error_of_a_mean_is_the_closed_form() -> None:
    # For a mean over rows the bootstrap estimates sd * sqrt((N - 1) / N) / sqrt(N); 200
    # resamples get within a few percent.
    values = torch.rand(150, generator=torch.Generator().manual_seed(2)).double()
    noise = bootstrap_standard_error(lambda rows: values[rows].mean().item(), len(values))
    closed = values.std().item() / math.sqrt(150) * math.sqrt(149 / 150)
    assert noise == pytest.approx(closed, rel=0.15)
    assert bootstrap_standard_error(lambda rows: values[rows].mean().item(), 150) == noise
    assert math.isnan(bootstrap_standard_error(lambda rows: 0.0, 1))


def test_the_bootstrap_noise_of_mean_ap() -> None:
    generator = torch.Generator().manual_seed(1)
    targets = (torch.rand(60, 4, generator=generator) < 0.4).float()
    separated = 0.2 + 0.5 * targets + 0.1 * torch.rand(60, 4, generator=generator)
    assert multi_label_scores(torch.logit(separated), targets)["fitness_noise"] == 0.0
    noisy = 0.1 + 0.2 * targets + 0.6 * torch.rand(60, 4, generator=generator)
    noise = multi_label_scores(torch.logit(noisy), targets)["fitness_noise"]
    assert 0.01 < noise < 0.2
    only_negatives = multi_label_scores(torch.logit(noisy[:1]), torch.zeros(1, 4))
    assert math.isnan(only_negatives["fitness_noise"])
