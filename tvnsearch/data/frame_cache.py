"""Decode every video once: a folder of compressed frame files (``tvnsearch.data.frame_files``).

Each video is kept as its clips need it (``Storage``: the shorter side, a bounded frame rate, a
codec: JPEG by default), one file per video, any frame read without the rest. An entry's name is
a hash of the video's absolute path, size, modification time and its storage, so an edited video
is decoded again and one folder serves every candidate, every worker and every run on a machine.
A cache may have a size budget: a dataset that would not fit is refused early (its projected size
named), and other datasets' entries, least recently used first, make room.

Entries are written to a temporary file and renamed into place, so processes that share the folder
never read half a file; two that decode the same video at once both write the same bytes. A video
that cannot be decoded leaves a ``.fail`` note with the reason, so that it is decoded (and reported)
once, not once per candidate, and skipped alike on every node that shares the cache. A failure of
the machine's (memory, I/O, a full disk: ``NotReadNow``) is tried again, and if it lasts, the video
is skipped this time only: never noted as bad.

A dataset's listing (``indexes/<key>.json``) keeps what was found of each of its videos with the
size and modification time it was found at; opening the dataset again costs a stat per video.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvnsearch.data.frame_files import FrameFile, Storage, encode_frames
from tvnsearch.data.video import NotReadNow, decode_video
from tvnsearch.errors import InputError, Problem, describe_error
from tvnsearch.files import atomic_write_text, atomic_writer, user_cache_dir

log = logging.getLogger(__name__)
FORMAT = "frames/2"  # part of every key: bump it when the decoding changes what is stored
SUFFIX = ".frames"
DEFAULT_SHORT_SIDE = 128  # above the tiny space's largest resolution (96); see the README
BUDGET_SAMPLE = 32  # videos decoded before a dataset's size is projected against the budget


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
        file = self.entries[path].file
        return frame_file(file).read(file, indices)


@functools.lru_cache(maxsize=1 << 14)  # headers only (a few kB each): no file is held open
def frame_file(file: Path) -> FrameFile:
    return FrameFile.open(file)


@dataclass(frozen=True)
class FrameCache:
    """The cache at ``root``, keeping videos as ``storage`` says; ``budget``: the most bytes
    the folder may hold (None: no bound)."""

    root: Path
    short_side: int = DEFAULT_SHORT_SIDE
    max_fps: float | None = Storage.max_fps
    codec: str = Storage.codec
    quality: int = Storage.quality
    budget: int | None = None

    @property
    def storage(self) -> Storage:
        return Storage(self.short_side, self.max_fps, self.codec, self.quality)

    def key(self, path: Path) -> str:
        stat = path.stat()
        text = f"{FORMAT}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.storage.key}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def entry(self, path: Path) -> CachedVideo:
        """The cached frames of ``path``, decoded first if needed; ``InputError`` if unreadable."""
        try:
            key = self.key(path)
        except OSError as exc:
            raise InputError(str(path), f"cannot read: {exc.strerror or exc}") from None
        file = self.root / key[:2] / f"{key}{SUFFIX}"
        failure = file.with_suffix(".fail")
        if not file.exists() and failure.exists():
            raise InputError(str(path), failure.read_text().strip())
        header = _whole_header(file)
        if header is None:
            self._decode_with_retries(path, file, failure)
            header = FrameFile.open(file)
        t, h, w = header.shape
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
        s = self.storage
        try:
            frames = decode_video(path, short_side=s.short_side, max_fps=s.max_fps)
            data = encode_frames(frames, s)
        except NotReadNow:
            raise
        except InputError as exc:
            atomic_write_text(failure, "; ".join(str(p) for p in exc.problems) + "\n")
            raise
        except MemoryError:
            raise NotReadNow(f"{path}: out of memory while encoding") from None
        except Exception as exc:  # a decoder bug must not end a search: skip this video
            why = f"cannot decode: {describe_error(exc)}"
            atomic_write_text(failure, why + "\n")
            raise InputError(str(path), why) from None
        try:
            _atomic_save(file, data)
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
        listing: bool = True,
        leave_out: frozenset[Path] = frozenset(),
    ) -> FrameIndex:
        """Cache every video of ``paths``; unreadable ones are skipped (reported once each).

        ``strict`` raises one ``InputError`` from ``source`` naming every unreadable video instead.
        ``on_video(done, total)`` is told of each video as it is done (decoded, or found cached).
        ``listing``: keep (and use) the listing of ``paths``; a part of a dataset cached by one of
        several tasks has none of its own. ``leave_out``: videos of ``paths`` not to look at (found
        unreadable elsewhere); they are in no result, and the listing of ``paths`` serves alike.
        """
        paths = list(dict.fromkeys(paths))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = exc.strerror or exc
            raise InputError(str(self.root), f"cannot create the frame cache: {why}") from None
        listing_file = self._listing_file(paths)
        known = _read_listing(listing_file) if listing else {}
        looked = [p for p in paths if p not in leave_out]
        results: list[Found] = []
        stats: list[list[int]] = []
        budget = Budget(self, len(looked), source)
        pool = ThreadPoolExecutor(max(1, num_workers))
        try:
            for result, stat in pool.map(lambda path: self._known_or_entry(path, known), looked):
                results.append(result)
                stats.append(stat)
                budget.add(result)
                if on_video is not None:
                    on_video(len(results), len(looked))
        finally:  # an error or an interrupt: the videos not begun are not decoded
            pool.shutdown(cancel_futures=True)
        pairs = list(zip(looked, results, strict=True))
        if listing:
            videos = {str(p): known[str(p)] for p in leave_out if str(p) in known}  # kept
            for video, result, stat in zip(looked, results, stats, strict=True):
                if (record := listing_record(self.root, result, stat)) is not None:
                    videos[str(video)] = record
            _write_listing(listing_file, videos, known)
        entries = {p: r for p, r in pairs if isinstance(r, CachedVideo)}
        budget.make_room({e.file for e in entries.values()})
        skipped = tuple(Skipped(p, r) for p, r in pairs if isinstance(r, str))
        if strict and skipped:
            raise InputError(source, [Problem(str(s.path), s.reason) for s in skipped])
        for s in skipped:
            (on_skip or _warn)(s)
        return FrameIndex(entries, skipped)

    def missing(self, paths: Iterable[Path]) -> list[Path]:
        """The videos of ``paths`` that its listing does not know as they are now (cached, or
        unreadable): what indexing ``paths`` would decode. A stat per video."""
        paths = list(dict.fromkeys(paths))
        known = _read_listing(self._listing_file(paths))
        return [p for p in paths if not self._listed(p, known.get(str(p)))]

    def add_to_listing(self, paths: Iterable[Path], records: Mapping[str, dict]) -> None:
        """Put ``records`` (``listing_record``s by video, of some of ``paths``: what tasks that
        cached them found) into the listing of ``paths``, so that indexing them next costs a stat
        per video instead of resolving, hashing and opening each."""
        file = self._listing_file(paths)
        known = _read_listing(file)
        _write_listing(file, {**known, **records}, known)

    def _listing_file(self, paths: Iterable[Path]) -> Path:
        """Where the listing of the videos ``paths`` (in any order) is kept."""
        return self.root / "indexes" / f"{_listing_key(paths, self.storage)}.json"

    def _listed(self, path: Path, record: dict | None) -> bool:
        try:
            stat = path.stat()
        except OSError:
            return False
        if record is None or record["stat"] != [stat.st_size, stat.st_mtime_ns]:
            return False
        return "reason" in record or (self.root / record["file"]).is_file()

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


@dataclass
class Budget:
    """Keeps a dataset's frames within its cache's budget: refuses a dataset whose projected
    size is above it once ``BUDGET_SAMPLE`` videos are cached, and, when the folder is over it,
    removes the least recently used entries of other datasets."""

    cache: FrameCache
    total: int  # videos in the dataset
    source: str
    seen: int = 0  # videos looked at
    count: int = 0  # of which cached
    size: int = 0  # their bytes

    def add(self, found: Found) -> None:
        if self.cache.budget is not None:
            self.add_sizes([_stat(found.file) if isinstance(found, CachedVideo) else None])

    def add_sizes(self, stats: Iterable[os.stat_result | int | None]) -> None:
        """Count videos looked at: the size of each one cached (a stat or bytes), None for one
        that is not; ``InputError`` when the dataset's projected size is above the budget."""
        if self.cache.budget is None:
            return
        for stat in stats:
            self.seen += 1
            if stat is not None:
                self.count += 1
                self.size += stat if isinstance(stat, int) else stat.st_size
        projected = self.size / max(self.count, 1) * self.total
        if self.seen >= min(BUDGET_SAMPLE, self.total) and projected > self.cache.budget:
            self.refuse(projected, f"measured on {self.count} of {self.total} videos")

    def refuse(self, size: float, how: str) -> None:
        raise InputError(
            self.source,
            f"its frames would take about {_gb(size)} in the frame cache {self.cache.root} "
            f"({how}), above the cache's budget of {_gb(self.cache.budget or 0)}: raise the "
            "budget, or keep smaller frames (a smaller cache size, a lower quality, or the "
            "h264 codec)",
        )

    def make_room(self, keep: set[Path]) -> None:
        if self.cache.budget is None:
            return
        files = [f for f in self.cache.root.glob("??/*") if f.suffix in (SUFFIX, ".npy")]
        sizes = {f: _stat(f) for f in files}
        total = sum(s.st_size for s in sizes.values() if s is not None)
        others = sorted((s.st_atime, f) for f, s in sizes.items() if s and f not in keep)
        for _, file in others:
            if total <= self.cache.budget:
                break
            with contextlib.suppress(OSError):
                total -= file.stat().st_size
                file.unlink()
        if total > self.cache.budget:
            self.refuse(total, "measured")


def _stat(file: Path) -> os.stat_result | None:
    try:
        return file.stat()
    except OSError:
        return None


def _gb(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} bytes"


# A dataset's listing: what ``FrameCache.index`` found of each of its videos, written once, so that
# the next process to open the dataset (each worker of a search, each resume) stats the videos
# instead of resolving, hashing and opening every one.
LISTING_FORMAT = "listing/1"


def _listing_key(paths: Iterable[Path], storage: Storage) -> str:
    names = sorted({str(p) for p in paths})
    text = "\n".join([f"{FORMAT}|{LISTING_FORMAT}|{storage.key}", *names])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_listing(path: Path) -> dict[str, dict]:
    """The listing's records by video path; empty when there is none or it does not parse (a
    cache is never fatal: it is rebuilt)."""
    try:
        data = json.loads(path.read_text())
        return data["videos"] if data.get("format") == LISTING_FORMAT else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _write_listing(path: Path, videos: dict[str, dict], known: dict[str, dict]) -> None:
    """Write the listing's ``videos`` records, unless they are what the ``known`` listing says."""
    if videos != known:
        with contextlib.suppress(OSError):  # a read-only shared cache: listed again next time
            atomic_write_text(path, json.dumps({"format": LISTING_FORMAT, "videos": videos}))


def listing_record(root: Path, result: Found, stat: list[int]) -> dict | None:
    """What a listing keeps of a video found as ``result`` with ``stat`` (its size and
    modification time); None for one to look at again next time (missing, or passing)."""
    if not stat or isinstance(result, Passing):
        return None
    if isinstance(result, str):
        return {"stat": stat, "reason": result}
    file = str(result.file.relative_to(root))
    return {"stat": stat, "file": file, "shape": [result.num_frames, result.height, result.width]}


def _whole_header(file: Path) -> FrameFile | None:
    """The header of a complete entry; None for one that is missing or damaged outside
    tvnsearch (renames never leave half a file)."""
    try:
        header = FrameFile.open(file)
        complete = file.stat().st_size == header.start + int(header.offsets[-1])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return header if complete else None


def _warn(skipped: Skipped) -> None:
    log.warning("skipping unreadable video %s: %s", skipped.path, skipped.reason)


def _atomic_save(file: Path, data: bytes) -> None:
    # 0644, not the umask's mode: other users' workers may share the cache.
    with atomic_writer(file, mode=0o644) as f:
        f.write(data)
