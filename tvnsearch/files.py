"""Reading user files with clear errors, and writing files so that none is ever half-written."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tvnsearch.errors import InputError

TEMP_SUFFIX = ".tmp"


def read_text(path: str | Path) -> str:
    """A text file's contents; a missing, unreadable or binary file is an ``InputError``."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(str(path), "cannot read: not a text file (not UTF-8)") from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning a missing or malformed file into an ``InputError``."""
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(str(path), f"not valid TOML: {exc}") from None


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning a missing or malformed file into an ``InputError``."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            str(path), f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that no reader ever sees half of it (see ``atomic_writer``)."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that no reader ever sees half of it (see ``atomic_writer``)."""
    with atomic_writer(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_writer(
    path: str | Path, *, mode: int | None = None, durable: bool = False
) -> Iterator[BinaryIO]:
    """A binary file whose content replaces ``path`` whole, or not at all.

    It is a hidden temporary file beside ``path`` (``.<name>.<random>.tmp``, which pandas and
    pyarrow skip when they read a folder), renamed over ``path`` when the block ends; an error in
    the block removes it. ``mode``: the file's permissions (default: what ``open`` gives under the
    umask). ``durable``: the data reaches the disk before the rename does, so that even a power
    loss leaves the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK if mode is None else mode)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_leftovers(folder: Path) -> None:
    """Remove what an ``atomic_writer`` interrupted by a crash left in ``folder``."""
    for leftover in folder.glob(f".*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def user_cache_dir(*parts: str) -> Path:
    """This user's cache for tvnsearch: ``$XDG_CACHE_HOME/tvnsearch/<parts>`` (``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base, "tvnsearch", *parts)


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()
