from __future__ import annotations

import dataclasses
import math
import tomllib
from itertools import islice

import pytest
import torch
from conftest import ROOT
from genomes import block
from genomes import genome as make_genome

from tvnsearch.data.clips import ClipDataset, ClipSampler, ClipSpec
from tvnsearch.data.frame_cache import FrameCache
from tvnsearch.data.synth import SynthConfig, write_synth
from tvnsearch.errors import InputError
from tvnsearch.genome.genes import Genome
from tvnsearch.search.recipe import load_recipe, recipe_from_dict, recipe_toml
from tvnsearch.train import inputs
from tvnsearch.train.config import AUTO_WORKERS, TrainConfig
from tvnsearch.train.inputs import loader_workers, train_batches
from tvnsearch.train.training import TrainData, prepare_data, train_genome

CPU = torch.device("cpu")
FAST = TrainConfig(iterations=6, batch_size=4)
SPEC = ClipSpec(num_frames=3, frame_stride=2, resolution=24)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> TrainData:
    root = tmp_path_factory.mktemp("inputs") / "synth"
    write_synth(root, SynthConfig(num_videos=18, size=32, num_frames=8))
    return prepare_data(root, FrameCache(tmp_path_factory.mktemp("cache"), short_side=32))


def genome() -> Genome:
    return make_genome(block(spatial_stride=2, temporal_kernel=2), num_frames=2, frame_stride=2)


@pytest.mark.parametrize("threads", [1, 2])
def test_auto_workers_on_a_cpu_are_none(monkeypatch, threads: int) -> None:
    """A worker slowed CPU trainings, on every core's threads and on one (bench loader)."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    monkeypatch.setattr(inputs, "usable_cores", lambda: (0, 1))
    assert TrainConfig().num_workers == AUTO_WORKERS
    assert loader_workers(TrainConfig(), CPU) == 0
    assert loader_workers(TrainConfig(num_workers=3), CPU) == 3  # a number is kept as it is


@pytest.mark.parametrize(
    ("cores", "gpus", "expected"),
    [(16, 1, 8), (16, 4, 3), (2, 1, 1), (4, 8, 1)],  # per GPU: its cores but one, 1 to 8
)
def test_auto_workers_on_cuda(monkeypatch, cores: int, gpus: int, expected: int) -> None:
    monkeypatch.setattr(inputs, "usable_cores", lambda: tuple(range(cores)))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert loader_workers(TrainConfig(), torch.device("cuda")) == expected
    assert loader_workers(TrainConfig(num_workers=0), torch.device("cuda")) == 0


def test_a_recipe_s_worker_count_reads_and_resumes_as_written() -> None:
    """Old runs' frozen recipes hold a number: it stays that number through a freeze and a
    read; a recipe without one asks for as many as help."""
    local = ROOT / "runners" / "local.toml"
    assert load_recipe(local).train.num_workers == AUTO_WORKERS
    old = load_recipe(local, ["train.num_workers=0"])
    frozen = recipe_from_dict(tomllib.loads(recipe_toml(old)), source="frozen")
    assert frozen.train.num_workers == 0 and loader_workers(frozen.train, CPU) == 0
    assert load_recipe(local, ["train.num_workers=-1"]).train == load_recipe(local).train
    with pytest.raises(InputError, match=r"train\.num_workers: must be >= -1 and <= 256"):
        load_recipe(local, ["train.num_workers=-2"])


def todays_batches(data: TrainData, spec: ClipSpec, config: TrainConfig, count: int) -> list:
    """Batches as training made them before the input pipeline: ``ClipDataset`` items in
    ``ClipSampler`` order, stacked, normalised."""
    ds = data.dataset
    clips = ClipDataset(
        data.frames, ds.train, spec, num_classes=ds.num_classes, multi_label=False, train=True
    )
    order = iter(ClipSampler(len(clips), config.seed))
    batches = []
    for _ in range(count):
        items = [clips[i] for i in islice(order, config.batch_size)]
        x = torch.stack([c for c, _ in items])
        batches.append((spec.normalization.apply(x), torch.stack([t for _, t in items])))
    return batches


@pytest.mark.parametrize("num_workers", [0, 1])
def test_cpu_batches_are_todays_bit_for_bit(data, num_workers: int) -> None:
    config = dataclasses.replace(FAST, num_workers=num_workers, seed=3)
    got = list(islice(train_batches(data.frames, data.dataset, SPEC, config, CPU), 5))
    for (x, y), (want_x, want_y) in zip(got, todays_batches(data, SPEC, config, 5), strict=True):
        assert torch.equal(x, want_x) and torch.equal(y, want_y)


def test_the_device_path_makes_the_cpu_path_s_batches_within_a_level(data, monkeypatch) -> None:
    """Run on the CPU as it runs on a GPU: the same clips, the same targets, each pixel within
    one level of 255 (after normalisation: 1/255/std)."""
    config = dataclasses.replace(FAST, seed=5)
    cpu_path = list(islice(train_batches(data.frames, data.dataset, SPEC, config, CPU), 4))
    monkeypatch.setattr(inputs, "augments_on_device", lambda config, device: True)
    device_path = list(islice(train_batches(data.frames, data.dataset, SPEC, config, CPU), 4))
    one_level = 1 / 255 / min(SPEC.normalization.std) + 1e-6
    for (x, y), (want_x, want_y) in zip(device_path, cpu_path, strict=True):
        assert x.shape == want_x.shape and torch.equal(y, want_y)
        assert (x - want_x).abs().max() <= one_level


def test_training_through_the_device_path_in_channels_last(data, monkeypatch) -> None:
    """The GPU's path on the CPU: channels-last clips, and it trains to about the loss of the
    CPU's path."""
    plain = train_genome(genome(), data, FAST)
    monkeypatch.setattr(inputs, "augments_on_device", lambda config, device: True)
    monkeypatch.setattr(inputs, "uses_channels_last", lambda config, device: True)
    x, _ = next(train_batches(data.frames, data.dataset, SPEC, FAST, CPU))
    assert x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
    device = train_genome(genome(), data, FAST)
    assert device.status == "trained"
    assert math.isclose(device.final_loss, plain.final_loss, rel_tol=0.05)


def test_channels_last_leaves_five_dimensional_weights_alone() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv3d(4, 4, 1))
    inputs.to_channels_last(model)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous() and model[1].weight.is_contiguous()


def test_defaults_leave_the_cpu_as_it_was() -> None:
    """The device settings are for CUDA: on a CPU neither changes what training does."""
    config = TrainConfig(augment_on_device=True, channels_last=True)
    assert not inputs.augments_on_device(config, CPU) and not inputs.uses_channels_last(config, CPU)
    cuda = torch.device("cuda")
    assert inputs.augments_on_device(config, cuda) and inputs.uses_channels_last(config, cuda)
    assert not inputs.uses_channels_last(TrainConfig(), cuda)  # neither helped on an H200
    assert not inputs.augments_on_device(TrainConfig(), cuda)
    assert inputs.loader_options(0, CPU) == {"num_workers": 0, "pin_memory": False}
    assert inputs.loader_options(2, cuda)["pin_memory"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_trains_through_the_new_pipeline(data) -> None:
    config = dataclasses.replace(FAST, device="cuda", iterations=12, augment_on_device=True)
    result = train_genome(genome(), data, config)
    old = dataclasses.replace(config, num_workers=0, augment_on_device=False)
    assert result.status == "trained" and train_genome(genome(), data, old).status == "trained"
    cuda = torch.device("cuda")
    x, y = next(train_batches(data.frames, data.dataset, SPEC, config, cuda))
    want_x, want_y = todays_batches(data, SPEC, config, 1)[0]
    assert x.is_cuda and torch.equal(y.cpu(), want_y)
    assert (x.cpu() - want_x).abs().max() <= 1 / 255 / 0.225 + 1e-5
