"""Writing files so that nothing is lost or written elsewhere: the one mechanism for every
file genesis writes in place (records, checkpoints, weights, reports).

A file is written beside its name, flushed to disk and renamed over the name: a reader or
a crash never sees half a file, and a symbolic link planted at the name (in a folder from
someone else) is replaced, never followed. Folders written into may not be links, and
paths read from such a folder must stay inside it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from genesis.errors import GenesisError


def output_folder(folder: str | Path) -> Path:
    """Create `folder` (and its parents) to write into and return it.

    Raises:
        GenesisError: `folder` is a symbolic link, or exists and is not a folder.
    """
    folder = Path(folder)
    if folder.is_symlink():
        raise GenesisError(f"{folder} is a symbolic link; genesis writes only into real folders")
    if folder.exists() and not folder.is_dir():
        raise GenesisError(f"{folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_inside(path: Path, folder: Path) -> Path:
    """Return `path` unless it (or its folder) is a symbolic link or it resolves outside
    `folder`.

    Raises:
        GenesisError: naming the path.
    """
    if any(p.is_symlink() for p in (path, path.parent)) or not path.resolve().is_relative_to(folder.resolve()):
        raise GenesisError(f"{path} is a symbolic link or lies outside {folder}")
    return path


def replace_file(path: Path, write: Callable[[Path], None]) -> Path:
    """Write a file through `write(temporary)` beside `path`, flush it to disk, then rename
    it over `path` (readable by all, as a plain file would be) and flush the rename.
    Returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        temporary.chmod(0o644)
        _fsync(temporary)  # the bytes reach the disk before the name points at them
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync(path.parent)  # and the rename itself survives a power cut
    return path


def replace_text(path: Path, text: str) -> Path:
    """`replace_file` for a text file."""
    return replace_file(path, lambda temporary: temporary.write_text(text))


def replace_bytes(path: Path, data: bytes) -> Path:
    """`replace_file` for a binary file."""
    return replace_file(path, lambda temporary: temporary.write_bytes(data))


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
