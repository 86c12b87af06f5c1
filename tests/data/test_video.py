from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tvnsearch.data.frame_files import DecodedFrames, Storage
from tvnsearch.data.video import (
    constant_rate_order,
    decode_video,
    encode_video,
    output_size,
)
from tvnsearch.errors import InputError


def ramp(num_frames: int, height: int, width: int) -> np.ndarray:
    """Smooth frames that survive lossy codecs; frame i is brighter than frame i-1."""
    y = np.linspace(0, 60, height)[:, None]
    x = np.linspace(0, 60, width)[None, :]
    frames = [(y + x + 20 * i)[..., None] + np.array([0, 30, 60]) for i in range(num_frames)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


# (codec, suffix, pixel format): one row per container, several codecs, odd sizes where the
# codec allows them (libx264 in 4:2:0 needs even sizes; 4:4:4 does not).
FORMATS = [
    ("mpeg4", ".mp4", "yuv420p", (48, 64)),
    ("mpeg4", ".mp4", "yuv420p", (37, 53)),
    ("libx264", ".mp4", "yuv420p", (48, 64)),
    ("libx264", ".mkv", "yuv444p", (37, 53)),
    ("libvpx", ".webm", "yuv420p", (37, 53)),
    ("libvpx-vp9", ".webm", "yuv420p", (31, 45)),
    ("mjpeg", ".avi", "yuvj420p", (53, 37)),
    ("ffv1", ".mkv", "yuv444p", (37, 53)),
    ("mpeg4", ".mov", "yuv420p", (48, 64)),
]


@pytest.mark.parametrize(("codec", "suffix", "pix_fmt", "size"), FORMATS)
def test_decodes_containers_codecs_and_odd_sizes(tmp_path, codec, suffix, pix_fmt, size) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg build has no {codec} encoder")
    frames = ramp(6, *size)
    path = tmp_path / f"v{suffix}"
    encode_video(path, frames, codec=codec, pix_fmt=pix_fmt)
    decoded = decode_video(path)
    assert decoded.dtype == np.uint8 and decoded.shape == (6, *size, 3)
    error = np.abs(decoded.astype(int) - frames).mean(axis=(1, 2, 3))
    assert error.max() < 6, error  # every frame close to the one written, in order


def test_one_frame_video(tmp_path) -> None:
    path = tmp_path / "one.mp4"
    encode_video(path, ramp(1, 32, 32))
    assert decode_video(path).shape == (1, 32, 32, 3)


def test_short_side_shrinks_keeping_aspect_and_never_enlarges(tmp_path) -> None:
    path = tmp_path / "odd.mkv"
    encode_video(path, ramp(3, 37, 53), codec="ffv1", pix_fmt="yuv444p")
    assert decode_video(path, short_side=20).shape == (3, 20, 29, 3)
    assert decode_video(path, short_side=100).shape == (3, 37, 53, 3)
    assert output_size(53, 37, 37) == (53, 37)
    assert output_size(1000, 3, 1) == (333, 1)


def test_max_frames_stops_early(tmp_path) -> None:
    path = tmp_path / "v.mp4"
    encode_video(path, ramp(10, 32, 32))
    assert decode_video(path, max_frames=4).shape[0] == 4


def test_variable_frame_rate_lands_on_a_constant_grid(tmp_path) -> None:
    path = tmp_path / "vfr.mkv"
    frames = ramp(6, 32, 32)
    encode_video(path, frames, times=[0.0, 0.01, 0.2, 0.23, 0.7, 0.71])
    with av.open(str(path)) as container:
        assert [f.time for f in container.decode(video=0)] == [0.0, 0.01, 0.2, 0.23, 0.7, 0.71]
    decoded = decode_video(path)
    # Ticks every 0.142 s; by hand, the nearest frames are 0, 2, 3, 3, 4, 5.
    nearest = [int(np.abs(frames.astype(int) - d).mean(axis=(1, 2, 3)).argmin()) for d in decoded]
    assert nearest == [0, 2, 3, 3, 4, 5]


def test_constant_rate_order_keeps_regular_or_unstamped_videos() -> None:
    assert constant_rate_order([0.0, 0.04, 0.08, 0.12, 0.16]) == [0, 1, 2, 3, 4]
    assert constant_rate_order([0.0, 0.0401, 0.0799, 0.12]) == [0, 1, 2, 3]
    assert constant_rate_order([0.0, None, 0.2]) == [0, 1, 2]
    assert constant_rate_order([0.0, 0.3, 0.1, 0.5]) == [0, 1, 2, 3]


def write_truncated(folder: Path) -> Path:
    path = folder / "ok.mp4"
    encode_video(path, ramp(8, 32, 32))
    bad = folder / "truncated.mp4"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return bad


def write_garbage(folder: Path) -> Path:
    path = folder / "garbage.avi"
    path.write_bytes(bytes(range(256)) * 20)
    return path


def write_empty(folder: Path) -> Path:
    path = folder / "empty.mp4"
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    "make", [write_truncated, write_garbage, write_empty, lambda folder: folder / "missing.mp4"]
)
def test_unreadable_files_raise_input_error_naming_the_file(tmp_path, make) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        decode_video(path)
    assert info.value.source == str(path)
    assert len(info.value.problems) == 1 and info.value.problems[0].message


def test_a_file_without_video_stream(tmp_path) -> None:
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(InputError, match="no video stream"):
        decode_video(path)


def test_decoded_frames_reads_the_same_frames_as_a_full_decode(tmp_path) -> None:
    path = tmp_path / "v.mp4"
    encode_video(path, ramp(12, 32, 48))
    reader = DecodedFrames({path: 12}, Storage(short_side=16, codec="raw"))
    full = decode_video(path, short_side=16)
    assert reader.num_frames(path) == 12
    assert np.array_equal(reader.read(path, [1, 3, 5]), full[[1, 3, 5]])
