"""Decoding one video file with PyAV into uint8 RGB frames ``(T, H, W, 3)``.

Any container and codec that FFmpeg reads, any frame size. A variable-frame-rate video is put on
a constant time grid (the nearest frame to each tick, at the video's mean rate), so that "every
s-th frame" means the same time step everywhere in the video. A file that cannot be opened, has
no video stream, decodes to no frame or fails while decoding raises ``InputError`` naming it.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tvnsearch.errors import InputError

# Failures of the machine, not of the video: memory, I/O, a full disk, too many open files.
PASSING_ERRNOS = frozenset(
    {
        errno.ENOMEM,
        errno.EIO,
        errno.ENOSPC,
        errno.EAGAIN,
        errno.EMFILE,
        errno.ENFILE,
        errno.EINTR,
        errno.ETIMEDOUT,
        errno.ESTALE,
    }
)


class NotReadNow(Exception):
    """A video that could not be read this time for a reason of the machine's (memory, I/O, a
    full disk): it may well read next time, so it is retried and never recorded as unreadable."""


VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ogv")


def decode_video(
    path: str | Path,
    *,
    short_side: int | None = None,
    max_fps: float | None = None,
    max_frames: int | None = None,
) -> np.ndarray:
    """All frames of ``path`` as uint8 ``(T, H, W, 3)``, in presentation order.

    ``short_side`` shrinks frames so that their shorter side is at most that many pixels (never
    enlarges); ``max_fps`` puts a faster video on a grid of
    that rate; ``max_frames`` stops decoding early (the time grid is then that of the frames read).
    """
    try:
        frames, times = _decode(Path(path), short_side, max_frames)
    except MemoryError:
        raise NotReadNow(f"{path}: out of memory while decoding") from None
    except (av.FFmpegError, OSError, EOFError) as exc:
        if getattr(exc, "errno", None) in PASSING_ERRNOS:
            raise NotReadNow(f"{path}: {_reason(exc)}") from None
        raise InputError(str(path), f"cannot decode: {_reason(exc)}") from None
    if not frames:
        raise InputError(str(path), "no frame could be decoded")
    return np.stack([frames[i] for i in constant_rate_order(times, max_fps)])


def encode_video(
    path: str | Path,
    frames: np.ndarray,
    *,
    fps: int = 8,
    codec: str = "mpeg4",
    pix_fmt: str = "yuv420p",
    times: Sequence[float] | None = None,
    options: Mapping[str, str] | None = None,
) -> None:
    """Write uint8 ``(T, H, W, 3)`` frames; the container follows the file's suffix.

    ``times`` (seconds, increasing) gives every frame its own timestamp: variable frame rate.
    """
    tick = Fraction(1, 1000) if times is not None else Fraction(1, fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=dict(options or {}))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.codec_context.time_base = tick
        stream.thread_count = 1  # one thread: the same frames always give the same bytes
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = round(times[i] / tick) if times is not None else i
            frame.time_base = tick
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _decode(
    path: Path, short_side: int | None, max_frames: int | None
) -> tuple[list[np.ndarray], list[float | None]]:
    frames: list[np.ndarray] = []
    times: list[float | None] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise InputError(str(path), "no video stream")
        size = None
        for frame in container.decode(video=0):
            # Some streams change size mid-way; the first frame fixes the size of them all.
            size = size or output_size(frame.width, frame.height, short_side)
            frames.append(frame.to_ndarray(format="rgb24", width=size[0], height=size[1]))
            times.append(frame.time)
            if max_frames is not None and len(frames) >= max_frames:
                break
    return frames, times


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the shorter side shrunk to ``short_side``; aspect ratio kept."""
    if short_side is None or min(width, height) <= short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def constant_rate_order(times: list[float | None], max_fps: float | None = None) -> list[int]:
    """Which decoded frame to show at each tick of a constant rate: the video's mean rate (as
    many ticks as frames), or ``max_fps`` where the video is faster.

    Constant-rate videos at most ``max_fps`` map to themselves; without usable timestamps,
    decode order is kept.
    """
    n = len(times)
    if n < 2 or any(t is None for t in times):
        return list(range(n))
    stamps = np.asarray(times, dtype=np.float64)
    if not np.all(np.diff(stamps) > 0):
        return list(range(n))
    duration = stamps[-1] - stamps[0]
    if max_fps is not None and (n - 1) / duration > max_fps:
        ticks = stamps[0] + np.arange(int(duration * max_fps + 1e-6) + 1) / max_fps
    elif n < 3:
        return list(range(n))
    else:
        ticks = np.linspace(stamps[0], stamps[-1], n)
    after = np.clip(np.searchsorted(stamps, ticks), 1, n - 1)
    nearer_before = ticks - stamps[after - 1] <= stamps[after] - ticks
    return [int(i) for i in np.where(nearer_before, after - 1, after)]
