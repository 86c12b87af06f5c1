"""Decode every video once: a folder of uint8 ``(T, H, W, 3)`` ``.npy`` files, memory-mapped.

An entry's name is a hash of the video's absolute path, size, modification time and the cache
resolution, so an edited video is decoded again and one folder serves every candidate, every
worker and every run on a machine. Entries are written to a temporary file and renamed into place,
so processes that share the folder never read half a file; two that decode the same video at once
both write the same bytes. A video that cannot be decoded leaves a ``.fail`` note with the reason,
so that it is decoded (and reported) once, not once per candidate, and skipped alike on every node
that shares the cache. A failure of the machine's (memory, I/O, a full disk: ``NotReadNow``) is
tried again, and if it lasts, the video is skipped this time only: never noted as bad.

A dataset's listing (``indexes/<key>.json``) keeps what was found of each of its videos with the
size and modification time it was found at; opening the dataset again costs a stat per video.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvnsearch.data.video import NotReadNow, decode_video
from tvnsearch.errors import InputError, Problem, describe_error
from tvnsearch.files import atomic_write_text, atomic_writer, user_cache_dir

log = logging.getLogger(__name__)
FORMAT = "frames/1"  # part of every key: bump it when the decoding changes what is stored
DEFAULT_SHORT_SIDE = 128  # above the tiny space's largest resolution (96); see the README


def cache_dir(chosen: str | Path | None = None) -> Path:
    """``chosen``, or the machine's shared default: ``$XDG_CACHE_HOME/tvnsearch/frames``."""
    return Path(chosen) if chosen is not None else user_cache_dir("frames")


@dataclass(frozen=True)
class CachedVideo:
    source: Path
    file: Path
    num_frames: int
    height: int
    width: int


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


RETRIES = 3  # attempts at a video that failed for a reason of the machine's
RETRY_SECONDS = 1.0


class NotReadThisTime(InputError):
    """A video skipped this time for a reason of the machine's, after ``RETRIES`` attempts."""


class Passing(str):
    """Why a video was skipped this time only: never noted in the cache or its listing."""


Found = CachedVideo | str  # a video's cached frames, or why it cannot be read (maybe ``Passing``)


@dataclass(frozen=True)
class FrameIndex:
    """The cached videos of a dataset, by source path, and the ones skipped as unreadable."""

    entries: Mapping[Path, CachedVideo]
    skipped: tuple[Skipped, ...]

    def num_frames(self, path: Path) -> int:
        return self.entries[path].num_frames

    def read(self, path: Path, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` of one video as uint8 ``(len(indices), H, W, 3)``."""
        return np.asarray(open_frames(self.entries[path].file)[list(indices)])


@functools.lru_cache(maxsize=256)  # each open map holds a file descriptor
def open_frames(file: Path) -> np.ndarray:
    return np.load(file, mmap_mode="r")


@dataclass(frozen=True)
class FrameCache:
    root: Path
    short_side: int = DEFAULT_SHORT_SIDE

    def key(self, path: Path) -> str:
        stat = path.stat()
        text = f"{FORMAT}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.short_side}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def entry(self, path: Path) -> CachedVideo:
        """The cached frames of ``path``, decoded first if needed; ``InputError`` if unreadable."""
        try:
            key = self.key(path)
        except OSError as exc:
            raise InputError(str(path), f"cannot read: {exc.strerror or exc}") from None
        file = self.root / key[:2] / f"{key}.npy"
        failure = file.with_suffix(".fail")
        if not file.exists() and failure.exists():
            raise InputError(str(path), failure.read_text().strip())
        if not file.exists() or not _readable(file):
            self._decode_with_retries(path, file, failure)
        t, h, w, _ = open_frames(file).shape
        return CachedVideo(path, file, t, h, w)

    def _decode_with_retries(self, path: Path, file: Path, failure: Path) -> None:
        """Decode into the cache; a failure of the machine's (``NotReadNow``: memory, I/O, a
        full disk) is tried again after 1, 2 s, then reported as ``NotReadThisTime``, never
        noted as the video's."""
        for attempt in range(RETRIES):
            try:
                return self._decode_into(path, file, failure)
            except NotReadNow as exc:
                if attempt == RETRIES - 1:
                    why = f"not read this time ({exc}; tried {RETRIES} times): not noted as bad"
                    raise NotReadThisTime(str(path), why) from None
                time.sleep(RETRY_SECONDS * 2**attempt)

    def _decode_into(self, path: Path, file: Path, failure: Path) -> None:
        try:
            frames = decode_video(path, short_side=self.short_side)
        except NotReadNow:
            raise
        except InputError as exc:
            atomic_write_text(failure, "; ".join(str(p) for p in exc.problems) + "\n")
            raise
        except Exception as exc:  # a decoder bug must not end a search: skip this video
            why = f"cannot decode: {describe_error(exc)}"
            atomic_write_text(failure, why + "\n")
            raise InputError(str(path), why) from None
        try:
            _atomic_save(file, frames)
        except OSError as exc:  # the cache's disk, not the video
            raise NotReadNow(f"cannot write {file}: {exc.strerror or exc}") from None

    def index(
        self,
        paths: Iterable[Path],
        *,
        strict: bool = False,
        source: str = "videos",
        num_workers: int = 1,
        on_skip: Callable[[Skipped], None] | None = None,
        on_video: Callable[[int, int], None] | None = None,
    ) -> FrameIndex:
        """Cache every video of ``paths``; unreadable ones are skipped (reported once each).

        ``strict`` raises one ``InputError`` from ``source`` naming every unreadable video instead.
        ``on_video(done, total)`` is told of each video as it is done (decoded, or found cached).
        """
        paths = list(dict.fromkeys(paths))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = exc.strerror or exc
            raise InputError(str(self.root), f"cannot create the frame cache: {why}") from None
        listing = self.root / "indexes" / f"{_listing_key(paths, self.short_side)}.json"
        known = _read_listing(listing)
        results: list[Found] = []
        stats: list[list[int]] = []
        with ThreadPoolExecutor(max(1, num_workers)) as pool:
            for result, stat in pool.map(lambda path: self._known_or_entry(path, known), paths):
                results.append(result)
                stats.append(stat)
                if on_video is not None:
                    on_video(len(results), len(paths))
        pairs = list(zip(paths, results, strict=True))
        _write_listing(listing, self.root, zip(paths, results, stats, strict=True), known)
        entries = {p: r for p, r in pairs if isinstance(r, CachedVideo)}
        skipped = tuple(Skipped(p, r) for p, r in pairs if isinstance(r, str))
        if strict and skipped:
            raise InputError(source, [Problem(str(s.path), s.reason) for s in skipped])
        for s in skipped:
            (on_skip or _warn)(s)
        return FrameIndex(entries, skipped)

    def _known_or_entry(self, path: Path, known: dict[str, dict]) -> tuple[Found, list[int]]:
        """What the dataset's listing says of ``path`` if the video's size and modification time
        are still those it saw (and its frames are still there), else ``_entry_or_reason``: a
        stat or two per video instead of resolving, hashing and opening each. With the video's
        size and modification time (empty if it cannot be read)."""
        try:
            stat = path.stat()
        except OSError:
            return self._entry_or_reason(path), []
        seen, record = [stat.st_size, stat.st_mtime_ns], known.get(str(path))
        if record is None or record["stat"] != seen:
            return self._entry_or_reason(path), seen
        if "reason" in record:
            return record["reason"], seen
        file = self.root / record["file"]
        if not file.is_file():
            return self._entry_or_reason(path), seen
        return CachedVideo(path, file, *record["shape"]), seen

    def _entry_or_reason(self, path: Path) -> Found:
        try:
            return self.entry(path)
        except NotReadThisTime as exc:
            return Passing("; ".join(str(p) for p in exc.problems))
        except InputError as exc:
            return "; ".join(str(p) for p in exc.problems)


# A dataset's listing: what ``FrameCache.index`` found of each of its videos, written once, so that
# the next process to open the dataset (each worker of a search, each resume) stats the videos
# instead of resolving, hashing and opening every one.
LISTING_FORMAT = "listing/1"


def _listing_key(paths: list[Path], short_side: int) -> str:
    text = "\n".join([f"{FORMAT}|{LISTING_FORMAT}|{short_side}", *sorted(map(str, paths))])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_listing(path: Path) -> dict[str, dict]:
    """The listing's records by video path; empty when there is none or it does not parse (a
    cache is never fatal: it is rebuilt)."""
    try:
        data = json.loads(path.read_text())
        return data["videos"] if data.get("format") == LISTING_FORMAT else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _write_listing(
    path: Path,
    root: Path,
    found: Iterable[tuple[Path, Found, list[int]]],
    known: dict[str, dict],
) -> None:
    videos: dict[str, dict] = {}
    for video, result, stat in found:
        if not stat:
            continue  # missing: looked at again next time
        if isinstance(result, Passing):
            continue  # looked at again next time
        record: dict = {"stat": stat}
        if isinstance(result, str):
            record["reason"] = result
        else:
            record["file"] = str(result.file.relative_to(root))
            record["shape"] = [result.num_frames, result.height, result.width]
        videos[str(video)] = record
    if videos != known:
        with contextlib.suppress(OSError):  # a read-only shared cache: listed again next time
            atomic_write_text(path, json.dumps({"format": LISTING_FORMAT, "videos": videos}))


def _readable(file: Path) -> bool:
    """False for an entry damaged outside tvnsearch (renames never leave half a file)."""
    try:
        return open_frames(file).ndim == 4
    except (OSError, ValueError):
        return False


def _warn(skipped: Skipped) -> None:
    log.warning("skipping unreadable video %s: %s", skipped.path, skipped.reason)


def _atomic_save(file: Path, frames: np.ndarray) -> None:
    # 0644, not the umask's mode: other users' workers may share the cache.
    with atomic_writer(file, mode=0o644) as f:
        np.save(f, np.ascontiguousarray(frames, dtype=np.uint8))
