"""A colony's life cycle: interactions are counted, agents divide, and above the cap some
retire (`genesis.colony.niches` decides who).

- **Division:** after Θ interactions an agent divides: the child gets the parent's current
  adapter (or weights) plus N(0, σ²) (σ is the genome's own trait), drawn from a new
  identity seed from the OS entropy pool, recorded, so every birth replays. In a colony
  with niches an agent divides only while it leads a niche (it waits otherwise), and its
  child then learns on that niche's memories, so a line specializes where it is best.
- **Selection:** above the cap the colony's selection policy picks who retires.

Every function but `train_children` runs inside the caller's write transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from tokenizers import Tokenizer

from genesis.colony import memory, niches
from genesis.colony.database import (
    AGENT_COLUMNS,
    Agent,
    Store,
    agents_table,
    event,
    forget_retired_weights,
    insert_agent,
    new_identity,
    now,
)
from genesis.colony.settings import ColonySettings
from genesis.colony.weights import FullWeights
from genesis.core.genome import Genome
from genesis.errors import NotFound


class Colony(Protocol):
    """What the life cycle reads of a colony (`genesis.colony.colony.Colony` has it all;
    a protocol here, so the colony depends on its life cycle and not the other way round)."""

    settings: ColonySettings
    tokenizer: Tokenizer
    weights: FullWeights
    store: Store
    location: str
    niche_cache: tuple[tuple, NicheView | None] | None  # the newest niche view, with what it was computed from

    def checked_agent(self, row: Sequence[Any]) -> Agent: ...

    def agents(self) -> list[Agent]: ...


NICHE_MEMORIES = 512  # the newest memories the niches are fitted on (bounded work per call)


@dataclass(frozen=True)
class NicheView:
    """The colony's niches now.

    Attributes:
        niches: the clustering of the newest scored memories' texts.
        memory_ids: those memories, oldest first, and `labels` their niches.
        agents: the living agents, weakest first (the selection order), and `table`
            their fitness per niche, shape (agents, niches).
    """

    niches: niches.Niches
    memory_ids: list[int]
    labels: np.ndarray
    agents: list[str]
    table: np.ndarray

    def fitness_in(self, niche: int) -> dict[str, float]:
        """Each living agent's fitness in `niche`."""
        return dict(zip(self.agents, self.table[:, niche].tolist()))

    def leads(self) -> dict[str, int]:
        """The agents that lead a niche, each with the first niche it leads."""
        led: dict[str, int] = {}
        for niche, row in niches.leaders(self.table, sorted(set(self.labels.tolist()))).items():
            led.setdefault(self.agents[row], niche)
        return led

    def memories_of(self, niche: int, count: int) -> list[int]:
        """The ids of the `count` newest memories of `niche`."""
        return [m for m, label in zip(self.memory_ids, self.labels) if label == niche][-count:]


def _alive_weakest_first(db: Connection) -> list[tuple[str, float, str]]:
    """(id, fitness, genome JSON) of the living agents: fitness, then the younger, then the id."""
    return db.execute(sa.select(agents_table.c.id, agents_table.c.fitness, agents_table.c.genome)
                      .where(agents_table.c.status == "alive")
                      .order_by(agents_table.c.fitness, agents_table.c.born.desc(), agents_table.c.id)).all()


def niche_view(colony: Colony, db: Connection) -> NicheView | None:
    """The colony's niches fitted on its newest `NICHE_MEMORIES` scored memories; None
    without niches, or while fewer memories than niches have feedback.

    A view is computed again only when a score or a living agent's fitness changed since
    the last (`Colony.niche_cache`): asks, and the consensus, division and selection of
    one feedback, share one fit."""
    count = colony.settings.niches
    if count == 0:
        return None
    alive = _alive_weakest_first(db)
    stamp = (memory.scores_stamp(db), tuple(tuple(row) for row in alive))
    if colony.niche_cache is not None and colony.niche_cache[0] == stamp:
        return colony.niche_cache[1]
    ids, texts, scores = memory.scored_memories(db, NICHE_MEMORIES)
    view = None
    if len(ids) >= count:
        tokens = [encoded.ids for encoded in colony.tokenizer.encode_batch(texts)]
        fitted = niches.fit_niches(tokens, colony.tokenizer.get_vocab_size(), count)
        labels = fitted.assign(tokens)
        table = niches.niche_fitness(labels.tolist(), scores, [a for a, _, _ in alive], [f for _, f, _ in alive],
                                     len(fitted.centroids), colony.settings.fitness_smoothing)
        view = NicheView(fitted, ids, labels, [a for a, _, _ in alive], table)
    colony.niche_cache = (stamp, view)
    return view


def count_interactions(colony: Colony, db: Connection, agent_ids: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Count one interaction for each of `agent_ids`; those past Θ divide (with niches:
    those of them that lead a niche), then the cap is enforced.

    Returns:
        (child id, the memory ids it is to learn on) for each birth; `train_children`
        teaches them once the transaction is committed.
    """
    alive = agents_table.c.status == "alive"
    db.execute(agents_table.update().where(agents_table.c.id.in_(list(agent_ids)), alive)
               .values(interactions=agents_table.c.interactions + 1,
                       total_interactions=agents_table.c.total_interactions + 1))
    ready = db.execute(sa.select(agents_table.c.id).order_by(agents_table.c.id).where(
        alive, agents_table.c.interactions >= colony.settings.division_threshold)).scalars().all()
    view = niche_view(colony, db) if ready else None
    led = view.leads() if view is not None else {}
    children = []
    for agent_id in ready:
        if view is None:
            children.append((divide(colony, db, agent_id), []))
        elif agent_id in led:  # an agent that leads no niche waits for its turn
            niche = led[agent_id]
            children.append((divide(colony, db, agent_id, niche),
                             view.memories_of(niche, colony.settings.memory_window)))
    select(colony, db)
    return children


def divide(colony: Colony, db: Connection, parent_id: str, niche: int | None = None) -> str:
    """`parent_id` divides (in the niche it leads, recorded with the event); returns the child's id.

    Raises:
        NotFound: no such agent.
    """
    row = db.execute(sa.select(*AGENT_COLUMNS).where(agents_table.c.id == parent_id)).first()
    if row is None:
        raise NotFound(f"{colony.location} has no agent {parent_id}")
    agent = colony.checked_agent(row)
    child_id, identity = new_identity(db)
    colony.weights.divide(db, agent, child_id, identity)
    insert_agent(db, child_id, parent_id, agent.genome, agent.block_size, agent.fitness, identity)
    db.execute(agents_table.update().where(agents_table.c.id == parent_id).values(interactions=0))
    event(db, "division", parent_id, {"child": child_id, "sigma": agent.genome.sigma,
                                      **({"niche": niche} if niche is not None else {})})
    event(db, "birth", child_id, {"parent": parent_id, "identity_seed": str(identity)})
    return child_id


def select(colony: Colony, db: Connection) -> None:
    """Retire agents above the population cap, by the colony's selection policy."""
    alive = _alive_weakest_first(db)
    cap, policy = colony.settings.population_cap, colony.settings.selection
    if len(alive) <= cap:  # the common case, and it runs on every ask: read nothing more
        return
    view = niche_view(colony, db) if policy in ("niche", "species") else None
    table = None if view is None else view.table  # rows in `alive`'s order: the same query
    retiring = set(niches.retiring([(a, Genome.from_json(g).training_id) for a, _, g in alive], cap, policy, table))
    for agent_id, fitness, _ in (row for row in alive if row[0] in retiring):
        db.execute(agents_table.update().where(agents_table.c.id == agent_id).values(status="retired", retired=now()))
        event(db, "retirement", agent_id, {"fitness": fitness})
    forget_retired_weights(db, keep=cap)  # only a retirement can push older retired agents' weights out


def train_children(colony: Colony, children: Sequence[tuple[str, list[int]]]) -> None:
    """Each newborn child takes `child_steps` steps at `child_learning_rate` on its niche's
    memories (after the transaction that bore it: learning saves its weights in
    transactions of its own), so that it starts as that niche's specialist."""
    children = [(child_id, memory_ids) for child_id, memory_ids in children if memory_ids]
    if colony.settings.child_steps == 0 or not children:
        return
    alive = {a.id: a for a in colony.agents()}  # a child may have retired at once
    with colony.store.read() as db:
        taught = [(alive[child_id], memory.texts(db, memory_ids)) for child_id, memory_ids in children
                  if child_id in alive]
    for child, texts in taught:
        if texts:
            colony.weights.adapt([child], [colony.tokenizer.encode(t).ids for t in texts],
                                 colony.settings.child_steps, colony.settings.child_learning_rate)
