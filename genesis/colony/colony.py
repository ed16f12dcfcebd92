"""The colony: champion agents that serve text, learn from feedback, divide and are selected.

Inspired by bacterial growth and Population Based Training. A colony folder holds

    colony.db           SQLite (WAL): agents, the shared memory, events, settings
    tokenizer.json      the one tokenizer every agent shares (their distributions mix)
    agents/<id>.safetensors   each agent's current adapter (or, "full" agents, weights)
    bases/<id>.safetensors    the frozen base of each seed bundle (adapter colonies)

- **Agents** are, by default, low-rank adapters over their seed bundle's frozen weights
  (`genesis.colony.adapters`): tens of KB each, a consensus of many is one batched pass
  of the base, and learning changes the adapter only. `agent_weights="full"` makes each
  agent a whole model instead, for comparison.
- **Consensus:** an answer samples from Σ wᵢ·pᵢ, the agents' next-token distributions
  weighted by softmax(fitness / temperature), or uniformly over the top-k agents.
- **Fitness:** a running estimate (exponential moving average) of each agent's mean
  per-token log-likelihood on feedback text; it starts at minus the bundle's
  validation loss.
- **Continuous learning:** after feedback every agent takes a few optimizer steps on the
  colony's recent memories, so one agent learns from what another saw.
- **Division:** after Θ interactions an agent divides: the child gets the parent's
  current adapter (or weights) plus N(0, σ²) noise (σ is the genome's own trait), drawn from a new
  identity seed taken from the OS entropy pool and recorded, so every birth replays.
- **Selection:** above the population cap the lowest-fitness agents retire.

Several processes may use one colony at once: every read-modify-write of the database is
one `BEGIN IMMEDIATE` transaction, weight files are replaced atomically, and learning
loads, trains and saves an agent's weights under that agent's file lock, each save a new
version (in the file's metadata), so concurrent learners never overwrite each other.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from genesis.colony import memory
from genesis.colony.bundle import load_bundle, same_tokenizer, sha256_file
from genesis.colony.database import (
    AGENT_COLUMNS,
    DATABASE,
    Agent,
    Transaction,
    agent_from_row,
    connect,
    create_database,
    event,
    insert_agent,
    new_identity,
    now,
)
from genesis.colony.settings import ColonySettings
from genesis.colony.weights import AdapterWeights, FullWeights
from genesis.errors import GenesisError
from genesis.train.generate import generate_with


@dataclass(frozen=True)
class Answer:
    """What `ask` returns: the text, the memory it was stored as, who answered, how much."""

    text: str
    memory_id: int
    agents: tuple[str, ...]
    weights: tuple[float, ...]


MAX_COPIES = 100_000  # agents per seed bundle


class Colony:
    """A colony folder; open with `Colony.seed(...)` or `Colony.open(folder)`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / DATABASE).is_file():
            raise GenesisError(f"{self.folder} is not a colony (no {DATABASE})")
        try:
            self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            with self._connect() as db:
                stored = dict(db.execute("SELECT key, value FROM settings").fetchall())
            self.settings = ColonySettings.from_stored(json.loads(stored["settings"]))
        except Exception as error:  # a foreign folder: tokenizer, database or settings unreadable
            raise GenesisError(f"{self.folder} is not a readable colony: {type(error).__name__}: "
                               f"{error}".splitlines()[0]) from None
        self.settings.validate()
        vocab = self.tokenizer.get_vocab_size()
        self._embedding: np.ndarray | None = None  # token embeddings for memory vectors, loaded on use
        self.weights = (AdapterWeights(self.folder, vocab, self.settings.adapter_rank)
                        if self.settings.agent_weights == "adapter" else FullWeights(self.folder, vocab))
        self.agents(alive_only=False)  # every row is checked before anything is built from it

    @classmethod
    def open(cls, folder: str | Path) -> Colony:
        """Open an existing colony folder."""
        return cls(folder)

    @classmethod
    def seed(cls, folder: str | Path, bundles: Sequence[str | Path],
             settings: ColonySettings = ColonySettings(), copies: int = 1) -> Colony:
        """Create a colony from agent bundles (all trained with one tokenizer), `copies`
        agents from each. Adapter agents share their bundle's weights as a frozen base and
        start as distinct identities (adapters drawn from their identity seeds); full
        agents start as exact copies of their bundle.

        Raises:
            GenesisError: the folder already holds a colony, a bundle is bad, or the
                bundles' tokenizers differ.
        """
        settings.validate()
        folder = Path(folder)
        if (folder / DATABASE).exists():
            raise GenesisError(f"{folder} already holds a colony")
        if not bundles:
            raise GenesisError("a colony needs at least one bundle")
        if not 1 <= copies <= MAX_COPIES:
            raise GenesisError(f"copies per bundle must be in 1..{MAX_COPIES}")
        loaded = [load_bundle(path) for path in bundles]
        if not same_tokenizer(loaded):
            raise GenesisError("the bundles were trained with different tokenizers; "
                               "a colony mixes distributions over one vocabulary")
        for sub in ("agents", "bases"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(loaded[0].path / "tokenizer.json", folder / "tokenizer.json")
        vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size()
        adapters = AdapterWeights(folder, vocab, settings.adapter_rank)
        with create_database(folder, json.dumps(dataclasses.asdict(settings))) as db:
            for bundle in loaded:
                weights, block_size = bundle.path / "model.safetensors", bundle.manifest["block_size"]
                base_id = "b" + sha256_file(weights)[:8]
                if settings.agent_weights == "adapter":
                    shutil.copyfile(weights, adapters.base_path(base_id))
                fitness = -bundle.manifest["metrics"]["val_loss"]
                for _ in range(copies):
                    agent_id, identity = new_identity()
                    if settings.agent_weights == "adapter":
                        adapters.born(agent_id, base_id, bundle.genome, block_size, identity)
                    else:
                        shutil.copyfile(weights, folder / "agents" / f"{agent_id}.safetensors")
                    insert_agent(db, agent_id, None, bundle.genome, block_size, fitness, identity)
                    event(db, "birth", agent_id, {"bundle": str(bundle.path), "fitness": fitness})
        return cls(folder)

    def _connect(self) -> sqlite3.Connection:
        return connect(self.folder)

    def _transaction(self) -> Transaction:
        return Transaction(self._connect())

    def agents(self, alive_only: bool = True) -> list[Agent]:
        """The agents, fittest first."""
        with closing(self._connect()) as db:
            where = "WHERE status = 'alive'" if alive_only else ""
            rows = db.execute(f"SELECT {AGENT_COLUMNS} FROM agents {where} ORDER BY fitness DESC, id").fetchall()
        return [self._agent(r) for r in rows]

    def _agent(self, row: Sequence[Any]) -> Agent:
        return agent_from_row(row, self.tokenizer.get_vocab_size(), self.folder / DATABASE)

    def model(self, agent: Agent) -> torch.nn.Module:
        """The agent's current model: a `GPT`, or for adapter agents an `AdaptedModel`."""
        return self.weights.model(agent)

    def version(self, agent: Agent) -> int:
        """How many learning updates the agent's current weights carry (0 at birth)."""
        return self.weights.version(agent)

    def consensus_weights(self, agents: Sequence[Agent]) -> list[float]:
        """Each agent's share of the consensus; the shares sum to one."""
        if self.settings.consensus == "top_k":
            chosen = sorted(agents, key=lambda a: -a.fitness)[: self.settings.consensus_top_k]
            return [1.0 / len(chosen) if a in chosen else 0.0 for a in agents]
        logits = torch.tensor([a.fitness for a in agents], dtype=torch.float64)
        return torch.softmax(logits / self.settings.consensus_temperature, dim=0).tolist()

    def ask(self, prompt: str, max_tokens: int = 30, temperature: float = 0.8, top_k: int = 40,
            seed: int | None = None, recall: int | None = None) -> Answer:
        """Answer by consensus, store the interaction, count it for every agent that took part.

        With `recall` (default the colony's setting) the most similar memories with their
        true continuations come first, as context. Counting may make agents divide and,
        above the cap, the weakest retire.
        """
        agents = self.agents()
        if not agents:
            raise GenesisError(f"{self.folder} has no living agent")
        weights = self.consensus_weights(agents)
        members = [(a, w) for a, w in zip(agents, weights) if w > 0]
        recall = self.settings.recall if recall is None else recall
        context = "".join(f"{text}\n" for text in self._similar(prompt, recall)) if recall > 0 else ""
        predict = self.weights.predictor([a for a, _ in members], temperature)
        text = generate_with(predict, [w for _, w in members], self.tokenizer, context + prompt, max_tokens,
                             top_k, seed if seed is not None else secrets.randbits(63))
        ids = tuple(a.id for a, _ in members)
        with self._transaction() as db:
            memory_id = memory.add(db, prompt, ids, response=text)
            self._count_interactions(db, ids)
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
              measured: dict[str, float] | None = None) -> dict[str, float]:
        """The true text after `prompt`: every living agent's fitness moves toward its mean
        per-token log-likelihood of it, the text joins the shared memory (as the
        continuation of memory `memory_id`, or a new memory), and the agents learn from it.

        `measured` passes per-agent mean log-likelihoods the caller already computed (the
        replay measures them before learning), so they are not computed twice.

        Returns:
            The value each agent's fitness moved toward.
        """
        received = dict(measured) if measured is not None else self._log_likelihoods(prompt, continuation)
        vector = self._vector(prompt + continuation)
        with self._transaction() as db:
            if memory_id is not None:
                memory.row(db, memory_id)
                db.execute("UPDATE memories SET continuation = ? WHERE id = ?", (continuation, memory_id))
            else:
                memory_id = memory.add(db, prompt, sorted(received), continuation=continuation)
            memory.store_vector(db, memory_id, vector)
            memory.forget_beyond(db, self.settings.memory_limit)
            self._move_fitness(db, received)
        if self.settings.adapt_steps > 0:
            self.adapt(vector)
        return received

    def rate(self, memory_id: int, score: float) -> dict[str, float]:
        """A score in (0, 1] for the answer stored as memory `memory_id`: the agents that
        gave it and are still alive move toward their fitness + log(2·score).

        On the fitness scale (a mean log-likelihood, about -5.6) 0.5 is neutral, a score
        above it raises fitness and any lower score lowers it more. Retired agents keep
        their last fitness.

        Returns:
            The value each updated agent's fitness moved toward.
        """
        if not 0 < score <= 1:
            raise GenesisError("a score must be in (0, 1]")
        with self._transaction() as db:
            _, answered = memory.row(db, memory_id)
            fitness = dict(db.execute("SELECT id, fitness FROM agents WHERE status = 'alive'").fetchall())
            received = {agent_id: fitness[agent_id] + math.log(2 * score)
                        for agent_id in answered if agent_id in fitness}
            db.execute("UPDATE memories SET score = ? WHERE id = ?", (score, memory_id))
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

    def _move_fitness(self, db: sqlite3.Connection, received: dict[str, float]) -> None:
        alpha = self.settings.fitness_smoothing  # f <- (1 - α)·f + α·received
        for agent_id, value in received.items():
            db.execute("UPDATE agents SET fitness = (1 - ?) * fitness + ? * ? WHERE id = ?",
                       (alpha, alpha, value, agent_id))

    def memory_prompt(self, memory_id: int) -> str:
        """The prompt of a stored interaction.

        Raises:
            GenesisError: no memory with that id.
        """
        with closing(self._connect()) as db:
            return memory.row(db, memory_id)[0]

    def adapt(self, vector: np.ndarray | None = None) -> None:
        """Every living agent takes `adapt_steps` optimizer steps on the memories
        `learning_texts` chooses."""
        texts = self.learning_texts(vector)
        if texts:
            sequences = [self.tokenizer.encode(t).ids for t in texts]
            self.weights.adapt(self.agents(), sequences, self.settings.adapt_steps, self.settings.learning_rate)

    def learning_texts(self, vector: np.ndarray | str | None = None) -> list[str]:
        """The `memory_window` shared memories learning uses: those most similar to
        `vector` (a memory vector, or a text to embed: the newest feedback), or the most
        recent (`learn_from="recent"`, or without a vector)."""
        if isinstance(vector, str):
            vector = self._vector(vector)
        with closing(self._connect()) as db:
            if self.settings.learn_from == "similar" and vector is not None:
                return memory.similar_texts(db, vector, self.settings.memory_window)
            return memory.recent_texts(db, self.settings.memory_window)

    def _vector(self, text: str) -> np.ndarray:
        """A text's memory vector, from the token embeddings of the colony's first-born agent
        (for adapter agents, its frozen base: vectors stay comparable as agents learn)."""
        if self._embedding is None:
            with closing(self._connect()) as db:
                first = db.execute(f"SELECT {AGENT_COLUMNS} FROM agents ORDER BY born, id LIMIT 1").fetchone()
            self._embedding = self.weights.embedding(self._agent(first))
        return memory.embed(self._embedding, self.tokenizer.encode(text).ids)

    def _similar(self, prompt: str, count: int) -> list[str]:
        with closing(self._connect()) as db:
            return memory.similar_texts(db, self._vector(prompt), count)

    def _count_interactions(self, db: sqlite3.Connection, agent_ids: Sequence[str]) -> None:
        for agent_id in agent_ids:
            db.execute("UPDATE agents SET interactions = interactions + 1, "
                       "total_interactions = total_interactions + 1 WHERE id = ? AND status = 'alive'",
                       (agent_id,))
        ready = db.execute("SELECT id FROM agents WHERE status = 'alive' AND interactions >= ?",
                           (self.settings.division_threshold,)).fetchall()
        for (agent_id,) in ready:
            self._divide(db, agent_id)
        self._select(db)

    def interact(self, agent_ids: Sequence[str]) -> None:
        """Count one interaction for each agent (division and selection may follow)."""
        with self._transaction() as db:
            self._count_interactions(db, agent_ids)

    def divide(self, agent_id: str) -> str:
        """Make `agent_id` divide now; returns the child's id."""
        with self._transaction() as db:
            child = self._divide(db, agent_id)
            self._select(db)
        return child

    def _divide(self, db: sqlite3.Connection, parent_id: str) -> str:
        row = db.execute(f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?", (parent_id,)).fetchone()
        agent = self._agent(row)
        genome, block_size = agent.genome, agent.block_size
        child_id, identity = new_identity()
        self.weights.divide(agent, child_id, identity)
        insert_agent(db, child_id, parent_id, genome, block_size, agent.fitness, identity)
        db.execute("UPDATE agents SET interactions = 0 WHERE id = ?", (parent_id,))
        event(db, "division", parent_id, {"child": child_id, "sigma": genome.sigma})
        event(db, "birth", child_id, {"parent": parent_id, "identity_seed": str(identity)})
        return child_id

    def _select(self, db: sqlite3.Connection) -> None:
        alive = db.execute("SELECT id, fitness FROM agents WHERE status = 'alive' "
                           "ORDER BY fitness ASC, born DESC").fetchall()
        for agent_id, fitness in alive[: max(0, len(alive) - self.settings.population_cap)]:
            db.execute("UPDATE agents SET status = 'retired', retired = ? WHERE id = ?", (now(), agent_id))
            event(db, "retirement", agent_id, {"fitness": fitness})

    def status(self, events: int = 10) -> dict[str, Any]:
        """Agents (all, with lineage), memory size and the most recent events."""
        with closing(self._connect()) as db:
            memories = db.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
            recent = db.execute("SELECT kind, agent, detail, created FROM events ORDER BY id DESC LIMIT ?",
                                (events,)).fetchall()
        return {
            "agents": [dataclasses.asdict(a) | {"genome": a.genome.describe()} for a in self.agents(False)],
            "memories": memories,
            "events": [{"kind": k, "agent": a, "detail": json.loads(d), "created": c} for k, a, d, c in recent],
            "settings": dataclasses.asdict(self.settings),
        }
