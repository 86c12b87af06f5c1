"""Video datasets as the user points at them: class folders or a CSV/JSONL list, with splits.

A folder holds one sub-folder per class (the UCF-101 / HMDB-51 layout), optionally inside
``train/`` and ``val/`` (or ``validation/``) folders. A list file has one video per row with
``path``, ``label`` (one class) or ``labels`` (multi-label: a JSON list in JSONL, ``;``-separated
in CSV) and optionally ``split`` (``train``, ``val``/``validation``; ``test`` rows are left out).
Relative paths resolve against the list file's folder. Without split sub-folders or a split
column, a seeded split holds out ``val_fraction`` of every class.

Paths are not checked here: a missing or unreadable video is found, reported and skipped when
the frames are decoded (``tvnsearch.data.frame_cache``).
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvnsearch.data.video import VIDEO_SUFFIXES
from tvnsearch.errors import InputError, Problem

SPLITS = {"train": "train", "val": "val", "validation": "val", "test": None}
MAX_PROBLEMS = 20  # a broken list can have thousands of bad rows; the first ones say enough


@dataclass(frozen=True)
class Video:
    path: Path
    labels: tuple[int, ...]  # indices into ``VideoDataset.classes``; one unless multi-label


@dataclass(frozen=True)
class VideoDataset:
    source: str
    classes: tuple[str, ...]
    multi_label: bool
    train: tuple[Video, ...]
    val: tuple[Video, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def videos(self) -> tuple[Video, ...]:
        return self.train + self.val


@dataclass(frozen=True)
class _Row:
    path: Path
    labels: tuple[str, ...]
    split: str | None  # None: decided by the seeded split


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
    rows = [r for r in rows if r.split != "test"]
    classes = _sorted_names({label for r in rows for label in r.labels})
    index = {name: i for i, name in enumerate(classes)}
    splits = _assign_splits(rows, val_fraction, random.Random(seed))
    videos = {
        name: tuple(
            Video(r.path, tuple(sorted(index[x] for x in r.labels)))
            for r, s in zip(rows, splits, strict=True)
            if s == name
        )
        for name in ("train", "val")
    }
    problems = [Problem(f"{name} split", "has no videos") for name in videos if not videos[name]]
    if problems:
        raise InputError(source, problems)
    return VideoDataset(source, classes, multi_label, videos["train"], videos["val"])


def _sorted_names(names: set[str]) -> tuple[str, ...]:
    numeric = all(n.isdigit() for n in names)
    return tuple(sorted(names, key=lambda n: (int(n), n) if numeric else (0, n)))


def _assign_splits(rows: list[_Row], val_fraction: float, rng: random.Random) -> list[str]:
    """Given splits stay; the others are split per class (by first label), seeded."""
    splits = [r.split or "" for r in rows]
    by_class: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.split is None:
            by_class.setdefault(r.labels[0] if r.labels else "", []).append(i)
    for name in sorted(by_class):
        members = by_class[name]
        rng.shuffle(members)
        num_val = round(len(members) * val_fraction)
        for k, i in enumerate(members):
            splits[i] = "val" if k < num_val else "train"
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
        rows += _class_rows(folder, SPLITS[name]) if SPLITS[name] else []
    return rows


def _class_rows(root: Path, split: str | None) -> list[_Row]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise InputError(str(root), "no class folders (one sub-folder of videos per class)")
    rows = [
        _Row(p, (d.name,), split)
        for d in class_dirs
        for p in sorted(d.rglob("*"))
        if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
    ]
    if not rows:
        raise InputError(str(root), f"no video files ({', '.join(VIDEO_SUFFIXES)})")
    return rows


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
        raise InputError(str(path), "has no header row (path, label or labels, split)")
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
    if len(problems) > found:
        return None
    mapped = None if split is None else (SPLITS[split] or "test")
    return _Row(base / video.strip(), labels, mapped)


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
