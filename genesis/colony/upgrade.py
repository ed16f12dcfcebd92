"""Upgrade a colony folder made by an older genesis (format 1) to the current format.

Format 1 kept the tokenizer in `tokenizer.json`, each agent's weights in
`agents/<id>.safetensors` (the path in the agents row, the learning version and, for
adapters, the base id in the file's metadata) and each base in `bases/<id>.safetensors`.
The upgrade moves all of them into the database in one transaction, then removes the
files; a colony folder may come from someone else, so every path is checked first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import safetensors
import sqlalchemy as sa

from genesis.colony.database import (
    AGENT_ID,
    FORMAT,
    Store,
    bases_table,
    read_settings,
    schema,
    settings_table,
    weights_table,
)
from genesis.colony.weights import BASE_ID
from genesis.core.files import check_inside
from genesis.errors import GenesisError


def upgrade_colony(folder: str | Path) -> int:
    """Move a format-1 colony's tokenizer and weights into its database; returns the
    number of agents moved.

    Raises:
        GenesisError: not a colony folder, already upgraded, or a file is missing, a
            symbolic link or outside the folder.
    """
    folder = Path(folder)
    store = Store(folder)
    if not store.exists():
        raise GenesisError(f"{folder} is not a colony")
    with store.read() as db:
        if "format" in read_settings(db):
            raise GenesisError(f"{folder} is already in the current format")
        rows = db.execute(sa.text("SELECT id, weights FROM agents")).all()
    tokenizer = _inside(folder, "tokenizer.json").read_text()
    moved, base_ids = [], set()
    for agent_id, path in rows:
        if not isinstance(agent_id, str) or not AGENT_ID.fullmatch(agent_id) \
                or path != f"agents/{agent_id}.safetensors":
            raise GenesisError(f"{folder}: agent {agent_id!r} has the weights path {path!r}")
        file = _inside(folder, path)
        metadata = _metadata(file)
        base = metadata.get("base")
        if base is not None:
            if not BASE_ID.fullmatch(base):
                raise GenesisError(f"{folder}: agent {agent_id}: {base!r} is not a base id")
            base_ids.add(base)
        moved.append({"agent": agent_id, "base": base, "version": int(metadata.get("version", "0")),
                      "data": file.read_bytes()})
    with store.write() as db:
        schema.create_all(db)
        db.execute(sa.text("ALTER TABLE agents DROP COLUMN weights"))
        if moved:
            db.execute(weights_table.insert(), moved)
        for base in sorted(base_ids):
            data = _inside(folder, f"bases/{base}.safetensors").read_bytes()
            db.execute(bases_table.insert().values(id=base, data=data))
        db.execute(settings_table.insert(), [{"key": "format", "value": str(FORMAT)},
                                             {"key": "tokenizer", "value": tokenizer}])
    for name in ("agents", "bases"):  # now in the database
        shutil.rmtree(folder / name, ignore_errors=True)
    (folder / "tokenizer.json").unlink()
    return len(moved)


def _inside(folder: Path, relative: str) -> Path:
    """`folder/relative`, a regular file that is no symbolic link and stays inside."""
    path = check_inside(folder / relative, folder)
    if not path.is_file():
        raise GenesisError(f"{path} is missing; the colony cannot be upgraded without it")
    return path


def _metadata(path: Path) -> dict[str, str]:
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error type for a bad header
        raise GenesisError(f"{path} is not a safetensors file: {error}") from None

