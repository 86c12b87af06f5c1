"""Reading user files with clear errors, and writing files so that none is ever half-written."""

from __future__ import annotations

import contextlib
import errno
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except FileExistsError:  # a file where a folder on the way should be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from None
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK if mode is None else mode)  # mkstemp makes 0600
        try:
            os.replace(tmp, path)
        except OSError as exc:  # a folder at ``path``: name it, not the temporary file
            raise _naming(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` about ``path``, the file the user named, instead of a temporary file beside it."""
    return type(exc)(exc.errno, exc.strerror, str(path))


def check_writable(path: str | Path, *, folder: bool = False) -> None:
    """Refuse a destination that cannot be written, before any work is done for it: an
    ``InputError`` naming ``path`` when a file stands where a folder is wanted (or the reverse),
    or when its nearest existing folder cannot be written in (read-only, ``/proc``). Creates
    nothing; a ``folder`` that exists is written in, one that does not is made."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        raise InputError(str(path), "is a folder, not a file" if path.is_dir() else "is a file")
    here = path if path.is_dir() else next(p for p in path.absolute().parents if p.exists())
    if not here.is_dir():
        raise InputError(str(path), f"cannot write: {here} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=here, prefix=".tvnsearch-probe-"))
    except OSError as exc:
        raise InputError(str(path), f"cannot write in {here}: {exc.strerror or exc}") from None


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
