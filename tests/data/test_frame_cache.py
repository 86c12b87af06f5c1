from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import tvnsearch.data.frame_cache as frame_cache
from tvnsearch.data.frame_cache import FrameCache, cache_dir
from tvnsearch.data.frame_files import CODECS, DecodedFrames
from tvnsearch.data.video import decode_video, encode_video
from tvnsearch.errors import InputError


def frames(num_frames: int, height: int, width: int, shift: int = 0) -> np.ndarray:
    y = np.linspace(0, 90, height)[:, None, None]
    x = np.linspace(0, 90, width)[None, :, None]
    return np.stack(
        [np.clip(y + x + 15 * i + shift + np.array([0, 40, 80]), 0, 255) for i in range(num_frames)]
    ).astype(np.uint8)


@pytest.fixture
def videos(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "videos"
    folder.mkdir()
    paths = {
        "wide": folder / "wide.mp4",
        "odd": folder / "odd.mkv",
        "one": folder / "one.avi",
        "corrupt": folder / "corrupt.mp4",
        "empty": folder / "empty.webm",
        "missing": folder / "missing.mp4",
    }
    encode_video(paths["wide"], frames(8, 48, 96))
    encode_video(paths["odd"], frames(5, 37, 53), codec="ffv1", pix_fmt="yuv444p")
    encode_video(paths["one"], frames(1, 40, 40), codec="mjpeg", pix_fmt="yuvj420p")
    paths["corrupt"].write_bytes(os.urandom(3000))
    paths["empty"].write_bytes(b"")
    return paths


def test_index_caches_readable_videos_and_skips_the_others_once(tmp_path, videos, caplog) -> None:
    cache = FrameCache(tmp_path / "cache", short_side=24)
    with caplog.at_level(logging.WARNING, logger="tvnsearch.data.frame_cache"):
        index = cache.index(videos.values(), num_workers=2)
    assert {p.name for p in index.entries} == {"wide.mp4", "odd.mkv", "one.avi"}
    assert sorted(s.path.name for s in index.skipped) == [
        "corrupt.mp4",
        "empty.webm",
        "missing.mp4",
    ]
    assert all(s.reason for s in index.skipped)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 and all("skipping unreadable video" in m for m in messages)
    wide = index.entries[videos["wide"]]
    assert (wide.num_frames, wide.height, wide.width) == (8, 24, 48)
    assert index.num_frames(videos["one"]) == 1
    odd = index.entries[videos["odd"]]
    assert (odd.height, odd.width) == (24, 34)  # 37x53 with the shorter side shrunk to 24


def test_index_tells_how_many_videos_are_done(tmp_path, videos) -> None:
    told: list[tuple[int, int]] = []
    FrameCache(tmp_path / "cache", short_side=24).index(
        videos.values(), on_video=lambda *done: told.append(done), on_skip=lambda _: None
    )
    assert told == [(i, 6) for i in range(1, 7)]  # the unreadable ones count as done too


@pytest.mark.parametrize("codec", CODECS)
def test_cached_frames_equal_a_fresh_decode_stored_alike(tmp_path, videos, codec) -> None:
    cache = FrameCache(tmp_path / "cache", short_side=24, codec=codec)
    index = cache.index([videos["wide"], videos["odd"]])
    for name in ("wide", "odd"):  # odd: 37x53 shrunk to 24x34, 5 frames, ffv1
        path = videos[name]
        fresh = DecodedFrames({path: index.num_frames(path)}, cache.storage)
        wanted = [0, 3, 3, 1, 4]
        got = index.read(path, wanted)
        assert got.dtype == np.uint8 and np.array_equal(got, fresh.read(path, wanted))
    raw = decode_video(videos["wide"], short_side=24)
    if codec == "raw":  # the exact decoded pixels
        assert np.array_equal(index.read(videos["wide"], range(8)), raw)
    else:  # the codec's round trip: close to them
        error = np.abs(index.read(videos["wide"], range(8)).astype(int) - raw).mean()
        assert error < 3.0, error


def test_a_second_index_decodes_nothing(tmp_path, videos, monkeypatch) -> None:
    cache = FrameCache(tmp_path / "cache", short_side=24)
    first = cache.index(videos.values())

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(frame_cache, "decode_video", no_decoding)
    second = cache.index(videos.values())
    assert second.entries == first.entries
    # Corrupt and empty files left a note; a missing one has nothing to key a note on.
    assert second.skipped == first.skipped


def test_a_dataset_opened_again_is_read_from_its_listing_with_a_stat_per_video(
    tmp_path, videos, monkeypatch
) -> None:
    cache = FrameCache(tmp_path / "cache", short_side=24)
    present = [path for name, path in videos.items() if name != "missing"]
    first = cache.index(present)
    (listing,) = (tmp_path / "cache" / "indexes").iterdir()
    written = listing.stat().st_mtime_ns

    def not_again(*args, **kwargs):
        raise AssertionError("a listed video was keyed, hashed or opened again")

    monkeypatch.setattr(FrameCache, "_entry_or_reason", not_again)
    frame_cache.frame_file.cache_clear()
    again = cache.index(present)
    assert again.entries == first.entries and again.skipped == first.skipped
    assert frame_cache.frame_file.cache_info().misses == 0  # no entry was opened
    assert listing.stat().st_mtime_ns == written  # nothing new: not rewritten


def test_a_video_changed_or_frames_gone_since_the_listing_are_looked_at_again(
    tmp_path, videos
) -> None:
    cache = FrameCache(tmp_path / "cache", short_side=24)
    paths = [videos["wide"], videos["odd"]]
    first = cache.index(paths)
    encode_video(videos["wide"], frames(6, 48, 96, shift=50))
    first.entries[videos["odd"]].file.unlink()
    again = cache.index(paths)
    assert again.entries[videos["wide"]].num_frames == 6
    assert again.entries[videos["odd"]].file.is_file()


def test_a_listing_that_does_not_parse_is_rebuilt(tmp_path, videos) -> None:
    cache = FrameCache(tmp_path / "cache", short_side=24)
    first = cache.index(videos.values())
    (listing,) = (tmp_path / "cache" / "indexes").iterdir()
    listing.write_text('{"format": "listing/1", "videos": ')
    assert cache.index(videos.values()).entries == first.entries
    assert frame_cache._read_listing(listing) != {}


def test_a_changed_video_is_decoded_again(tmp_path, videos) -> None:
    cache = FrameCache(tmp_path / "cache", short_side=24)
    before = cache.entry(videos["wide"])
    encode_video(videos["wide"], frames(6, 48, 96, shift=50))
    after = cache.entry(videos["wide"])
    assert after.file != before.file and after.num_frames == 6


def test_the_cache_resolution_is_part_of_the_key(tmp_path, videos) -> None:
    small = FrameCache(tmp_path / "cache", short_side=24).entry(videos["wide"])
    full = FrameCache(tmp_path / "cache", short_side=128).entry(videos["wide"])
    assert small.file != full.file and (full.height, full.width) == (48, 96)


def test_strict_mode_names_every_unreadable_video(tmp_path, videos) -> None:
    cache = FrameCache(tmp_path / "cache")
    with pytest.raises(InputError) as info:
        cache.index(videos.values(), strict=True, source="list.csv")
    lines = info.value.lines()
    assert len(lines) == 3 and all(line.startswith("list.csv: ") for line in lines)
    assert any(str(videos["corrupt"]) in line for line in lines)


def test_concurrent_writers_leave_one_complete_entry_and_no_temporary_files(
    tmp_path, videos
) -> None:
    cache = FrameCache(tmp_path / "cache", short_side=24)
    with ThreadPoolExecutor(4) as pool:
        entries = list(pool.map(cache.entry, [videos["wide"]] * 8))
    assert len({e.file for e in entries}) == 1
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert [p.suffix for p in files] == [frame_cache.SUFFIX]


def test_cache_dir_default_and_choice(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "tvnsearch" / "frames"
    assert cache_dir("elsewhere") == Path("elsewhere")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_entry_is_decoded_again(tmp_path, videos, damage) -> None:
    cache = FrameCache(tmp_path / "cache", short_side=24)
    entry = cache.entry(videos["wide"])
    whole = entry.file.read_bytes()
    entry.file.write_bytes(b"garbage" if damage == "garbage" else whole[: len(whole) // 2])
    again = cache.entry(videos["wide"])
    assert again == entry and again.file.read_bytes() == whole


def test_an_unwritable_cache_folder_is_an_input_error(tmp_path, videos) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="cannot create the frame cache"):
        FrameCache(tmp_path / "file" / "cache").index([videos["wide"]])


def test_a_failure_of_the_machine_s_is_not_the_video_s(monkeypatch, videos) -> None:
    import errno

    from tvnsearch.data import video as video_module

    passing = (MemoryError(), OSError(errno.ENOSPC, "No space left on device"))
    for raised, expected in [
        *((e, video_module.NotReadNow) for e in passing),
        (EOFError(), InputError),
    ]:

        def failing(*args, raised=raised, **kwargs):
            raise raised

        monkeypatch.setattr(video_module, "_decode", failing)
        with pytest.raises(expected):  # the machine's: retried; the video's: noted
            decode_video(videos["wide"])


def test_a_passing_failure_is_retried_then_skipped_this_time_only(
    tmp_path, videos, monkeypatch
) -> None:
    from tvnsearch.data.video import NotReadNow

    monkeypatch.setattr(frame_cache, "RETRY_SECONDS", 0.0)
    real, calls = frame_cache.decode_video, []

    def flaky(path, **kwargs):
        calls.append(path)
        if len(calls) < 3:
            raise NotReadNow(f"{path}: out of memory while decoding")
        return real(path, **kwargs)

    monkeypatch.setattr(frame_cache, "decode_video", flaky)
    cache = FrameCache(tmp_path / "cache", short_side=24)
    assert cache.index([videos["wide"]]).entries[videos["wide"]].num_frames == 8
    assert len(calls) == 3  # two failures, then read

    def down(path, **kwargs):
        raise NotReadNow(f"{path}: Input/output error")

    monkeypatch.setattr(frame_cache, "decode_video", down)
    index = cache.index([videos["odd"]])
    (skipped,) = index.skipped
    assert "not read this time" in skipped.reason and "not noted as bad" in skipped.reason
    assert not list((tmp_path / "cache").rglob("*.fail"))  # nothing says the video is bad
    monkeypatch.setattr(frame_cache, "decode_video", real)
    assert videos["odd"] in cache.index([videos["odd"]]).entries  # read when the machine is well


@pytest.fixture
def many(tmp_path) -> list[Path]:
    folder = tmp_path / "many"
    folder.mkdir()
    paths = [folder / f"v{i}.mp4" for i in range(8)]
    for i, path in enumerate(paths):
        encode_video(path, frames(6, 32, 48, shift=10 * i))
    return paths


def test_a_dataset_above_the_budget_is_refused_early_by_its_projected_size(
    tmp_path, many, monkeypatch
) -> None:
    monkeypatch.setattr(frame_cache, "BUDGET_SAMPLE", 2)
    one = len(FrameCache(tmp_path / "sizes", short_side=24).entry(many[0]).file.read_bytes())
    cache = FrameCache(tmp_path / "cache", short_side=24, budget=3 * one)
    with pytest.raises(InputError, match=r"would take about .* above the cache's budget") as info:
        cache.index(many, source="list.csv")
    assert info.value.lines()[0].startswith("list.csv: ") and "measured on 2 of 8" in str(
        info.value
    )
    assert len(list((tmp_path / "cache").glob(f"??/*{frame_cache.SUFFIX}"))) < len(many)


def test_other_datasets_least_recently_used_make_room_within_the_budget(tmp_path, many) -> None:
    roomy = FrameCache(tmp_path / "cache", short_side=24)
    old, older, new = many[:2], many[2:4], many[4:]
    for group, when in ((older, 1_000), (old, 2_000)):
        for entry in roomy.index(group).entries.values():
            os.utime(entry.file, (when, when))  # last read long ago
    sizes = [e.file.stat().st_size for e in roomy.index(new).entries.values()]
    tight = FrameCache(tmp_path / "cache", short_side=24, budget=sum(sizes) + 2 * max(sizes) + 1)
    index = tight.index(new)
    left = {p.name for p in (tmp_path / "cache").glob(f"??/*{frame_cache.SUFFIX}")}
    assert {e.file.name for e in index.entries.values()} <= left  # this dataset's stay
    kept = {e.file.name for e in roomy.index(old).entries.values()}  # decoded again if gone
    assert len(left) == len(new) + 2 and kept <= left  # the older dataset went first


def test_missing_names_what_indexing_would_decode_at_a_stat_per_video(tmp_path, many) -> None:
    cache = FrameCache(tmp_path / "cache", short_side=24)
    assert cache.missing(many) == many  # no listing yet
    cache.index(many)
    assert cache.missing(many) == []
    encode_video(many[3], frames(4, 32, 48, shift=99))  # changed since
    next(cache.index(many[5:6]).entries.values().__iter__()).file.unlink()  # frames gone
    assert cache.missing(many) == [many[3], many[5]]


def test_videos_left_out_are_not_looked_at_and_the_listing_serves_alike(
    tmp_path, videos, monkeypatch
) -> None:
    cache = FrameCache(tmp_path / "cache", short_side=24)
    present = [path for name, path in videos.items() if name != "missing"]
    first = cache.index(present, on_skip=lambda _: None)
    (listing,) = (tmp_path / "cache" / "indexes").iterdir()
    written = listing.read_text()
    monkeypatch.setattr(FrameCache, "_entry_or_reason", not_again)
    bad = frozenset([videos["corrupt"], videos["empty"]])
    left = cache.index(present, leave_out=bad)  # as a search's worker: the same listing
    assert left.skipped == () and left.entries == first.entries
    assert listing.read_text() == written  # what it knew of the videos left out is kept


def not_again(*args, **kwargs):
    raise AssertionError("a listed video was keyed, hashed or opened again")
