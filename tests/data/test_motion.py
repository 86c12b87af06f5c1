from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from conftest import ROOT
from genomes import block, genome

from tvnsearch.cli.main import main
from tvnsearch.data.datasets import load_dataset
from tvnsearch.data.frame_cache import FrameCache
from tvnsearch.data.motion import CLASSES, HUES, render_motion
from tvnsearch.data.synth import SynthConfig, render_video, write_synth
from tvnsearch.data.video import decode_video
from tvnsearch.errors import InputError
from tvnsearch.search.recipe import load_recipe
from tvnsearch.train.training import prepare_data, train_genome

MIDDLE = 7  # the frame a one-frame clip of a 16-frame video is scored on


def brightness(videos: list[np.ndarray]) -> np.ndarray:
    """``(N, T)`` mean grey level of every frame."""
    return np.stack([v.astype(float).mean(axis=(1, 2, 3)) for v in videos])


def vertical_steps(frames: np.ndarray, hue: str) -> np.ndarray:
    """Rows the balls move from frame to frame (up negative): the peak of the phase correlation
    of consecutive maps of how much the hue's channel stands out."""
    x = frames.astype(float)
    channel = {"red": 0, "green": 1, "blue": 2}[hue]
    standout = x[..., channel] - np.delete(x, channel, axis=-1).max(axis=-1)
    spectra = np.fft.fft2(standout - standout.mean(axis=(1, 2), keepdims=True))
    cross = spectra[1:] * np.conj(spectra[:-1])
    correlation = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    size = frames.shape[1]
    return (correlation.max(axis=2).argmax(axis=1) + size // 2) % size - size // 2


def videos(name: str, count: int, size: int) -> list[np.ndarray]:
    return [render_motion(name, size, 16, np.random.default_rng(i)) for i in range(count)]


@functools.cache
def steady_middle_brightness() -> np.ndarray:
    return brightness(videos("green_steady", 200, 16))[:, MIDDLE]


def test_every_class_is_drawn_from_its_seed() -> None:
    assert len(CLASSES) == 24 and len(set(CLASSES)) == 24
    for name in CLASSES:
        a, b = (render_motion(name, 32, 8, np.random.default_rng(3)) for _ in range(2))
        assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
        assert not np.array_equal(a, render_motion(name, 32, 8, np.random.default_rng(4)))
    config = SynthConfig(task="motion", size=32, num_frames=8)
    expected = render_motion("red_up", 32, 8, np.random.default_rng(3))
    assert np.array_equal(render_video("red_up", config, np.random.default_rng(3)), expected)


@pytest.mark.parametrize(
    ("event", "changes"),
    [("steady", 0), ("dim", 1), ("brighten", 1), ("strobe", 15), ("flicker", 7)],
)
def test_the_light_shows_its_event_in_time_only(event: str, changes: int) -> None:
    levels = brightness(videos(f"green_{event}", 200, 16))
    steps = np.diff(np.log(levels), axis=1)
    big = np.abs(steps) > 0.3  # a dim light is 0.4-0.55 of a full one: |log| >= 0.6
    counts = big.sum(axis=1)
    if event == "flicker":  # two frames per phase: 7 or 8 changes, never two in a row
        assert set(counts) <= {7, 8} and not (big[:, 1:] & big[:, :-1]).any()
    else:
        assert set(counts) == {changes}
    if event in ("dim", "brighten"):
        sign = -1 if event == "dim" else 1
        assert (np.sign(steps[big]) == sign).all()
    # One frame: the middle frame is full or dim with even odds in every class, so its
    # brightness is drawn alike (a dim light there in every video would lower it by ~35).
    assert abs(levels[:, MIDDLE].mean() - steady_middle_brightness().mean()) < 10


@pytest.mark.parametrize(
    ("event", "rows_per_frame"), [("up", (-3, -1)), ("down", (1, 3)), ("steady", (0, 0))]
)
def test_balls_move_as_their_event_says(event: str, rows_per_frame: tuple[int, int]) -> None:
    for hue in HUES:
        for frames in videos(f"{hue}_{event}", 6, 64):
            step = np.median(vertical_steps(frames, hue))
            assert rows_per_frame[0] <= step <= rows_per_frame[1]


def test_fast_balls_move_either_way_faster() -> None:
    steps = [np.median(vertical_steps(f, "blue")) for f in videos("blue_fast", 12, 64)]
    assert all(3 <= abs(s) <= 6 for s in steps)
    assert min(steps) < 0 < max(steps)


def test_one_frame_cannot_tell_up_from_down() -> None:
    # The balls start anywhere and wrap, so in any one frame their rows are uniform whatever
    # the motion: the mean resultant length of the rows' angles is near 0 for both.
    def middle_rows(name: str) -> np.ndarray:
        rows = []
        for frames in videos(name, 100, 32):
            standout = frames[MIDDLE, ..., 0].astype(float) - frames[MIDDLE, ..., 1:].max(-1)
            rows.extend(np.nonzero(standout > 60)[0])
        return 2 * np.pi * (np.array(rows) + 0.5) / 32

    for angles in (middle_rows("red_up"), middle_rows("red_down")):
        assert len(angles) > 1000 and abs(np.exp(1j * angles).mean()) < 0.2


def test_writes_a_dataset_that_loads(tmp_path) -> None:
    config = SynthConfig(task="motion", num_videos=48, size=32, num_frames=8)
    summary = write_synth(tmp_path / "motion", config)
    assert (summary.num_train, summary.num_val, summary.classes) == (24, 24, CLASSES)
    meta = json.loads((tmp_path / "motion" / "synth.json").read_text())
    assert (meta["task"], meta["classes"], meta["num_videos"]) == ("motion", list(CLASSES), 48)
    ds = load_dataset(tmp_path / "motion")
    assert set(ds.classes) == set(CLASSES) and (len(ds.train), len(ds.val)) == (24, 24)
    assert decode_video(ds.val[0].path).shape == (8, 32, 32, 3)


def test_the_command_line_writes_the_motion_benchmark_by_default(tmp_path, capsys) -> None:
    out = tmp_path / "data" / "motion"
    argv = ["data", "synth", "--out", str(out), "--size", "32", "--num-frames", "4"]
    assert main([*argv, "--num-videos", "48"]) == 0
    assert "wrote 24 train and 24 val videos of 24 classes" in capsys.readouterr().out
    assert json.loads((out / "synth.json").read_text())["task"] == "motion"
    assert main([*argv, "--task", "nope"]) == 2
    assert capsys.readouterr().err == (
        "tvnsearch data synth: synthetic dataset: task: must be one of disc, motion, "
        "but got 'nope'\n"
    )
    assert main([*argv, "--num-videos", "30"]) == 2
    assert "num_videos: must be >= 48 (two per class), but got 30" in capsys.readouterr().err


def test_an_unknown_task_is_refused_before_anything_is_written(tmp_path) -> None:
    with pytest.raises(InputError, match="task: must be one of disc, motion"):
        write_synth(tmp_path / "x", SynthConfig(task="shapes"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_at_the_recipes_budget_a_temporal_network_beats_any_one_frame_one(tmp_path) -> None:
    recipe = load_recipe(ROOT / "runners" / "local.toml")
    write_synth(tmp_path / "motion", SynthConfig(task="motion"))
    data = prepare_data(tmp_path / "motion", FrameCache(tmp_path / "cache", short_side=64))

    def trained(resolution: int, num_frames: int, temporal_kernel: int) -> float:
        blocks = [
            block(spatial_stride=2, num_filters=n, temporal_kernel=temporal_kernel)
            for n in (16, 32)
        ]
        net = genome(*blocks, resolution=resolution, num_frames=num_frames)
        return train_genome(net, data, recipe.train).fitness

    # A one-frame network can learn the colour only: fitness 0.75 at best (top-1 1/8, top-5 5/8).
    one_frame, temporal = trained(48, 1, 1), trained(32, 4, 3)
    assert one_frame < 0.75 + 0.05 < 0.9 < temporal, (one_frame, temporal)
