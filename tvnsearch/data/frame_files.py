"""One video's cached frames in one file: compressed, each frame found without reading the rest.

A file holds the frames a clip can ask for (``Storage``: the shorter side, a bounded frame rate)
in one of three codecs:

- ``jpeg`` (the default): each frame a JPEG of its own (Pillow, whose wheels carry
  libjpeg-turbo), chroma at half resolution as in the source videos' own codecs. Any frame is
  read alone, in about 0.2 ms at 128 px.
- ``h264``: the frames as an H.264 stream (libx264 through PyAV) with a keyframe every ``GOP``
  frames and no B-frames, several times smaller than JPEG; a clip is decoded from the keyframe
  before its first frame. For large frames (a space of 224 px clips), where JPEG does not fit.
- ``raw``: uint8 as decoded, as large as the frames themselves: the exact decoded pixels.

Layout: ``MAGIC``, a little-endian u32 header length, a JSON header (codec, shape, keyframe
interval), the ``T + 1`` u64 offsets of the frames' bytes, then the bytes. Decoding is
deterministic, so a clip read from a file always has the same pixels, and ``stored`` gives the
pixels a file would give without writing one (the cache's reference: what a fresh decode of a
video would store).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import numpy as np

MAGIC = b"TVNFRAMES2\n"
CODECS = ("jpeg", "h264", "raw")
GOP = 8  # h264: frames from one keyframe to the next; a clip decodes at most GOP - 1 extra
PREFIX = 1 << 16  # bytes read at first: the header and offsets of a video of ~8,000 frames


@dataclass(frozen=True)
class Storage:
    """How a video's frames are kept: every setting is part of the cache's key."""

    short_side: int = 128  # frames' shorter side, px (never enlarged)
    max_fps: float | None = 30.0  # faster videos are put on a grid of this rate
    codec: str = "jpeg"  # one of CODECS
    quality: int = 90  # 1-100; jpeg: its quality; h264: a constant rate factor (``crf``)

    LIMITS: ClassVar[dict[str, str | tuple[str, ...]]] = {
        "short_side": (">= 8", "<= 4096"),
        "max_fps": ("> 0", "<= 1000"),
        "quality": (">= 1", "<= 100"),
    }

    @property
    def key(self) -> str:
        return f"{self.short_side}|{self.max_fps}|{self.codec}|{self.quality}"


def encode_frames(frames: np.ndarray, storage: Storage) -> bytes:
    """uint8 ``(T, H, W, 3)`` -> the bytes of one cache file."""
    t, h, w, _ = frames.shape
    if storage.codec == "jpeg":
        chunks = [_jpeg(frame, storage.quality) for frame in frames]
    elif storage.codec == "h264":
        chunks = _h264(frames, storage.quality)
    else:
        chunks = [np.ascontiguousarray(frame).tobytes() for frame in frames]
    gop = GOP if storage.codec == "h264" else 1
    header = json.dumps({"codec": storage.codec, "shape": [t, h, w], "gop": gop}).encode()
    offsets = np.zeros(t + 1, dtype="<u8")
    offsets[1:] = np.cumsum([len(c) for c in chunks])
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, offsets.tobytes(), *chunks])


def stored(frames: np.ndarray, storage: Storage) -> np.ndarray:
    """The frames a cache file of ``frames`` gives back: the codec's round trip."""
    data = encode_frames(frames, storage)
    header, offsets, start = _parse(data)
    return _decode(data, header, offsets, start, list(range(len(frames))))


@dataclass(frozen=True)
class DecodedFrames:
    """Reads frames by decoding the video on every read, as the cache would store them (the
    same size, rate and codec): what the frame cache saves, and what it must agree with.
    ``lengths`` gives each video's frame count."""

    lengths: Mapping[Path, int]
    storage: Storage

    def num_frames(self, path: Path) -> int:
        return self.lengths[path]

    def read(self, path: Path, indices: Sequence[int]) -> np.ndarray:
        from tvnsearch.data.video import decode_video

        s = self.storage
        frames = stored(decode_video(path, short_side=s.short_side, max_fps=s.max_fps), s)
        return frames[[min(i, len(frames) - 1) for i in indices]]


@dataclass(frozen=True)
class FrameFile:
    """A cache file's header: its shape, and where each frame's bytes are."""

    codec: str
    shape: tuple[int, int, int]  # (T, H, W)
    gop: int
    offsets: np.ndarray  # T + 1, from ``start``
    start: int

    @classmethod
    def open(cls, file: Path) -> FrameFile:
        """``ValueError`` for a file that is not a frame file (damaged outside tvnsearch)."""
        with open(file, "rb") as f:
            prefix = f.read(PREFIX)
            header, offsets, start = _parse(prefix, f)
        return cls(header["codec"], tuple(header["shape"]), header["gop"], offsets, start)

    def read(self, file: Path, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed) as uint8 ``(len, H, W, 3)``."""
        wanted = sorted(set(indices))
        first = wanted[0] - wanted[0] % self.gop
        lo, hi = int(self.offsets[first]), int(self.offsets[wanted[-1] + 1])
        with open(file, "rb") as f:
            f.seek(self.start + lo)
            data = f.read(hi - lo)
        if len(data) != hi - lo:
            raise ValueError(f"{file}: truncated")
        header = {"codec": self.codec, "shape": self.shape, "gop": self.gop}
        frames = _decode(data, header, self.offsets - lo, 0, wanted)
        where = {index: i for i, index in enumerate(wanted)}
        return frames[[where[i] for i in indices]]


def _parse(data: bytes, f: io.BufferedReader | None = None) -> tuple[dict, np.ndarray, int]:
    if not data.startswith(MAGIC):
        raise ValueError("not a frame file")
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    at = len(MAGIC) + 4
    header = json.loads(data[at : at + length])
    count = header["shape"][0] + 1
    at += length
    table = data[at : at + 8 * count]
    if len(table) < 8 * count and f is not None:  # a long video: its offsets pass the prefix
        f.seek(at)
        table = f.read(8 * count)
    if len(table) != 8 * count or header["codec"] not in CODECS:
        raise ValueError("damaged frame file")
    return header, np.frombuffer(table, dtype="<u8").astype(np.int64), at + 8 * count


def _decode(
    data: bytes, header: dict, offsets: np.ndarray, start: int, wanted: list[int]
) -> np.ndarray:
    """Frames ``wanted`` (sorted, distinct) from ``data``, whose frame i is at
    ``start + offsets[i]``; an h264 stream is decoded from the keyframe before each run."""
    _, h, w = header["shape"]

    def chunk(i: int) -> bytes:
        return data[start + int(offsets[i]) : start + int(offsets[i + 1])]

    if header["codec"] == "raw":
        return np.stack([np.frombuffer(chunk(i), np.uint8).reshape(h, w, 3) for i in wanted])
    if header["codec"] == "jpeg":
        return np.stack([_unjpeg(chunk(i)) for i in wanted])
    return _unh264(chunk, header["gop"], wanted, h, w)


def _jpeg(frame: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    # 4:2:0, as the source videos' codecs keep colour; optimized Huffman tables: ~5 % smaller.
    Image.fromarray(frame).save(out, format="JPEG", quality=quality, subsampling=2, optimize=True)
    return out.getvalue()


def _unjpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def crf(quality: int) -> int:
    """x264's constant rate factor for ``quality``: 100 is 0 (lossless), 90 is 18 (what x264
    calls visually lossless, about JPEG 90's fidelity), 72 and below are 51 (the coarsest)."""
    return min(51, round(1.8 * (100 - quality)))


def _h264(frames: np.ndarray, quality: int) -> list[bytes]:
    """One packet per frame (no B-frames: decode order is display order), a keyframe and its
    parameter sets every GOP frames, so that decoding can start at any keyframe."""
    import av

    t, h, w, _ = frames.shape
    context = av.CodecContext.create("libx264", "w")
    # 4:2:0 needs even sides: the last column and row are repeated, and cut off when read.
    context.width, context.height = w + w % 2, h + h % 2
    context.pix_fmt, context.time_base = "yuv420p", Fraction(1, 25)
    context.options = {
        "crf": str(crf(quality)),
        "preset": "veryfast",
        "tune": "zerolatency",
        "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0:repeat-headers=1"
        ":threads=1",  # one thread: the same frames always give the same bytes
    }
    padded = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    packets: list[bytes] = []
    for i, image in enumerate(padded):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = i
        packets += [bytes(p) for p in context.encode(frame)]
    packets += [bytes(p) for p in context.encode(None)]
    if len(packets) != t:
        raise ValueError(f"h264 gave {len(packets)} packets for {t} frames")
    return packets


def _unh264(chunk, gop: int, wanted: list[int], height: int, width: int) -> np.ndarray:
    import av

    out: dict[int, np.ndarray] = {}
    context, at = None, -1  # the decoder, and the last frame it gave
    for index in wanted:
        if context is None or index // gop != at // gop or index <= at:
            context, at = av.CodecContext.create("h264", "r"), index - index % gop - 1
            context.thread_count = 1
        while at < index:
            at += 1
            (frame,) = context.decode(av.Packet(chunk(at)))
            if at == index:
                out[index] = frame.to_ndarray(format="rgb24")
    return np.stack([out[i][:height, :width] for i in wanted])
