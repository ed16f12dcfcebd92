"""Strict loading of data: the TOML files (search spaces, recipes) and the fields of
records, genomes and recipes read back from folders that may come from someone else.

Loaders reject unknown keys by name, so that a typo in a data file is an error and not a
silently ignored setting, and check every value's type (`check_type`) before it is used.
"""

from __future__ import annotations

import math
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from genesis.errors import GenesisError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib



def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning every failure into a one-line `GenesisError`."""
    path = Path(path)
    if not path.is_file():
        raise GenesisError(f"{path}: no such file")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise GenesisError(f"{path}: malformed TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise GenesisError(f"{path}: cannot read: {error}") from None


def check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    """Raise a `GenesisError` naming the first key of `table` that is not in `allowed`."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise GenesisError(
            f"{where}: unknown key '{unknown[0]}' (expected one of: {', '.join(sorted(allowed))})"
        )


_TYPES = {"int": (int,), "float": (float, int), "str": (str,), "bool": (bool,)}


def check_type(name: str, value: Any, kind: str) -> None:
    """Raise `GenesisError` unless `value` fits the annotation `kind` ("int", "float |
    None", "list[float]", ...); a float must be finite or None, never a bool."""
    options = [part.strip() for part in kind.split("|")]
    if value is None and "None" in options:
        return
    for option in options:
        if option.startswith("list[") and isinstance(value, list):
            inner = option[5:-1]
            if inner.startswith("dict") or all(_fits(v, inner) for v in value):
                return
        elif option in _TYPES and _fits(value, option):
            return
    raise GenesisError(f"{name} must be {kind}, got {value!r}"[:200])


def _fits(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, _TYPES[kind]):
        return False
    return kind != "float" or math.isfinite(value)


def resolve_data_file(name_or_path: str | Path, folder: str, suffix: str = ".toml") -> Path:
    """Find a data file given either a path or the bare name of a built-in one.

    The one lookup: anything that looks like a path (exists, has a folder or the suffix)
    is used as it is; a bare name is a built-in: `resolve_data_file("quick", "trainers")`
    finds the project's `trainers/quick.toml` in a checkout, and the copy the wheel ships
    inside the package (`genesis.trainers`) in any other install.
    """
    candidate = Path(name_or_path)
    if candidate.exists() or candidate.suffix == suffix or len(candidate.parts) > 1:
        return candidate
    # the project's genomes/ and trainers/, shipped in the wheel as genesis.genomes and genesis.trainers
    return Path(str(resources.files(f"genesis.{folder}").joinpath(f"{name_or_path}{suffix}")))
