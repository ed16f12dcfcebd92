"""The colony's shared memory: every answer and every piece of feedback, kept in the
database, found again by similarity, and kept bounded.

A memory with its true continuation gets a vector: the mean of the base model's token
embeddings of its text, normalized. Learning trains on the memories most similar to the
newest one (or on the most recent, as colonies did before), `ask` may put the most
similar ones before a prompt as context, and beyond `memory_limit` the oldest memories
are forgotten.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Sequence

import numpy as np

from genesis.colony.database import now
from genesis.errors import GenesisError

VECTORS = "CREATE TABLE IF NOT EXISTS memory_vectors (memory INTEGER PRIMARY KEY, vector BLOB NOT NULL)"


def add(db: sqlite3.Connection, prompt: str, agents: Sequence[str], response: str | None = None,
        continuation: str | None = None) -> int:
    """Store a memory; returns its id."""
    cursor = db.execute("INSERT INTO memories (prompt, response, continuation, agents, created) "
                        "VALUES (?, ?, ?, ?, ?)", (prompt, response, continuation, json.dumps(list(agents)), now()))
    return cursor.lastrowid


def row(db: sqlite3.Connection, memory_id: int) -> tuple[str, list[str]]:
    """A memory's prompt and the agents that answered it.

    Raises:
        GenesisError: no memory with that id.
    """
    found = db.execute("SELECT prompt, agents FROM memories WHERE id = ?", (memory_id,)).fetchone()
    if found is None:
        raise GenesisError(f"no memory {memory_id}")
    return found[0], json.loads(found[1])


def embed(embedding: np.ndarray, token_ids: Sequence[int]) -> np.ndarray:
    """A text's vector: the mean of its tokens' embeddings, unit length."""
    vector = embedding[list(token_ids) or [0]].mean(axis=0).astype(np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def store_vector(db: sqlite3.Connection, memory_id: int, vector: np.ndarray) -> None:
    """Keep a memory's vector (a colony seeded before vectors gets their table now)."""
    db.execute(VECTORS)
    db.execute("INSERT OR REPLACE INTO memory_vectors VALUES (?, ?)", (memory_id, vector.tobytes()))


def similar_texts(db: sqlite3.Connection, vector: np.ndarray, limit: int) -> list[str]:
    """Texts (prompt + continuation) of the `limit` memories most similar to `vector`,
    least similar first (the most similar ends the batch, nearest the prompt)."""
    db.execute(VECTORS)
    rows = db.execute("SELECT m.prompt, m.continuation, v.vector FROM memories m JOIN memory_vectors v "
                      "ON v.memory = m.id WHERE m.continuation IS NOT NULL").fetchall()
    rows = [r for r in rows if len(r[2]) == vector.nbytes]  # a vector of another width: not comparable
    if not rows or limit <= 0:
        return []
    scores = np.stack([np.frombuffer(blob, dtype=np.float32) for _, _, blob in rows]) @ vector
    return [rows[i][0] + rows[i][1] for i in np.argsort(scores, kind="stable")[-limit:]]


def recent_texts(db: sqlite3.Connection, limit: int) -> list[str]:
    """Texts (prompt + continuation) of the `limit` most recent memories with feedback."""
    rows = db.execute("SELECT prompt, continuation FROM memories WHERE continuation IS NOT NULL "
                      "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [prompt + continuation for prompt, continuation in reversed(rows)]


def forget_beyond(db: sqlite3.Connection, limit: int) -> int:
    """Drop the oldest memories (and their vectors) beyond `limit`; returns how many."""
    cutoff = db.execute("SELECT id FROM memories ORDER BY id DESC LIMIT 1 OFFSET ?", (limit,)).fetchone()
    if cutoff is None:
        return 0
    db.execute(VECTORS)
    db.execute("DELETE FROM memory_vectors WHERE memory <= ?", cutoff)
    return db.execute("DELETE FROM memories WHERE id <= ?", cutoff).rowcount
