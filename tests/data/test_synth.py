from __future__ import annotations

import json

import numpy as np
import pytest

from tvnsearch.cli.main import main
from tvnsearch.data.datasets import load_dataset
from tvnsearch.data.synth import CLASSES, SynthConfig, render_video, write_synth
from tvnsearch.data.video import decode_video
from tvnsearch.errors import InputError

SMALL = SynthConfig(num_videos=27, size=32, num_frames=8)


def disc_rows(frames: np.ndarray, colour: str) -> np.ndarray:
    """The disc's row in every frame, as an angle on the (wrapping) vertical axis."""
    channel = {"red": 0, "green": 1, "blue": 2}[colour]
    others = [c for c in range(3) if c != channel]
    strength = frames[..., channel].astype(float) - frames[..., others].astype(float).mean(-1)
    rows = strength.clip(min=0).sum(axis=2)  # (T, H)
    angles = 2 * np.pi * (np.arange(frames.shape[1]) + 0.5) / frames.shape[1]
    return np.angle((rows * np.exp(1j * angles)).sum(axis=1))


@pytest.mark.parametrize("name", CLASSES)
def test_each_class_shows_its_colour_and_vertical_motion(name) -> None:
    colour, motion = name.rsplit("_", 1)
    frames = render_video(name, SynthConfig(), np.random.default_rng(7))
    assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
    step = np.angle(np.exp(1j * np.diff(disc_rows(frames, colour))))  # wrapped per-frame motion
    pixels_per_frame = step * 64 / (2 * np.pi)
    expected = {"up": (-4.1, -2.4), "down": (2.4, 4.1), "still": (-0.1, 0.1)}[motion]
    assert np.all((expected[0] < pixels_per_frame) & (pixels_per_frame < expected[1]))


def test_one_frame_cannot_tell_the_motion() -> None:
    # The disc starts anywhere and wraps, so its row is uniform in any one frame, whatever the
    # motion: compare mid-video rows of many "up" and "down" videos.
    def mid_rows(name: str) -> np.ndarray:
        rows = []
        for i in range(200):
            frames = render_video(name, SynthConfig(size=32), np.random.default_rng(i))
            rows.append(disc_rows(frames[7:8], "red")[0])
        return np.array(rows)

    up, down = mid_rows("red_up"), mid_rows("red_down")
    for rows in (up, down):  # a uniform angle has a mean resultant length near 0
        assert abs(np.exp(1j * rows).mean()) < 0.2


def test_writes_class_folders_splits_and_metadata(tmp_path) -> None:
    summary = write_synth(tmp_path / "synth", SMALL)
    assert (summary.num_train, summary.num_val) == (18, 9)
    meta = json.loads((tmp_path / "synth" / "synth.json").read_text())
    assert meta["schema"] == "tvnsearch.synth/1" and meta["classes"] == list(CLASSES)
    ds = load_dataset(tmp_path / "synth")
    assert set(ds.classes) == set(CLASSES) and (len(ds.train), len(ds.val)) == (18, 9)
    frames = decode_video(ds.train[0].path)
    assert frames.shape == (8, 32, 32, 3)


def test_same_seed_same_frames_other_seed_other_frames(tmp_path) -> None:
    def first_frames(folder: str, seed: int) -> list[np.ndarray]:
        write_synth(tmp_path / folder, SynthConfig(seed=seed, num_videos=18, size=32, num_frames=4))
        files = sorted((tmp_path / folder).rglob("*.mp4"))
        return [decode_video(f) for f in files]

    a, b, c = first_frames("a", 1), first_frames("b", 1), first_frames("c", 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_replaces_a_synthetic_dataset_but_not_other_folders(tmp_path) -> None:
    write_synth(tmp_path / "synth", SynthConfig(num_videos=36, size=32, num_frames=4))
    write_synth(tmp_path / "synth", SynthConfig(num_videos=18, size=32, num_frames=4))
    assert len(list((tmp_path / "synth").rglob("*.mp4"))) == 18
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("")
    with pytest.raises(InputError, match="refusing to replace"):
        write_synth(tmp_path / "mine", SMALL)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_writes_the_dataset(tmp_path, capsys) -> None:
    out = tmp_path / "data" / "synth"
    argv = ["data", "synth", "--out", str(out), "--task", "disc", "--size", "32"]
    assert main([*argv, "--num-videos", "18", "--num-frames", "4", "--seed", "3"]) == 0
    assert "wrote 9 train and 9 val videos of 9 classes" in capsys.readouterr().out
    assert json.loads((out / "synth.json").read_text())["seed"] == 3
    assert main([*argv, "--num-videos", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tvnsearch data synth: synthetic dataset: num_videos: must be >= 18")
    assert err.count("\n") == 1
    assert main([*argv, "--num-videos", "20"]) == 2  # not as many in each of the 9 classes
    err = capsys.readouterr().err
    assert err == (
        "tvnsearch data synth: synthetic dataset: num_videos: must be a multiple of 9 (as many "
        "videos in each class), but got 20\n"
    )
