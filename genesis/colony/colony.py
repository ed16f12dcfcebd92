"""The colony: champion agents that serve text, learn from feedback, divide and are selected.

Inspired by bacterial growth and Population Based Training. A colony lives wholly in
one database (`genesis.colony.database`): a folder holds it as SQLite (`colony.db`), a
`postgresql://` URL lets processes on many machines share it. It holds the settings, the
one tokenizer every agent shares (their distributions mix), the agents and their weights,
each seed bundle's frozen base, the shared memory and the events.

- **Agents** are, by default, low-rank adapters over their seed bundle's frozen weights
  (`genesis.colony.adapters`): tens of KB each, a consensus of many is one batched pass
  of the base, learning changes the adapter only; or whole models (`agent_weights="full"`).
- **Consensus:** an answer samples from Σ wᵢ·pᵢ, the agents' next-token distributions
  weighted by a policy (`genesis.colony.consensus`): softmax(fitness / temperature), the
  top-k agents, or routed by each agent's likelihood of the prompt or by its niche.
- **Fitness:** a running mean of each agent's per-token log-likelihood on feedback text
  (and, with niches, one per niche: `genesis.colony.niches`).
- **Continuous learning:** after feedback every agent takes a few steps on shared memories.
- **Division and selection** (`genesis.colony.lifecycle`): after Θ interactions an agent
  divides (child = parent + N(0, σ²)); above the cap a selection policy retires agents.

Processes on one or many machines may share a colony: every read-modify-write is one
transaction under its write lock, and learning saves weights only on top of the version it
loaded (the loser of a race learns again), so nothing is lost. One `Colony` per thread.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import sqlalchemy as sa
import torch
from sqlalchemy.engine import Connection
from tokenizers import Tokenizer

from genesis.colony import consensus, lifecycle, memory
from genesis.colony.bundle import load_agent, same_tokenizer
from genesis.colony.database import (
    AGENT_COLUMNS,
    FORMAT,
    Agent,
    Store,
    agent_from_row,
    agents_table,
    event,
    insert_agent,
    new_identity,
    read_settings,
    recent_events,
    recently_retired,
    retired_count,
    settings_table,
)
from genesis.colony.settings import ColonySettings
from genesis.colony.weights import make_weights
from genesis.errors import GenesisError, NotFound
from genesis.train.generate import check_sampling, generate_with


@dataclass(frozen=True)
class Answer:
    """What `ask` returns: the text, the memory it was stored as, who answered, how much."""

    text: str
    memory_id: int
    agents: tuple[str, ...]
    weights: tuple[float, ...]


MAX_COPIES = 100_000  # agents per seed bundle
ASK_TRIES = 3  # reads of the living agents an ask makes before a race with retirement is an error
MIN_SCORE = 0.01  # a lower rating moves fitness as far as this one: log(0.02), about -3.9


class Colony:
    """A colony; open with `Colony.seed(...)` or `Colony.open(location)`, where a location
    is a folder (SQLite in it) or a database URL."""

    def __init__(self, location: str | Path | Store):
        self.store = location if isinstance(location, Store) else Store(location)
        self.folder, self.location = self.store.folder, self.store.name
        if not self.store.exists():
            raise GenesisError(f"{self.location} is not a colony")
        try:
            with self.store.read() as db:
                stored = read_settings(db)
            if "format" not in stored:  # a folder of colony format 1, or some other database
                raise GenesisError(f"{self.location} was made by an older genesis (its weights lie in files); run "
                                   f"`genesis colony upgrade {self.location}` once to move them into its database"
                                   if self.folder is not None else f"{self.location} holds no genesis colony")
            self.tokenizer = Tokenizer.from_str(stored["tokenizer"])
            self.settings = ColonySettings.from_stored(json.loads(stored["settings"]))
        except GenesisError:
            raise
        except Exception as error:  # a foreign database: tokenizer or settings unreadable
            raise GenesisError(f"{self.location} is not a readable colony: {type(error).__name__}: "
                               f"{error}".splitlines()[0]) from None
        vocab = self.tokenizer.get_vocab_size()
        self._scored = self.settings.niches > 0  # a colony with niches keeps every agent's score on every memory
        self._embedding: np.ndarray | None = None  # token embeddings for memory vectors, loaded on use
        self.niche_cache: tuple[tuple, lifecycle.NicheView | None] | None = None  # see `lifecycle.niche_view`
        self.weights = make_weights(self.store, vocab, self.settings)
        self.agents(alive_only=False)  # every row is checked before anything is built from it

    @classmethod
    def open(cls, location: str | Path) -> Colony:
        """Open an existing colony: a folder or a database URL."""
        return cls(location)

    @classmethod
    def seed(cls, location: str | Path, bundles: Sequence[str | Path],
             settings: ColonySettings = ColonySettings(), copies: int = 1) -> Colony:
        """Create a colony (in a folder or a database URL) from agent bundles, all trained
        with one tokenizer, `copies` agents from each. Adapter agents share their bundle's
        weights as a frozen base and start as distinct identities (adapters drawn from
        their identity seeds); full agents start as exact copies of their bundle.

        Raises:
            GenesisError: a colony is already there, a bundle is bad, or the bundles'
                tokenizers differ.
        """
        settings.validate()
        store = Store(location)
        if store.exists():
            raise GenesisError(f"{store.name} already holds a colony")
        if not bundles:
            raise GenesisError("a colony needs at least one bundle")
        if not 1 <= copies <= MAX_COPIES:
            raise GenesisError(f"copies per bundle must be in 1..{MAX_COPIES}")
        loaded = [load_agent(path) for path in bundles]
        if not same_tokenizer(loaded):
            raise GenesisError("the bundles were trained with different tokenizers; "
                               "a colony mixes distributions over one vocabulary")
        tokenizer = loaded[0].tokenizer
        kind = make_weights(store, tokenizer.get_vocab_size(), settings)
        with store.create_or_discard() as db:
            db.execute(settings_table.insert(), [
                {"key": "format", "value": str(FORMAT)}, {"key": "tokenizer", "value": tokenizer.to_str()},
                {"key": "settings", "value": json.dumps(dataclasses.asdict(settings))}])
            for bundle in loaded:
                base = ("b" + bundle.manifest["sha256"]["model.safetensors"][:8],
                        (bundle.path / "model.safetensors").read_bytes())
                metrics, block_size = bundle.manifest["metrics"], bundle.manifest["block_size"]
                # minus the validation loss, or the fitness an exported agent had in its colony
                fitness = -metrics["val_loss"] if "val_loss" in metrics else metrics["colony_fitness"]
                for _ in range(copies):
                    agent_id, identity = new_identity(db)
                    kind.born(db, agent_id, bundle, base, identity)
                    insert_agent(db, agent_id, None, bundle.genome, block_size, fitness, identity)
                    event(db, "birth", agent_id, {"bundle": str(bundle.path), "fitness": fitness})
        return cls(store)

    def agents(self, alive_only: bool = True, retired: Sequence[str] = ()) -> list[Agent]:
        """The living agents (and the retired ones named in `retired`), fittest first; with
        `alive_only` False, every agent ever born."""
        query = sa.select(*AGENT_COLUMNS).order_by(agents_table.c.fitness.desc(), agents_table.c.id)
        if alive_only:
            query = query.where(sa.or_(agents_table.c.status == "alive", agents_table.c.id.in_(list(retired))))
        with self.store.read() as db:
            rows = db.execute(query).all()
        return [self.checked_agent(r) for r in rows]

    def checked_agent(self, row: Sequence[Any]) -> Agent:
        """An agents row (`AGENT_COLUMNS`) as an `Agent`, checked (`GenesisError` if it is invalid)."""
        return agent_from_row(row, self.tokenizer.get_vocab_size(), self.location)

    def model(self, agent: Agent) -> torch.nn.Module:
        """The agent's current model: a `GPT`, or for adapter agents an `AdaptedModel`."""
        return self.weights.model(agent)

    def version(self, agent: Agent) -> int:
        """How many learning updates the agent's current weights carry (0 at birth)."""
        return self.weights.version(agent)

    def consensus_weights(self, agents: Sequence[Agent], context: Sequence[int] = ()) -> list[float]:
        """Each agent's share of the consensus on a prompt (its token ids `context`), by the
        colony's policy (`genesis.colony.consensus`); the shares sum to one."""
        settings = self.settings
        before, recent = consensus.routing_split(context, settings.routing_tokens)
        evidence = None  # a routed policy reads each agent's log-likelihood of the prompt's last tokens
        if settings.consensus in consensus.ROUTED:
            evidence = (self.continuation_probs(agents, before, recent).double().log().sum(dim=1).tolist()
                        if recent else [0.0] * len(agents))
        in_niche = None  # the niche policy reads each agent's fitness in the prompt's niche
        if settings.consensus == "niche":
            with self.store.read() as db:
                view = lifecycle.niche_view(self, db)
            if view is not None:
                niche = int(view.niches.assign([list(context)])[0])
                column = view.fitness_in(niche)
                in_niche = [column.get(a.id, a.fitness) for a in agents]
        return consensus.weights(settings.consensus, consensus.Evidence([a.fitness for a in agents], evidence, in_niche),
                                 settings.consensus_temperature, settings.consensus_top_k, settings.routing_temperature,
                                 settings.answering)

    def ask(self, prompt: str, max_tokens: int = 30, temperature: float = 0.8, top_k: int = 40,
            seed: int | None = None, recall: int | None = None) -> Answer:
        """Answer by consensus, store the interaction, count it for every agent that took part.

        With `recall` (default the colony's setting) the most similar memories with their true
        continuations come first, as context. Counting may make agents divide and, above the
        cap, the weakest retire. Settings out of range raise `GenesisError` first."""
        check_sampling(max_tokens, temperature, top_k)
        recall = self.settings.recall if recall is None else ColonySettings.checked("recall", recall)
        context = "".join(f"{text}\n" for text in self._similar(prompt, recall)) if recall > 0 else ""
        prompt_ids = self.tokenizer.encode(prompt).ids
        for attempt in range(ASK_TRIES):
            agents = self.agents()
            if not agents:
                raise GenesisError(f"{self.location} has no living agent")
            try:
                weights = self.consensus_weights(agents, prompt_ids)
                members = [(a, w) for a, w in zip(agents, weights) if w > 0]
                predict = self.weights.predictor([a for a, _ in members], temperature)
                break
            except NotFound:  # other processes retired more than the cap and forgot their weights meanwhile
                if attempt == ASK_TRIES - 1:
                    raise
        text = generate_with(predict, [w for _, w in members], self.tokenizer, context + prompt, max_tokens,
                             top_k, seed if seed is not None else secrets.randbits(63))
        ids = tuple(a.id for a, _ in members)
        with self.store.write() as db:
            memory_id = memory.add(db, prompt, ids, self.settings.memory_limit, response=text,
                                   scored=self._scored)
            children = lifecycle.count_interactions(self, db, ids)
        lifecycle.train_children(self, children)
        return Answer(text, memory_id, ids, tuple(w for _, w in members))

    def feedback(self, prompt: str, continuation: str | None = None, score: float | None = None,
                 memory_id: int | None = None) -> dict[str, float]:
        """`teach` with the true `continuation`, or `rate` memory `memory_id` with `score`:
        the one call the command line makes for either kind of feedback."""
        if (continuation is None) == (score is None):
            raise GenesisError("give either the true continuation or a score")
        if score is not None:
            if memory_id is None:
                raise GenesisError("a score needs the memory id of the answer it rates")
            return self.rate(memory_id, score)
        return self.teach(prompt, continuation, memory_id)

    def teach(self, prompt: str, continuation: str, memory_id: int | None = None,
              measured: dict[str, float] | None = None, shares: dict[str, float] | None = None) -> dict[str, float]:
        """The true text after `prompt`: every living agent's fitness moves toward its mean
        per-token log-likelihood of it, the text joins the shared memory (as the
        continuation of memory `memory_id`, or a new memory), and the agents learn from it
        (with `learners` set, only those the consensus listens to most on `prompt`).

        `measured` passes per-agent mean log-likelihoods and `shares` the consensus shares
        the caller already computed (the replay measures both before learning), so they
        are not computed twice.

        Returns:
            The value each agent's fitness moved toward.
        """
        received = dict(measured) if measured is not None else self._log_likelihoods(prompt, continuation)
        learners = self._learners(prompt, shares)  # chosen by the consensus that answered, before feedback
        vector = self._vector(prompt + continuation)
        with self.store.write() as db:
            if memory_id is not None:
                memory.update(db, memory_id, continuation=continuation)
            else:
                memory_id = memory.add(db, prompt, sorted(received), self.settings.memory_limit,
                                       continuation=continuation, scored=self._scored)
            memory.store_vector(db, memory_id, vector)
            if self._scored:  # the scores that place its fitness in the memory's niche
                memory.store_scores(db, memory_id, received)
            self._move_fitness(db, received)
        if self.settings.adapt_steps > 0:
            self.adapt(vector, learners)
        return received

    def _learners(self, prompt: str, shares: dict[str, float] | None) -> list[Agent] | None:
        """The agents that learn from feedback on `prompt`: None (every living agent), or
        the `learners` with the largest consensus shares (ties by fitness order)."""
        count = self.settings.learners
        if not count or self.settings.adapt_steps == 0:
            return None
        agents = self.agents()
        if count >= len(agents):
            return None
        if shares is None:
            weights = self.consensus_weights(agents, self.tokenizer.encode(prompt).ids)
            shares = {a.id: w for a, w in zip(agents, weights)}
        ranked = sorted(range(len(agents)), key=lambda i: -shares.get(agents[i].id, 0.0))
        return [agents[i] for i in sorted(ranked[:count])]

    def rate(self, memory_id: int, score: float) -> dict[str, float]:
        """A score in (0, 1] for the answer stored as memory `memory_id`: the agents that
        gave it and are still alive move toward their fitness + log(2·score).

        On the fitness scale (a mean log-likelihood) 0.5 is neutral; a score moves fitness
        at most as far as `MIN_SCORE` does. Retired agents keep their last fitness.

        Returns:
            The value each updated agent's fitness moved toward.
        """
        if not 0 < score <= 1:
            raise GenesisError("a score must be in (0, 1]")
        with self.store.write() as db:
            _, answered = memory.row(db, memory_id)
            fitness = dict(db.execute(sa.select(agents_table.c.id, agents_table.c.fitness)
                                      .where(agents_table.c.status == "alive")).all())
            received = {agent_id: fitness[agent_id] + math.log(2 * max(score, MIN_SCORE))
                        for agent_id in answered if agent_id in fitness}
            memory.update(db, memory_id, score=score)
            self._move_fitness(db, received)
        return received

    def _log_likelihoods(self, prompt: str, continuation: str) -> dict[str, float]:
        """Each living agent's mean per-token log-likelihood of `continuation` after `prompt`."""
        context = self.tokenizer.encode(prompt).ids
        target = self.tokenizer.encode(continuation).ids
        if not target:
            raise GenesisError("the continuation has no tokens")
        agents = self.agents()
        return {a.id: float(p.log().mean()) for a, p in zip(agents, self.continuation_probs(agents, context, target))}

    def continuation_probs(self, agents: Sequence[Agent], context: Sequence[int],
                           continuation: Sequence[int]) -> torch.Tensor:
        """Each agent's teacher-forced probabilities of `continuation` after `context`,
        shape (agents, T) (one batched pass per base for adapter agents)."""
        return self.weights.continuation_probs(agents, context, continuation)

    def _move_fitness(self, db: Connection, received: dict[str, float]) -> None:
        alpha = self.settings.fitness_smoothing  # f <- (1 - α)·f + α·received
        for agent_id, value in received.items():
            db.execute(agents_table.update().where(agents_table.c.id == agent_id)
                       .values(fitness=(1 - alpha) * agents_table.c.fitness + alpha * value))

    def memory_prompt(self, memory_id: int) -> str:
        """The prompt of a stored interaction (`NotFound`: no memory with that id)."""
        with self.store.read() as db:
            return memory.row(db, memory_id)[0]

    def adapt(self, vector: np.ndarray | None = None, agents: Sequence[Agent] | None = None) -> None:
        """Every living agent (or `agents`) takes `adapt_steps` optimizer steps on the
        memories `learning_texts` chooses."""
        texts = self.learning_texts(vector)
        if texts:
            sequences = [self.tokenizer.encode(t).ids for t in texts]
            learners = self.agents() if agents is None else agents
            self.weights.adapt(learners, sequences, self.settings.adapt_steps, self.settings.learning_rate)

    def learning_texts(self, vector: np.ndarray | str | None = None) -> list[str]:
        """The `memory_window` shared memories learning uses: those most similar to
        `vector` (a memory vector, or a text to embed: the newest feedback), or the most
        recent (`learn_from="recent"`, or without a vector)."""
        if isinstance(vector, str):
            vector = self._vector(vector)
        with self.store.read() as db:
            if self.settings.learn_from == "similar" and vector is not None:
                return memory.similar_texts(db, vector, self.settings.memory_window)
            return memory.recent_texts(db, self.settings.memory_window)

    def _vector(self, text: str) -> np.ndarray:
        """A text's memory vector, from the token embeddings of the colony's first-born agent
        (for adapter agents, its frozen base: vectors stay comparable as agents learn)."""
        if self._embedding is None:
            with self.store.read() as db:
                first = db.execute(sa.select(*AGENT_COLUMNS).order_by(agents_table.c.born, agents_table.c.id)
                                   .limit(1)).first()
            self._embedding = self.weights.embedding(self.checked_agent(first))
        return memory.embed(self._embedding, self.tokenizer.encode(text).ids)

    def _similar(self, prompt: str, count: int) -> list[str]:
        with self.store.read() as db:
            return memory.similar_texts(db, self._vector(prompt), count)

    def interact(self, agent_ids: Sequence[str]) -> None:
        """Count one interaction for each agent (division and selection may follow)."""
        with self.store.write() as db:
            children = lifecycle.count_interactions(self, db, agent_ids)
        lifecycle.train_children(self, children)

    def divide(self, agent_id: str) -> str:
        """Make `agent_id` divide now; returns the child's id."""
        with self.store.write() as db:
            child = lifecycle.divide(self, db, agent_id)
            lifecycle.select(self, db)
        return child

    def status(self, events: int = 10, retired: int = 50) -> dict[str, Any]:
        """The living and the `retired` last retired agents (lineage, learning version), the
        retired count, memory size and the last `events`: bounded, however long it lived."""
        with self.store.read() as db:
            shown, retired_total = recently_retired(db, retired), retired_count(db)
            memories, recent = memory.count(db), recent_events(db, events)
        everyone = self.agents(retired=shown)
        versions = self.weights.versions(everyone)
        return {"agents": [dataclasses.asdict(a) | {"genome": a.genome.describe(), "version": versions.get(a.id, 0)}
                           for a in everyone],
                "retired_total": retired_total, "memories": memories, "events": recent,
                "settings": dataclasses.asdict(self.settings)}
