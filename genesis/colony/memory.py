"""The colony's shared memory: every answer and every piece of feedback, kept in the
database, found again by similarity, and kept bounded.

A memory with its true continuation gets a vector: the mean of the base model's token
embeddings of its text, normalized (and, in a colony with niches, every agent's score on
it). Learning trains on the memories most similar to the newest one (or on the most
recent, as colonies did before), `ask` may put the most similar ones before a prompt as
context, and beyond `memory_limit` the oldest memories are forgotten.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from genesis.colony.database import memories_table, now, scores_table, vectors_table
from genesis.errors import NotFound


def add(db: Connection, prompt: str, agents: Sequence[str], limit: int, response: str | None = None,
        continuation: str | None = None, scored: bool = False) -> int:
    """Store a memory and forget the oldest beyond `limit` (every write path goes through
    here, so the memory never outgrows its limit); returns its id. `scored`: the colony
    keeps scores (it has niches), so forgetting drops them too."""
    memory_id = db.execute(memories_table.insert().values(prompt=prompt, response=response, continuation=continuation,
                                                    agents=json.dumps(list(agents)), created=now())
                           .returning(memories_table.c.id)).scalar_one()
    forget_beyond(db, limit, scored)
    return memory_id


def row(db: Connection, memory_id: int) -> tuple[str, list[str]]:
    """A memory's prompt and the agents that answered it.

    Raises:
        NotFound: no memory with that id.
    """
    found = db.execute(sa.select(memories_table.c.prompt, memories_table.c.agents).where(memories_table.c.id == memory_id)).first()
    if found is None:
        raise NotFound(f"no memory {memory_id}")
    return found[0], json.loads(found[1])


def update(db: Connection, memory_id: int, **values) -> None:
    """Set columns of a memory (its `continuation`, its `score`).

    Raises:
        NotFound: no memory with that id.
    """
    if not db.execute(memories_table.update().where(memories_table.c.id == memory_id).values(**values)).rowcount:
        raise NotFound(f"no memory {memory_id}")


def count(db: Connection) -> int:
    """How many memories are kept."""
    return db.execute(sa.select(sa.func.count()).select_from(memories_table)).scalar_one()


def embed(embedding: np.ndarray, token_ids: Sequence[int]) -> np.ndarray:
    """A text's vector: the mean of its tokens' embeddings, unit length."""
    vector = embedding[list(token_ids) or [0]].mean(axis=0).astype(np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def store_vector(db: Connection, memory_id: int, vector: np.ndarray) -> None:
    """Keep a memory's vector (replacing an earlier one)."""
    db.execute(vectors_table.delete().where(vectors_table.c.memory == memory_id))
    db.execute(vectors_table.insert().values(memory=memory_id, vector=vector.tobytes()))


def similar_texts(db: Connection, vector: np.ndarray, limit: int) -> list[str]:
    """Texts (prompt + continuation) of the `limit` memories most similar to `vector`,
    least similar first (the most similar ends the batch, nearest the prompt)."""
    rows = db.execute(sa.select(memories_table.c.prompt, memories_table.c.continuation, vectors_table.c.vector)
                      .join(vectors_table, vectors_table.c.memory == memories_table.c.id)
                      .where(memories_table.c.continuation.is_not(None)).order_by(memories_table.c.id)).all()
    rows = [r for r in rows if len(r[2]) == vector.nbytes]  # a vector of another width: not comparable
    if not rows or limit <= 0:
        return []
    scores = np.stack([np.frombuffer(blob, dtype=np.float32) for _, _, blob in rows]) @ vector
    return [rows[i][0] + rows[i][1] for i in np.argsort(scores, kind="stable")[-limit:]]


def recent_texts(db: Connection, limit: int) -> list[str]:
    """Texts (prompt + continuation) of the `limit` most recent memories with feedback."""
    rows = db.execute(sa.select(memories_table.c.prompt, memories_table.c.continuation)
                      .where(memories_table.c.continuation.is_not(None)).order_by(memories_table.c.id.desc()).limit(limit)).all()
    return [prompt + continuation for prompt, continuation in reversed(rows)]


def store_scores(db: Connection, memory_id: int, scores: dict[str, float]) -> None:
    """Keep each agent's mean log-likelihood of a memory's continuation (replacing earlier ones)."""
    db.execute(scores_table.delete().where(scores_table.c.memory == memory_id))
    if scores:
        db.execute(scores_table.insert(), [{"memory": memory_id, "agent": agent, "log_likelihood": value}
                                           for agent, value in sorted(scores.items())])


def scored_memories(db: Connection, limit: int) -> tuple[list[int], list[str], list[dict[str, float]]]:
    """The `limit` newest memories with scores, oldest first: their ids, their texts
    (prompt + continuation) and each one's scores by agent."""
    rows = db.execute(sa.select(memories_table.c.id, memories_table.c.prompt + memories_table.c.continuation)
                      .where(memories_table.c.continuation.is_not(None),
                             memories_table.c.id.in_(sa.select(scores_table.c.memory)))
                      .order_by(memories_table.c.id.desc()).limit(limit)).all()[::-1]
    if not rows:
        return [], [], []
    ids = [r[0] for r in rows]
    scores: dict[int, dict[str, float]] = {i: {} for i in ids}
    for memory_id, agent, value in db.execute(sa.select(scores_table.c.memory, scores_table.c.agent,
                                                        scores_table.c.log_likelihood)
                                              .where(scores_table.c.memory >= ids[0])):
        if memory_id in scores:
            scores[memory_id][agent] = value
    return ids, [r[1] for r in rows], [scores[i] for i in ids]


def scores_stamp(db: Connection) -> tuple:
    """What changes whenever a score is stored or forgotten: their count, newest memory and
    sum (one aggregate query; what a cached niche view is checked against)."""
    return tuple(db.execute(sa.select(sa.func.count(), sa.func.max(scores_table.c.memory),
                                      sa.func.sum(scores_table.c.log_likelihood))).one())


def texts(db: Connection, memory_ids: Sequence[int]) -> list[str]:
    """Texts (prompt + continuation) of the memories `memory_ids` that have feedback, in that order."""
    found = dict(db.execute(sa.select(memories_table.c.id, memories_table.c.prompt + memories_table.c.continuation)
                            .where(memories_table.c.id.in_(list(memory_ids)),
                                   memories_table.c.continuation.is_not(None))).all())
    return [found[i] for i in memory_ids if i in found]


def forget_beyond(db: Connection, limit: int, scored: bool = False) -> int:
    """Drop the oldest memories (their vectors, and with `scored` their scores) beyond
    `limit`; returns how many."""
    cutoff = db.execute(sa.select(memories_table.c.id).order_by(memories_table.c.id.desc()).limit(1).offset(limit)).scalar()
    if cutoff is None:
        return 0
    db.execute(vectors_table.delete().where(vectors_table.c.memory <= cutoff))
    if scored:
        db.execute(scores_table.delete().where(scores_table.c.memory <= cutoff))
    return db.execute(memories_table.delete().where(memories_table.c.id <= cutoff)).rowcount
