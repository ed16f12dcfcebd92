"""The colony's database: its schema, the agent rows (checked as they are read),
transactions, events and identities. One SQLite file in WAL mode; every
read-modify-write is one `BEGIN IMMEDIATE` transaction, so several processes share it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from genesis.core.genome import Genome
from genesis.errors import GenesisError
from genesis.train.model import check_size

DATABASE = "colony.db"
AGENT_ID = re.compile(r"a[0-9a-f]{8}")  # what `new_identity` makes
MAX_BLOCK_SIZE = 4096
SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY, parent TEXT, genome TEXT NOT NULL, weights TEXT NOT NULL,
    block_size INTEGER NOT NULL, fitness REAL NOT NULL, interactions INTEGER NOT NULL DEFAULT 0,
    total_interactions INTEGER NOT NULL DEFAULT 0, identity_seed TEXT NOT NULL,
    born TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'alive', retired TEXT);
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY AUTOINCREMENT, prompt TEXT NOT NULL, response TEXT,
    continuation TEXT, score REAL, agents TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, agent TEXT NOT NULL,
    detail TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
AGENT_COLUMNS = ("id, parent, genome, weights, block_size, fitness, interactions, total_interactions, "
                 "identity_seed, born, status")


@dataclass(frozen=True)
class Agent:
    """One row of the agents table."""

    id: str
    parent: str | None
    genome: Genome
    weights: str
    block_size: int
    fitness: float
    interactions: int
    total_interactions: int
    identity_seed: int
    born: str
    status: str


def agent_from_row(row: Sequence[Any], vocab_size: int, where: Path) -> Agent:
    """An agents row (`AGENT_COLUMNS`), checked: a colony folder may come from someone
    else, so nothing in it may point outside the folder or ask for an unbounded model.

    Raises:
        GenesisError: naming the database `where` and the agent.
    """
    agent_id = row[0]
    try:
        if not isinstance(agent_id, str) or not AGENT_ID.fullmatch(agent_id):
            raise GenesisError(f"its id {agent_id!r} is not an agent id")
        if row[3] != f"agents/{agent_id}.safetensors":
            raise GenesisError(f"its weights path {row[3]!r} is not agents/{agent_id}.safetensors")
        genome = Genome.from_json(row[2])
        if not isinstance(row[4], int) or not 1 <= row[4] <= MAX_BLOCK_SIZE:
            raise GenesisError(f"its block size {row[4]!r} is not in 1..{MAX_BLOCK_SIZE}")
        check_size(genome, vocab_size, row[4], "its genome")
        return Agent(agent_id, row[1], genome, row[3], row[4], float(row[5]), int(row[6]), int(row[7]),
                     int(row[8]), row[9], row[10])
    except (GenesisError, TypeError, ValueError) as error:
        raise GenesisError(f"{where}: agent {agent_id!r} is invalid: {error}") from None


def now() -> str:
    """The current UTC time as an ISO string (milliseconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def connect(folder: Path) -> sqlite3.Connection:
    """A connection to a colony's database that waits (up to a minute) for other writers."""
    db = sqlite3.connect(folder / DATABASE, timeout=60, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 60000")
    return db


@contextlib.contextmanager
def create_database(folder: Path, settings_json: str) -> Iterator[sqlite3.Connection]:
    """Create a colony's database with its settings; the `with` block fills it in the
    same transaction (a failure leaves no half-seeded colony behind)."""
    db = sqlite3.connect(folder / DATABASE)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        with db:
            db.execute("INSERT INTO settings VALUES ('settings', ?)", (settings_json,))
            yield db
    finally:
        db.close()


def insert_agent(db: sqlite3.Connection, agent_id: str, parent: str | None, genome: Genome, block_size: int,
                 fitness: float, identity_seed: int) -> None:
    """A newborn agent's row; its weights are `agents/<id>.safetensors`."""
    db.execute("INSERT INTO agents (id, parent, genome, weights, block_size, fitness, identity_seed, born) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (agent_id, parent, genome.to_json(), f"agents/{agent_id}.safetensors", block_size, fitness,
                str(identity_seed), now()))


class Transaction:
    """`with` block around one BEGIN IMMEDIATE transaction that closes its connection."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, error, trace) -> None:
        try:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self.db.close()


def new_identity() -> tuple[str, int]:
    # The identity seed comes from the OS entropy pool; it is recorded with the agent, so
    # the noise of a division can be replayed from the database.
    identity = int.from_bytes(os.urandom(8), "big") >> 1
    return f"a{identity:016x}"[:9], identity


def event(db: sqlite3.Connection, kind: str, agent: str, detail: dict[str, Any]) -> None:
    db.execute("INSERT INTO events (kind, agent, detail, created) VALUES (?, ?, ?, ?)",
               (kind, agent, json.dumps(detail), now()))


def iter_lineage(agents: Sequence[Agent]) -> Iterator[tuple[int, Agent]]:
    """(depth, agent) pairs in lineage-tree order: each parent followed by its children."""
    children: dict[str | None, list[Agent]] = {}
    ids = {a.id for a in agents}
    for agent in agents:
        children.setdefault(agent.parent if agent.parent in ids else None, []).append(agent)

    def walk(parent: str | None, depth: int) -> Iterator[tuple[int, Agent]]:
        for agent in sorted(children.get(parent, []), key=lambda a: a.born):
            yield depth, agent
            yield from walk(agent.id, depth + 1)

    yield from walk(None, 0)
