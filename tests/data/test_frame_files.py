from __future__ import annotations

import numpy as np
import pytest

from tvnsearch.data import frame_files
from tvnsearch.data.frame_files import CODECS, FrameFile, Storage, encode_frames, stored
from tvnsearch.data.video import constant_rate_order


def scene(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, moving picture with a little noise: what a codec meets in real footage."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    frames = [
        120 + 60 * np.sin(3 * x + 2 * y + 0.2 * t + np.array([0, 0.3, 0.6]))
        for t in range(num_frames)
    ]
    noise = rng.normal(0, 2, (num_frames, height, width, 3))
    return np.clip(np.stack(frames) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("shape", [(20, 24, 32), (9, 17, 23), (1, 8, 8)])
def test_every_frame_reads_back_alone_in_any_order(tmp_path, codec, shape) -> None:
    frames = scene(*shape)
    storage = Storage(codec=codec)
    file = tmp_path / "v.frames"
    file.write_bytes(encode_frames(frames, storage))
    header = FrameFile.open(file)
    assert header.shape == shape and header.codec == codec
    everything = stored(frames, storage)
    assert everything.shape == frames.shape and everything.dtype == np.uint8
    t = shape[0]
    for wanted in ([0], [t - 1], [t - 1, 0, 0, t // 2], list(range(t))[::-3]):
        assert np.array_equal(header.read(file, wanted), everything[wanted])
    if codec == "raw":
        assert np.array_equal(everything, frames)


@pytest.mark.parametrize("codec", ["jpeg", "h264"])
def test_compressed_frames_stay_close_to_the_decoded_ones(codec) -> None:
    frames = scene(16, 96, 128)
    error = np.abs(stored(frames, Storage(codec=codec)).astype(int) - frames).mean()
    assert error < 2.5, error


def test_h264_is_smaller_than_jpeg_and_jpeg_than_raw() -> None:
    frames = scene(40, 96, 128)
    sizes = {c: len(encode_frames(frames, Storage(codec=c))) for c in CODECS}
    assert sizes["h264"] < sizes["jpeg"] < sizes["raw"] / 4


def test_encoding_is_deterministic(tmp_path) -> None:
    frames = scene(12, 24, 32)
    for codec in CODECS:
        storage = Storage(codec=codec)
        assert encode_frames(frames, storage) == encode_frames(frames, storage)


def test_a_long_video_reads_its_offsets_past_the_first_read(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(frame_files, "PREFIX", 64)  # the offsets do not fit the first read
    frames = scene(30, 8, 8)
    file = tmp_path / "v.frames"
    file.write_bytes(encode_frames(frames, Storage(codec="raw")))
    assert np.array_equal(FrameFile.open(file).read(file, [29, 3]), frames[[29, 3]])


@pytest.mark.parametrize("content", [b"", b"garbage", frame_files.MAGIC + b"\x05\x00\x00\x00{}"])
def test_a_file_that_is_not_a_frame_file_is_a_value_error(tmp_path, content) -> None:
    file = tmp_path / "v.frames"
    file.write_bytes(content)
    with pytest.raises((ValueError, KeyError)):
        FrameFile.open(file)


def test_a_faster_video_is_put_on_a_grid_of_the_bounded_rate() -> None:
    sixty = [i / 60 for i in range(121)]  # 2 s at 60 fps
    order = constant_rate_order(sixty, max_fps=30)
    assert order == list(range(0, 121, 2))  # 61 frames: every other one
    assert constant_rate_order(sixty, max_fps=60) == list(range(121))
    assert constant_rate_order(sixty) == list(range(121))
    twenty_five = [i / 25 for i in range(50)]
    assert constant_rate_order(twenty_five, max_fps=30) == list(range(50))  # slower: unchanged
    order = constant_rate_order([i / 50 for i in range(50)], max_fps=30)
    assert len(order) == 30 and order[:4] == [0, 2, 3, 5]  # 5/3 frames a tick: the nearest
