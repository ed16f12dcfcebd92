"""Writing into folders that may come from someone else (a run folder, a colony folder).

A symbolic link planted in such a folder must never make genesis write elsewhere: the
folder written into may not be a link, and every file is written beside its name and
renamed over it, which replaces a link at that name instead of following it.
"""

from __future__ import annotations

import os
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


def replace_file(path: Path, write: Callable[[Path], None]) -> Path:
    """Write a file through `write(temporary)` beside `path`, then rename it over `path`
    (a link at `path` is replaced, never followed). Returns `path`."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def replace_text(path: Path, text: str) -> Path:
    """`replace_file` for a text file."""
    return replace_file(path, lambda temporary: temporary.write_text(text))
