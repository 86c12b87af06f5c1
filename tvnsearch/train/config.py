"""The settings of partial training: a recipe's ``[train]`` table. Torch-free, so that reading a
recipe (``tvnsearch status``, ``resume``'s checks) does not import torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

AUTO_WORKERS = -1  # TrainConfig.num_workers: as many DataLoader workers as help


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 1000  # the paper used 10,000 on Kinetics; a recipe sets its own budget
    batch_size: int = 16  # enough clips for BatchNorm statistics, small enough for quick steps
    # AdamW: one learning rate suits the very different networks of a search (SGD's best rate
    # moves with depth and width). 5e-3 after warm-up: on the synthetic benchmark 2e-3 had not
    # learnt the motion after 300 steps; short budgets want a high rate.
    learning_rate: float = 5e-3
    weight_decay: float = 0.05  # decoupled, as in the DeiT and ConvNeXt AdamW recipes
    warmup_fraction: float = 0.05  # linear warm-up, then cosine to 0: no schedule to tune
    label_smoothing: float = 0.0  # off: short budgets barely overfit
    flip: bool = True  # left-right flips; turn off where left and right differ in meaning
    seed: int = 0  # weights, clip order, offsets, crops, flips and dropout
    device: str = "cpu"
    # DataLoader worker processes; AUTO_WORKERS (-1): as many as help (``train.inputs``): none
    # on a CPU (one slowed CPU trainings by 14-47 % on two cores: bench/data_scale_bench.py
    # loader), up to 8 per GPU (on an H200 they took a tiny genome from 65 to 163 steps/s and a
    # 2x224 one from 21 to 34: bench ``gpu``). A run recorded with a number keeps it. -1, not
    # None: a card's JSON null would not read back as a setting.
    num_workers: int = AUTO_WORKERS
    mixed_precision: bool = True  # bf16 (or fp16 with loss scaling) autocast, on CUDA only
    # On CUDA: workers only cut each clip's crop, the GPU resizes and flips it (the same draws;
    # within one level of 255 of the CPU's clips). Off: with 2 or more workers the CPU's resize
    # kept up and moved fewer bytes (0-27 % more steps/s on an H200). Turn it on for a GPU fed
    # by a single worker: a tiny genome took 25 % more steps/s there. No effect on a CPU.
    augment_on_device: bool = False
    # On CUDA, clips and 2-D convolutions in channels-last layout. Off: under bf16 on an H200 it
    # changed steps/s by -18 % to +4 % over two runs of three genomes.
    channels_last: bool = False
    # Clips scored per validation video, spread evenly over it, their logits averaged; 1 is the
    # centred clip alone. 1 by default: on the synthetic benchmark, whose motion fills every
    # video, 3 clips changed no fitness in 8 trainings and tripled the scoring time (from 3 % of
    # a 150-iteration training to 7-10 %); and a run recorded before this setting resumes scored
    # as it began. Videos whose action fills a part of them (Kinetics) want 3 or more:
    # runners/paper.toml sets 3.
    val_clips: int = 1
    # Multi-fidelity (``tvnsearch.train.fidelity``): training may stop at up to ``rungs`` points,
    # each ``reduction_factor`` times the iterations of the one before and ending at
    # ``iterations``; a candidate goes on past one only if it scores among the best
    # 1/reduction_factor there. 1: every candidate trains for ``iterations``.
    rungs: int = 1
    reduction_factor: float = 3.0

    # What each setting may be: a recipe or command line outside it is refused, naming the key
    # (``tvnsearch.search.recipe.limit_problems``). The upper bounds refuse what would exhaust
    # memory or never end, not what is merely big.
    LIMITS: ClassVar[dict[str, str | tuple[str, ...]]] = {
        "iterations": ">= 1",
        "batch_size": (">= 1", "<= 4096"),
        "learning_rate": "> 0",
        "weight_decay": ">= 0",
        "warmup_fraction": (">= 0", "< 1"),
        "label_smoothing": (">= 0", "< 1"),
        "seed": (">= 0", f"< {2**64}"),  # what NumPy's and torch's generators take
        "num_workers": (f">= {AUTO_WORKERS}", "<= 256"),
        "val_clips": (">= 1", "<= 100"),
        "rungs": (">= 1", "<= 20"),  # 3**20 is 3.5 billion iterations: more rungs cut nothing
        "reduction_factor": ("> 1", "<= 100"),
    }
