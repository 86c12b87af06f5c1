from __future__ import annotations

import dataclasses
import json
import math
import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from genomes import block
from genomes import genome as make_genome

from tvnsearch.cli.main import main
from tvnsearch.data.clips import ClipSpec, crop_box, frame_indices, make_clip
from tvnsearch.data.datasets import Video, VideoDataset
from tvnsearch.data.frame_cache import FrameCache
from tvnsearch.data.synth import SynthConfig, write_synth
from tvnsearch.data.video import encode_video
from tvnsearch.errors import InputError
from tvnsearch.genome.genes import Block, Genome
from tvnsearch.models.builder import build_model
from tvnsearch.search.recipe import load_recipe
from tvnsearch.train import training
from tvnsearch.train.metrics import top_k_hits
from tvnsearch.train.training import (
    TrainConfig,
    TrainData,
    TrainResult,
    learning_rate_factor,
    prepare_data,
    train_genome,
    train_model,
)
from tvnsearch.train.weights import ModelInfo, inherit, weights_bytes

FAST = TrainConfig(iterations=6, batch_size=4)
RUNNERS = ROOT / "runners"


def genome(num_frames: int = 2, temporal_kernel: int = 2) -> Genome:
    one = block(spatial_stride=2, temporal_kernel=temporal_kernel)
    return make_genome(one, num_frames=num_frames, frame_stride=2)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train") / "synth"
    write_synth(root, SynthConfig(num_videos=27, size=32, num_frames=8))
    return root


@pytest.fixture(scope="module")
def data(synth, tmp_path_factory) -> TrainData:
    return prepare_data(synth, FrameCache(tmp_path_factory.mktemp("cache"), short_side=32))


def scores(result: TrainResult) -> dict:
    timings = ("train_seconds", "eval_seconds")
    return {k: v for k, v in result.to_dict().items() if k not in timings}


def test_trains_and_scores_a_genome(data) -> None:
    result = train_genome(genome(), data, FAST)
    assert result.status == "trained" and result.reason is None
    assert result.iterations == 6 and math.isfinite(result.final_loss)
    assert 0 <= result.top1 <= result.top5 <= 1 and result.mean_ap is None
    assert result.fitness == pytest.approx(result.top1 + result.top5)
    assert 0 < result.fitness_noise < 1 and "±" in result.summary()
    assert (result.num_train_videos, result.num_val_videos) == (18, 9)
    assert result.clip == ClipSpec(2, 2, 16)
    assert "fitness" in result.summary() and json.dumps(result.to_dict())


def test_same_seed_same_scores_whatever_the_workers(data) -> None:
    first = train_genome(genome(), data, FAST)
    again = train_genome(genome(), data, FAST)
    workers = train_genome(genome(), data, dataclasses.replace(FAST, num_workers=1))
    other = train_genome(genome(), data, dataclasses.replace(FAST, seed=1))
    assert scores(first) == scores(again) == scores(workers)
    assert other.final_loss != first.final_loss


def test_leaves_the_callers_random_state_alone(data) -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    train_genome(genome(), data, FAST)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_one_frame_genome_trains(data) -> None:
    result = train_genome(genome(num_frames=1, temporal_kernel=1), data, FAST)
    assert result.status == "trained" and result.clip.num_frames == 1


def test_a_diverging_loss_fails_with_its_reason(data) -> None:
    result = train_genome(genome(), data, dataclasses.replace(FAST, learning_rate=1e30))
    assert result.status == "failed" and result.fitness is None and result.fitness_noise is None
    assert result.reason.startswith("loss became nan at iteration ")
    assert result.final_loss is None and json.dumps(result.to_dict())


def test_looking_at_the_loss_less_often_changes_nothing_but_when(data, monkeypatch) -> None:
    """A GPU is looked at every few steps (each look waits for it): the scores are those of a
    look at every step, and a divergence names the same first iteration."""
    every_step = train_genome(genome(), data, FAST)
    exploding = dataclasses.replace(FAST, iterations=12, learning_rate=1e30)
    diverged = train_genome(genome(), data, exploding)
    monkeypatch.setattr(training, "CHECK_EVERY", {"cpu": 4})
    assert scores(train_genome(genome(), data, FAST)) == scores(every_step)
    assert train_genome(genome(), data, exploding).reason == diverged.reason


class BrokenFrames:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def num_frames(self, path: Path) -> int:
        return 8

    def read(self, path: Path, indices) -> np.ndarray:
        raise self.error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "out of memory:"),
        (OSError("disk went away"), "OSError: disk went away"),
    ],
)
def test_any_exception_fails_with_its_reason(data, error, reason) -> None:
    broken = dataclasses.replace(data, frames=BrokenFrames(error))
    result = train_genome(genome(), broken, FAST)
    assert result.status == "failed" and result.reason.startswith(reason)
    assert result.iterations == 0


def test_multi_label_training_is_scored_by_mean_ap(synth, tmp_path) -> None:
    videos = sorted(synth.rglob("*.mp4"))
    rows = [
        {"path": str(p), "labels": p.parent.name.split("_"), "split": p.parts[-3]} for p in videos
    ]
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = prepare_data(tmp_path / "list.jsonl", FrameCache(tmp_path / "cache", short_side=32))
    assert data.dataset.multi_label and data.dataset.num_classes == 6  # 3 colours + 3 motions
    result = train_genome(genome(), data, FAST)
    assert result.status == "trained" and result.top1 is None
    assert 0 < result.mean_ap <= 1 and result.fitness == result.mean_ap
    assert 0 < result.fitness_noise < 1  # a bootstrap over the validation videos


def test_mean_ap_without_positives_fails(synth, tmp_path) -> None:
    videos = sorted(synth.rglob("*.mp4"))
    rows = [
        {"path": str(p), "labels": ["x"] if "train" in p.parts else [], "split": p.parts[-3]}
        for p in videos
    ]
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = prepare_data(tmp_path / "list.jsonl", FrameCache(tmp_path / "cache", short_side=32))
    result = train_genome(genome(), data, FAST)
    assert result.status == "failed" and "mAP is undefined" in result.reason


def test_unreadable_videos_are_skipped_or_refused(synth, tmp_path) -> None:
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    encode_video(tmp_path / "one.mp4", np.zeros((1, 20, 30, 3), np.uint8))
    rows = [f"{p},{p.parent.name},{p.parts[-3]}" for p in sorted(synth.rglob("*.mp4"))]
    rows += [f"{tmp_path / 'bad.mp4'},red_up,train", f"{tmp_path / 'one.mp4'},red_up,val"]
    (tmp_path / "list.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    cache = FrameCache(tmp_path / "cache", short_side=32)
    data = prepare_data(tmp_path / "list.csv", cache)
    assert [s.path.name for s in data.skipped] == ["bad.mp4"]
    assert (len(data.dataset.train), len(data.dataset.val)) == (18, 10)
    assert train_genome(genome(), data, FAST).status == "trained"
    with pytest.raises(InputError, match=r"bad\.mp4: "):
        prepare_data(tmp_path / "list.csv", cache, strict=True)
    # Left out, as a search's driver found it elsewhere: not looked at, nor reported again.
    left = prepare_data(tmp_path / "list.csv", cache, leave_out=frozenset([tmp_path / "bad.mp4"]))
    assert left.skipped == () and left.dataset.train == data.dataset.train


def test_multi_fidelity_stops_below_a_rungs_cut_and_goes_on_above(data) -> None:
    config = dataclasses.replace(FAST, iterations=9, rungs=3)  # rungs at 1, 3 and 9
    full = train_genome(genome(), data, config)  # no cuts: it goes through every rung
    assert [i for i, _ in full.rungs] == [1, 3, 9] and full.iterations == 9
    assert full.rungs[-1][1] == full.fitness
    plain = train_genome(genome(), data, dataclasses.replace(config, rungs=1))
    same = ("fitness", "top1", "top5", "final_loss")  # scoring at rungs changed no training step
    assert [getattr(plain, k) for k in same] == [getattr(full, k) for k in same]
    assert plain.rungs == ((9, plain.fitness),)
    (_, first), (_, second), _ = full.rungs
    stopped = train_genome(genome(), data, config, cuts=(first + 1e-6, None))
    assert (stopped.status, stopped.iterations, stopped.fitness) == ("trained", 1, first)
    assert stopped.rungs == full.rungs[:1]  # the same curve, as far as it went
    assert "fitness at each rung" in full.summary()
    on_then_stopped = train_genome(genome(), data, config, cuts=(first, second + 1e-6))
    assert on_then_stopped.iterations == 3 and on_then_stopped.rungs == full.rungs[:2]


def test_a_child_starts_from_its_parent_s_weights_where_shapes_allow(data) -> None:
    parent = make_genome(block(temporal_kernel=2), block(num_filters=16))
    child = make_genome(block(temporal_kernel=2), block(num_filters=24))  # its last block widened
    trained, model = train_model(parent, data, FAST)
    info = ModelInfo(parent, trained.clip, data.dataset.classes)
    weights = weights_bytes(model, info)
    fresh = build_model(child, data.dataset.num_classes)
    share = inherit(fresh, weights)
    same = {k for k, v in fresh.state_dict().items() if model.state_dict()[k].shape == v.shape}
    assert 0 < share < 1 and any(k.startswith("blocks.0.") for k in same)
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]) == (name in same), name
    assert inherit(build_model(parent, data.dataset.num_classes), weights) == 1.0
    result = train_genome(child, data, FAST, parent_weights=weights)
    assert result.status == "trained" and result.inherited == pytest.approx(share)
    assert train_genome(child, data, FAST).inherited == 0.0


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    factors = [learning_rate_factor(s, total=100, warmup=10) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[99] < 0.001
    assert all(a >= b for a, b in pairwise(factors[9:]))


def train_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_train_prints_scores_and_json(synth, tmp_path, capsys) -> None:
    path = tmp_path / "g.json"
    path.write_text(genome().to_json())
    common = [str(path), "--data", str(synth), "--iterations", "4", "--batch-size", "4"]
    common += ["--cache-dir", str(tmp_path / "cache")]
    code, out, _ = train_cli(capsys, *common)
    assert code == 0 and out.startswith(f"genome {genome().id}: trained after 4 iterations")
    assert "fitness" in out
    code, out, _ = train_cli(capsys, *common, "--json", "--seed", "2")
    result = json.loads(out)
    assert code == 0 and result["id"] == genome().id and result["status"] == "trained"
    assert result["fitness"] == pytest.approx(result["top1"] + result["top5"])
    assert result["clip"]["normalization"]["mean"] == [0.45, 0.45, 0.45]
    assert result["skipped"] == []


def test_training_tells_its_callback_every_iteration_and_is_silent_without(data, capfd) -> None:
    steps: list[tuple[int, int]] = []
    result, _ = train_model(genome(), data, FAST, on_step=lambda *step: steps.append(step))
    assert result.status == "trained" and steps == [(i, 6) for i in range(1, 7)]
    train_genome(genome(), data, FAST)  # as a search's worker trains: no callback, no output
    assert capfd.readouterr() == ("", "")


def test_cli_train_draws_a_progress_bar_with_an_estimate(synth, tmp_path, capsys, monkeypatch):
    """On stderr, forced on here (it is drawn on a terminal only); stdout stays JSON."""
    path = tmp_path / "g.json"
    path.write_text(genome().to_json())
    argv = [str(path), "--data", str(synth), "--iterations", "12", "--batch-size", "2", "--json"]
    argv += ["--cache-dir", str(tmp_path / "cache")]
    monkeypatch.setenv("TVNSEARCH_PROGRESS", "1")
    code, out, err = train_cli(capsys, *argv)
    assert code == 0 and json.loads(out)["iterations"] == 12
    assert re.search(r"decoding videos: .*\d+/27 ", err)
    # tqdm's "done/total [elapsed<left" : the time spent and the estimate of the time left
    assert re.search(r"training: .*\d+/12 \[\d\d:\d\d<\d\d:\d\d", err)
    monkeypatch.setenv("TVNSEARCH_PROGRESS", "0")
    code, out, err = train_cli(capsys, *argv)
    assert code == 0 and err == ""


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing data", "nowhere: no such file or folder"),
        ("bad genome", "g.json: not valid JSON"),
        ("bad list", "list.csv: label: need exactly one of the columns"),
        ("corrupt strict", "bad.mp4: cannot decode"),
        ("no cuda", "--device: "),
    ],
)
def test_cli_train_bad_inputs_exit_2_in_one_line(tmp_path, capsys, setup, expected) -> None:
    path = tmp_path / "g.json"
    path.write_text("{oops" if setup == "bad genome" else genome().to_json())
    data = tmp_path / "nowhere"
    if setup == "bad list":
        data = tmp_path / "list.csv"
        data.write_text("path,category\nx.mp4,a\n")
    if setup == "corrupt strict":
        data = tmp_path / "d"
        for split in ("train", "val"):
            (data / split / "a").mkdir(parents=True)
        (data / "train" / "a" / "bad.mp4").write_bytes(b"junk")
        encode_video(data / "val" / "a" / "good.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    argv = [str(path), "--data", str(data), "--cache-dir", str(tmp_path / "cache"), "--strict"]
    device = ["--device", "cuda:99" if torch.cuda.is_available() else "cuda"]
    code, out, err = train_cli(capsys, *argv, *(device if setup == "no cuda" else []))
    assert code == 2 and out == ""
    assert expected in err and err.startswith("tvnsearch train: ") and err.count("\n") == 1


@pytest.mark.slow
def test_the_synthetic_benchmark_rewards_temporal_modelling(tmp_path) -> None:
    def blocks(temporal_kernel: int) -> tuple[Block, ...]:
        first = genome().blocks[0]
        return tuple(
            dataclasses.replace(first, num_filters=n, temporal_kernel=temporal_kernel)
            for n in (16, 32)
        )

    write_synth(tmp_path / "synth", SynthConfig(seed=5))
    data = prepare_data(tmp_path / "synth", FrameCache(tmp_path / "cache"))
    config = TrainConfig(iterations=300, seed=5)
    moving = train_genome(Genome(32, 4, 2, 0, blocks(3)), data, config)
    still = train_genome(Genome(32, 1, 1, 0, blocks(1)), data, config)
    assert still.top1 < 0.45 < 0.6 < moving.top1, (moving.top1, still.top1)


# Scoring on several clips per validation video.


class LateColour:
    """In-memory videos of 32 black frames whose last 12 show their class as a colour (class c
    lights channel c): only a clip near the end of a video can tell its class."""

    def num_frames(self, path: Path) -> int:
        return 32

    def read(self, path: Path, indices) -> np.ndarray:
        frames = np.zeros((len(indices), 16, 16, 3), np.uint8)
        frames[np.asarray(indices) >= 20, :, :, int(path.stem.split("-")[0])] = 255
        return frames


def late_colour_data() -> TrainData:
    def videos(split: str, count: int) -> tuple[Video, ...]:
        return tuple(
            Video(Path(f"{c}-{split}{i}.npy"), (c,)) for c in range(3) for i in range(count)
        )

    dataset = VideoDataset(
        "late colour", ("red", "green", "blue"), False, videos("t", 8), videos("v", 4)
    )
    return TrainData(dataset, LateColour())


def test_several_clips_per_video_find_what_the_centred_clip_misses() -> None:
    data = late_colour_data()
    colour = make_genome(block(spatial_stride=2), num_frames=2, frame_stride=2)  # span 3
    config = TrainConfig(iterations=80, batch_size=8)
    centred = train_genome(colour, data, config)
    several = train_genome(colour, data, dataclasses.replace(config, val_clips=3))
    # The centred clip (frames 14, 16) is black in every video; of three clips spread over the
    # starts 0..29 (5, 14 and 24) the last sees the colour.
    assert centred.top1 == pytest.approx(1 / 3) and several.top1 == 1.0
    assert several.final_loss == centred.final_loss  # the same training, scored twice


def test_one_clip_is_the_centred_clip_scored_as_before(data) -> None:
    result, model = train_model(genome(), data, FAST)
    clip = result.clip
    logits = []
    for video in data.dataset.val:
        length = data.frames.num_frames(video.path)
        offset = (length - clip.span) // 2
        frames = data.frames.read(video.path, frame_indices(length, clip, offset))
        box = crop_box(frames.shape[1], frames.shape[2], None)
        logits.append(make_clip(frames, clip.resolution, box, flip=False))
    with torch.inference_mode():  # in batches as scoring runs them: the same sums, bit for bit
        x = torch.stack(logits)
        out = torch.cat([model(clip.normalization.apply(b)) for b in x.split(FAST.batch_size)])
    labels = torch.tensor([v.labels[0] for v in data.dataset.val])
    top1, top5 = (top_k_hits(out, labels, k).float() for k in (1, 5))
    assert (result.top1, result.top5) == (top1.mean().item(), top5.mean().item())
    per_video = top1 + top5
    # The standard error by hand: the sample standard deviation over the square root of N.
    mean = per_video.sum().item() / len(per_video)
    variance = sum((v - mean) ** 2 for v in per_video.tolist()) / (len(per_video) - 1)
    assert result.fitness_noise == pytest.approx(math.sqrt(variance / len(per_video)))


def test_a_recipe_scores_at_least_one_clip_per_video() -> None:
    paper = load_recipe(RUNNERS / "paper.toml")
    assert paper.train.val_clips == 3 and load_recipe(RUNNERS / "local.toml").train.val_clips == 1
    with pytest.raises(InputError, match=r"train\.val_clips: must be >= 1"):
        load_recipe(RUNNERS / "local.toml", ["train.val_clips=0"])
