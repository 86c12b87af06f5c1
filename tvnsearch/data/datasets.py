"""Video datasets as the user points at them: class folders or a CSV/JSONL list, with splits.

A folder holds one sub-folder per class (the UCF-101 / HMDB-51 layout), optionally inside
``train/`` and ``val/`` (or ``validation/``) folders, and a ``test/`` folder. A list file has one
video per row with ``path``, ``label`` (one class) or ``labels`` (multi-label: a JSON list in
JSONL, ``;``-separated in CSV) and optionally ``split`` (``train``, ``val``/``validation``,
``test``) and ``group``. Relative paths resolve against the list file's folder. Without split
sub-folders or a split column, a seeded split holds out ``val_fraction`` of every class.

Honest splits: clips cut from one source video look alike, so a seeded split keeps each
``group`` whole on one side. A list names groups in its ``group`` column; in folders, UCF-101's
naming (``v_<Class>_g<NN>_c<NN>.avi``: clips of group NN) is detected; every other video is a
group of its own. The ``test`` split is kept apart: a search never reads it (it selects on
``val``), and ``tvnsearch evaluate`` scores an exported network on it.

Paths are not checked here: a missing or unreadable video is found, reported and skipped when
the frames are decoded (``tvnsearch.data.frame_cache``).
"""

from __future__ import annotations

import csv
import json
import random
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvnsearch.data.video import VIDEO_SUFFIXES
from tvnsearch.errors import InputError, Notice, Problem

SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
UCF101_GROUP = re.compile(r"^v_(.+)_g(\d+)_c\d+$")  # v_ApplyEyeMakeup_g08_c01
MAX_PROBLEMS = 20  # a broken list can have thousands of bad rows; the first ones say enough


@dataclass(frozen=True)
class Video:
    path: Path
    labels: tuple[int, ...]  # indices into ``VideoDataset.classes``; one unless multi-label
    group: str = ""  # videos of one group (clips of one source) stay on one side of a split


@dataclass(frozen=True)
class VideoDataset:
    source: str
    classes: tuple[str, ...]
    multi_label: bool
    train: tuple[Video, ...]
    val: tuple[Video, ...]
    test: tuple[Video, ...] = ()  # never read by a search: ``tvnsearch evaluate`` scores on it

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def videos(self) -> tuple[Video, ...]:
        """The videos a search reads: ``train`` and ``val``."""
        return self.train + self.val

    def split(self, name: str) -> tuple[Video, ...]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


@dataclass(frozen=True)
class _Row:
    path: Path
    labels: tuple[str, ...]
    split: str | None  # None: decided by the seeded split
    group: str | None = None  # None: the video is a group of its own


def load_dataset(path: str | Path, *, val_fraction: float = 0.2, seed: int = 0) -> VideoDataset:
    """Read a class-folder tree or a ``.csv`` / ``.jsonl`` list (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        rows, multi_label = _folder_rows(path), False
    elif path.suffix in (".csv", ".jsonl"):
        rows, multi_label = _list_rows(path)
    elif not path.exists():
        raise InputError(str(path), "no such file or folder")
    else:
        raise InputError(str(path), "must be a folder or a .csv or .jsonl list")
    return _dataset(str(path), rows, multi_label, val_fraction, seed)


def _dataset(
    source: str, rows: list[_Row], multi_label: bool, val_fraction: float, seed: int
) -> VideoDataset:
    classes = _sorted_names({label for r in rows if r.split != "test" for label in r.labels})
    index = {name: i for i, name in enumerate(classes)}
    unseen = [r for r in rows if r.split == "test" and not set(r.labels) <= index.keys()]
    if unseen:  # no network of this dataset can name their class
        why = f"{len(unseen)} test video(s) of a class no train or val video has left out"
        warnings.warn(f"{source}: {why} (e.g. {unseen[0].path.name})", Notice, stacklevel=3)
        rows = [r for r in rows if r not in unseen]
    splits = _assign_splits(rows, val_fraction, random.Random(seed))
    videos = {
        name: tuple(
            Video(r.path, tuple(sorted(index[x] for x in r.labels)), _group(r))
            for r, s in zip(rows, splits, strict=True)
            if s == name
        )
        for name in ("train", "val", "test")
    }
    problems = [Problem(f"{n} split", "has no videos") for n in ("train", "val") if not videos[n]]
    problems += _split_groups(videos)
    if problems:
        raise InputError(source, problems)
    return VideoDataset(
        source, classes, multi_label, videos["train"], videos["val"], videos["test"]
    )


def _group(row: _Row) -> str:
    return row.group if row.group is not None else str(row.path)


def _split_groups(videos: dict[str, tuple[Video, ...]]) -> list[Problem]:
    """A group on two sides of the given splits: its clips would score the network on what it
    learnt from (and the seeded split never does this)."""
    side: dict[str, str] = {}
    problems = []
    for name, members in videos.items():
        for video in members:
            other = side.setdefault(video.group, name)
            if other != name:
                why = f"is in the {other} and the {name} split (e.g. {video.path.name})"
                problems.append(Problem(f"group {video.group!r}", why))
                side[video.group] = name
    return problems[:MAX_PROBLEMS]


def _sorted_names(names: set[str]) -> tuple[str, ...]:
    numeric = all(n.isdigit() for n in names)
    return tuple(sorted(names, key=lambda n: (int(n), n) if numeric else (0, n)))


def _assign_splits(rows: list[_Row], val_fraction: float, rng: random.Random) -> list[str]:
    """Given splits stay; the other rows are split per class (by first label), seeded, whole
    groups at a time: a class's groups are shuffled and go to ``val`` until it holds
    ``val_fraction`` of the class's videos (a group met in an earlier class keeps its side)."""
    splits = [r.split or "" for r in rows]
    by_class: dict[str, dict[str, list[int]]] = {}
    for i, r in enumerate(rows):
        if r.split is None:
            groups = by_class.setdefault(r.labels[0] if r.labels else "", {})
            groups.setdefault(_group(r), []).append(i)
    side: dict[str, str] = {}
    for name in sorted(by_class):
        groups = by_class[name]
        order = list(groups)  # as listed: ungrouped videos split exactly as they always were
        rng.shuffle(order)
        target = round(sum(map(len, groups.values())) * val_fraction)
        held = 0
        for group in order:
            if group not in side:
                side[group] = "val" if held < target else "train"
            held += len(groups[group]) if side[group] == "val" else 0
            for i in groups[group]:
                splits[i] = side[group]
    return splits


def _folder_rows(root: Path) -> list[_Row]:
    split_dirs = {name: root / name for name in SPLITS if (root / name).is_dir()}
    if not split_dirs:
        return _class_rows(root, None)
    if "train" not in split_dirs or not ({"val", "validation"} & split_dirs.keys()):
        found = sorted(split_dirs)
        raise InputError(
            str(root), f"split folders need train/ and val/ (or validation/), but found {found}"
        )
    rows = []
    for name, folder in sorted(split_dirs.items()):
        rows += _class_rows(folder, SPLITS[name])
    return rows


def _class_rows(root: Path, split: str | None) -> list[_Row]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise InputError(str(root), "no class folders (one sub-folder of videos per class)")
    rows = [
        _Row(p, (d.name,), split, _ucf101_group(p))
        for d in class_dirs
        for p in sorted(d.rglob("*"))
        if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
    ]
    if not rows:
        raise InputError(str(root), f"no video files ({', '.join(VIDEO_SUFFIXES)})")
    return rows


def _ucf101_group(path: Path) -> str | None:
    """UCF-101's group of a clip named ``v_<Class>_g<NN>_c<NN>``: ``<Class>_g<NN>``."""
    match = UCF101_GROUP.fullmatch(path.stem)
    return None if match is None else f"{match.group(1)}_g{match.group(2)}"


def _list_rows(path: Path) -> tuple[list[_Row], bool]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise InputError(str(path), f"cannot read: {why}") from None
    records = _csv_records(path, text) if path.suffix == ".csv" else _jsonl_records(path, text)
    if not records:
        raise InputError(str(path), "lists no videos")
    columns = set().union(*(r.keys() for _, r in records))
    label_key = _label_column(path, columns)
    rows, problems = [], []
    for line, record in records:
        row = _row(record, label_key, path.parent, f"line {line}", problems)
        rows += [row] if row else []
    if problems:
        raise InputError(str(path), _capped(problems))
    return rows, label_key == "labels"


def _csv_records(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None:
        raise InputError(str(path), "has no header row (path, label or labels, split, group)")
    # Header is line 1, so data row k is line k + 1 (no quoted newlines in a video list).
    # A row with more fields than the header puts the rest under the key None: dropped.
    return [(k + 2, {c: v for c, v in row.items() if c}) for k, row in enumerate(reader)]


def _jsonl_records(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    records, problems = [], []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(Problem(f"line {line}", f"not valid JSON: {exc.msg}"))
            continue
        if not isinstance(record, dict):
            problems.append(Problem(f"line {line}", "must be a JSON object"))
            continue
        records.append((line, record))
    if problems:
        raise InputError(str(path), _capped(problems))
    return records


def _label_column(path: Path, columns: set[str]) -> str:
    problems = []
    if "path" not in columns:
        problems.append(Problem("path", f"missing column; found {sorted(columns)}"))
    label_columns = sorted({"label", "labels"} & columns)
    if len(label_columns) != 1:
        problems.append(
            Problem(
                "label",
                "need exactly one of the columns 'label' (one class per video) or 'labels' "
                f"(several), but found {sorted(columns)}",
            )
        )
    if problems:
        raise InputError(str(path), problems)
    return label_columns[0]


def _row(
    record: dict[str, Any], label_key: str, base: Path, where: str, problems: list[Problem]
) -> _Row | None:
    found = len(problems)
    video = record.get("path")
    if not isinstance(video, str) or not video.strip():
        problems.append(Problem(f"{where}.path", f"must be a file path, but got {video!r}"))
    labels = _labels(record.get(label_key), label_key)
    if labels is None:
        wanted = "a class name" if label_key == "label" else "a list of class names"
        problems.append(
            Problem(f"{where}.{label_key}", f"must be {wanted}, but got {record.get(label_key)!r}")
        )
    split = record.get("split") or None
    if split is not None and (not isinstance(split, str) or split not in SPLITS):
        problems.append(
            Problem(f"{where}.split", f"must be one of {list(SPLITS)}, but got {split!r}")
        )
    group = record.get("group")
    group = None if group is None or str(group).strip() == "" else str(group).strip()
    if len(problems) > found:
        return None
    return _Row(base / video.strip(), labels, None if split is None else SPLITS[split], group)


def _labels(value: Any, key: str) -> tuple[str, ...] | None:
    """Class names, or None when ``value`` names none; multi-label rows may have no label."""
    if key == "label":
        ok = isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip()
        return (str(value).strip(),) if ok else None
    if isinstance(value, str):
        value = value.split(";")
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        return None
    names = [str(v).strip() for v in value if not isinstance(v, bool)]
    return tuple(dict.fromkeys(n for n in names if n)) if len(names) == len(value) else None


def _capped(problems: Iterable[Problem]) -> list[Problem]:
    problems = list(problems)
    if len(problems) <= MAX_PROBLEMS:
        return problems
    more = Problem("", f"... and {len(problems) - MAX_PROBLEMS} more problems")
    return [*problems[:MAX_PROBLEMS], more]
