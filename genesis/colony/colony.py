"""The colony: champion agents that serve text, learn from feedback, divide and are selected.

Inspired by bacterial growth and Population Based Training. A colony folder holds

    colony.db           SQLite (WAL): agents, the shared memory, events, settings
    tokenizer.json      the one tokenizer every agent shares (their distributions mix)
    agents/<id>.safetensors   each agent's current weights

- **Consensus:** an answer samples from Σ wᵢ·pᵢ, the agents' next-token distributions
  weighted by softmax(fitness / temperature), or uniformly over the top-k agents.
- **Fitness:** a running estimate (exponential moving average) of each agent's mean
  per-token log-likelihood on feedback text; it starts at minus the bundle's
  validation loss.
- **Continuous learning:** after feedback every agent takes a few optimizer steps on the
  colony's recent memories, so one agent learns from what another saw.
- **Division:** after Θ interactions an agent divides: the child gets the parent's
  current weights plus N(0, σ²) noise (σ is the genome's own trait), drawn from a new
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
import os
import re
import secrets
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from filelock import FileLock
from tokenizers import Tokenizer

from genesis.colony.bundle import load_bundle, same_tokenizer
from genesis.core.genome import Genome
from genesis.errors import GenesisError
from genesis.train.generate import continuation_token_probs, generate
from genesis.train.model import (
    GPT,
    GPTConfig,
    check_size,
    load_weights,
    save_weights,
    weights_metadata,
)

DATABASE = "colony.db"
AGENT_ID = re.compile(r"a[0-9a-f]{8}")  # what `_new_identity` makes
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


@dataclass(frozen=True)
class ColonySettings:
    """How a colony behaves; fixed when it is seeded.

    Attributes:
        division_threshold: Θ, interactions after which an agent divides.
        population_cap: most agents alive; above it the lowest-fitness ones retire.
        consensus: "softmax" (all agents, weights softmax(fitness / temperature)) or
            "top_k" (the `consensus_top_k` fittest agents, equal weights).
        consensus_temperature: temperature of the softmax over fitness.
        consensus_top_k: agents that answer in top_k mode.
        fitness_smoothing: α of the running fitness estimate f ← (1-α)·f + α·loglik.
        learning_rate: AdamW learning rate of continuous learning.
        adapt_steps: optimizer steps each agent takes after feedback (0: no learning).
        memory_window: recent memories an adaptation trains on.
    """

    division_threshold: int = 25
    population_cap: int = 6
    consensus: str = "softmax"
    consensus_temperature: float = 0.1
    consensus_top_k: int = 2
    fitness_smoothing: float = 0.2
    learning_rate: float = 1e-4
    adapt_steps: int = 1
    memory_window: int = 8

    def validate(self) -> None:
        """Raise `GenesisError` for settings a colony cannot run with."""
        if self.consensus not in ("softmax", "top_k"):
            raise GenesisError(f"consensus must be softmax or top_k, not {self.consensus!r}")
        if self.division_threshold < 1 or self.population_cap < 1 or self.consensus_top_k < 1:
            raise GenesisError("division threshold, population cap and top-k must be at least 1")
        if self.consensus_temperature <= 0 or not 0 < self.fitness_smoothing <= 1:
            raise GenesisError("consensus temperature must be > 0 and smoothing in (0, 1]")


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


@dataclass(frozen=True)
class Answer:
    """What `ask` returns: the text, the memory it was stored as, who answered, how much."""

    text: str
    memory_id: int
    agents: tuple[str, ...]
    weights: tuple[float, ...]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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
            self.settings = ColonySettings(**json.loads(stored["settings"]))
        except Exception as error:  # a foreign folder: tokenizer, database or settings unreadable
            raise GenesisError(f"{self.folder} is not a readable colony: {type(error).__name__}: "
                               f"{error}".splitlines()[0]) from None
        self.settings.validate()
        self._models: dict[tuple[str, int], GPT] = {}  # (agent id, weights mtime) -> model
        self.agents(alive_only=False)  # every row is checked before anything is built from it

    @classmethod
    def open(cls, folder: str | Path) -> Colony:
        """Open an existing colony folder."""
        return cls(folder)

    @classmethod
    def seed(cls, folder: str | Path, bundles: Sequence[str | Path],
             settings: ColonySettings = ColonySettings()) -> Colony:
        """Create a colony from agent bundles (all trained with one tokenizer).

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
        loaded = [load_bundle(path) for path in bundles]
        if not same_tokenizer(loaded):
            raise GenesisError("the bundles were trained with different tokenizers; "
                               "a colony mixes distributions over one vocabulary")
        (folder / "agents").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(loaded[0].path / "tokenizer.json", folder / "tokenizer.json")
        db = sqlite3.connect(folder / DATABASE)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            with db:
                db.execute("INSERT INTO settings VALUES ('settings', ?)",
                           (json.dumps(dataclasses.asdict(settings)),))
                for bundle in loaded:
                    agent_id, identity = _new_identity()
                    shutil.copyfile(bundle.path / "model.safetensors", folder / "agents" / f"{agent_id}.safetensors")
                    fitness = -bundle.manifest["metrics"]["val_loss"]
                    db.execute(
                        "INSERT INTO agents (id, parent, genome, weights, block_size, fitness, "
                        "identity_seed, born) VALUES (?, NULL, ?, ?, ?, ?, ?, ?)",
                        (agent_id, bundle.genome.to_json(), f"agents/{agent_id}.safetensors",
                         bundle.manifest["block_size"], fitness, str(identity), _now()))
                    _event(db, "birth", agent_id, {"bundle": str(bundle.path), "fitness": fitness})
        finally:
            db.close()
        return cls(folder)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.folder / DATABASE, timeout=60, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 60000")
        return db

    def _transaction(self) -> _Transaction:
        return _Transaction(self._connect())

    def agents(self, alive_only: bool = True) -> list[Agent]:
        """The agents, fittest first."""
        db = self._connect()
        try:
            where = "WHERE status = 'alive'" if alive_only else ""
            rows = db.execute(f"SELECT id, parent, genome, weights, block_size, fitness, interactions, "
                              f"total_interactions, identity_seed, born, status FROM agents {where} "
                              f"ORDER BY fitness DESC, id").fetchall()
        finally:
            db.close()
        return [self._agent(r) for r in rows]

    def _agent(self, row: Sequence[Any]) -> Agent:
        """An agents row, checked: a colony folder may come from someone else, so nothing in
        it may point outside the folder or ask for an unbounded model."""
        agent_id = row[0]
        try:
            if not isinstance(agent_id, str) or not AGENT_ID.fullmatch(agent_id):
                raise GenesisError(f"its id {agent_id!r} is not an agent id")
            if row[3] != f"agents/{agent_id}.safetensors":
                raise GenesisError(f"its weights path {row[3]!r} is not agents/{agent_id}.safetensors")
            genome = Genome.from_json(row[2])
            if not isinstance(row[4], int) or not 1 <= row[4] <= MAX_BLOCK_SIZE:
                raise GenesisError(f"its block size {row[4]!r} is not in 1..{MAX_BLOCK_SIZE}")
            check_size(genome, self.tokenizer.get_vocab_size(), row[4], "its genome")
            return Agent(agent_id, row[1], genome, row[3], row[4], float(row[5]), int(row[6]), int(row[7]),
                         int(row[8]), row[9], row[10])
        except (GenesisError, TypeError, ValueError) as error:
            raise GenesisError(f"{self.folder / DATABASE}: agent {agent_id!r} is invalid: {error}") from None

    def weights_path(self, agent_id: str) -> Path:
        """Where an agent's weights live: always derived from its id, inside the folder.

        Raises:
            GenesisError: not an agent id, or the file is a symbolic link.
        """
        if not AGENT_ID.fullmatch(agent_id):
            raise GenesisError(f"{agent_id!r} is not an agent id")
        path = self.folder / "agents" / f"{agent_id}.safetensors"
        if path.is_symlink() or (self.folder / "agents").is_symlink():
            raise GenesisError(f"{path} is a symbolic link; a colony keeps its weights inside its folder")
        return path

    def model(self, agent: Agent) -> GPT:
        """The agent's current model, loaded from its weights file (cached per version)."""
        path = self.weights_path(agent.id)
        key = (agent.id, path.stat().st_mtime_ns)
        if key not in self._models:
            model = GPT(GPTConfig.from_genome(agent.genome, self.tokenizer.get_vocab_size(), agent.block_size))
            load_weights(model, path)
            self._models = {k: v for k, v in self._models.items() if k[0] != agent.id}
            self._models[key] = model.eval()
        return self._models[key]

    def consensus_weights(self, agents: Sequence[Agent]) -> list[float]:
        """Each agent's share of the consensus; the shares sum to one."""
        if self.settings.consensus == "top_k":
            chosen = sorted(agents, key=lambda a: -a.fitness)[: self.settings.consensus_top_k]
            return [1.0 / len(chosen) if a in chosen else 0.0 for a in agents]
        logits = torch.tensor([a.fitness for a in agents], dtype=torch.float64)
        return torch.softmax(logits / self.settings.consensus_temperature, dim=0).tolist()

    def ask(self, prompt: str, max_tokens: int = 30, temperature: float = 0.8, top_k: int = 40,
            seed: int | None = None) -> Answer:
        """Answer by consensus, store the interaction, count it for every agent that took part.

        Counting may make agents divide and, above the cap, the weakest retire.
        """
        agents = self.agents()
        if not agents:
            raise GenesisError(f"{self.folder} has no living agent")
        weights = self.consensus_weights(agents)
        members = [(a, w) for a, w in zip(agents, weights) if w > 0]
        text = generate([self.model(a) for a, _ in members], [w for _, w in members], self.tokenizer,
                        prompt, max_tokens, temperature, top_k,
                        seed if seed is not None else secrets.randbits(63))
        ids = tuple(a.id for a, _ in members)
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO memories (prompt, response, agents, created) VALUES (?, ?, ?, ?)",
                                (prompt, text, json.dumps(ids), _now()))
            memory_id = cursor.lastrowid
            self._count_interactions(db, ids)
        return Answer(text, memory_id, ids, tuple(w for _, w in members))

    def feedback(self, prompt: str, continuation: str | None = None, score: float | None = None,
                 memory_id: int | None = None,
                 measured: dict[str, float] | None = None) -> dict[str, float]:
        """Update fitness from feedback, store it in the shared memory, and learn from it.

        With `continuation` (the true text after `prompt`), every living agent's fitness
        moves toward its mean per-token log-likelihood of it. With `score` in (0, 1], the
        agents that answered memory `memory_id` and are still alive move toward their
        fitness + log(2·score): a score above 0.5 raises fitness, below lowers it, and a
        lower score always lowers it more.

        `measured` passes per-agent mean log-likelihoods of the continuation that the
        caller already computed (the replay measures them before learning), so they are
        not computed twice.

        Returns:
            The value each updated agent's fitness moved toward.
        """
        if (continuation is None) == (score is None):
            raise GenesisError("give either the true continuation or a score")
        if score is not None and not 0 < score <= 1:
            raise GenesisError("a score must be in (0, 1]")
        agents = self.agents()
        if measured is not None:
            received = dict(measured)
        elif continuation is not None:
            context = self.tokenizer.encode(prompt).ids
            target = self.tokenizer.encode(continuation).ids
            if not target:
                raise GenesisError("the continuation has no tokens")
            received = {a.id: float(continuation_token_probs(self.model(a), context, target).log().mean())
                        for a in agents}
        else:
            if memory_id is None:
                raise GenesisError("a score needs the memory id of the answer it rates")
            received = {}
        alpha = self.settings.fitness_smoothing
        with self._transaction() as db:
            if score is not None:
                row = db.execute("SELECT agents FROM memories WHERE id = ?", (memory_id,)).fetchone()
                if row is None:
                    raise GenesisError(f"no memory {memory_id}")
                fitness = dict(db.execute("SELECT id, fitness FROM agents WHERE status = 'alive'").fetchall())
                # On the fitness scale (a mean log-likelihood, about -5.6): a score moves each
                # answering agent toward its own fitness + log(2·score), so 0.5 is neutral and
                # any lower score lowers fitness more. Retired agents keep their last fitness.
                received = {agent_id: fitness[agent_id] + math.log(2 * score)
                            for agent_id in json.loads(row[0]) if agent_id in fitness}
                db.execute("UPDATE memories SET score = ? WHERE id = ?", (score, memory_id))
            elif memory_id is not None:
                db.execute("UPDATE memories SET continuation = ? WHERE id = ?", (continuation, memory_id))
            else:
                db.execute("INSERT INTO memories (prompt, continuation, agents, created) VALUES (?, ?, ?, ?)",
                           (prompt, continuation, json.dumps(sorted(received)), _now()))
            for agent_id, value in received.items():
                db.execute("UPDATE agents SET fitness = (1 - ?) * fitness + ? * ? WHERE id = ?",
                           (alpha, alpha, value, agent_id))
        if continuation is not None and self.settings.adapt_steps > 0:
            self.adapt()
        return received

    def memory_prompt(self, memory_id: int) -> str:
        """The prompt of a stored interaction.

        Raises:
            GenesisError: no memory with that id.
        """
        db = self._connect()
        try:
            row = db.execute("SELECT prompt FROM memories WHERE id = ?", (memory_id,)).fetchone()
        finally:
            db.close()
        if row is None:
            raise GenesisError(f"no memory {memory_id}")
        return row[0]

    def recent_memories(self) -> list[str]:
        """Texts (prompt + true continuation) of the colony's most recent feedback."""
        db = self._connect()
        try:
            rows = db.execute("SELECT prompt, continuation FROM memories WHERE continuation IS NOT NULL "
                              "ORDER BY id DESC LIMIT ?", (self.settings.memory_window,)).fetchall()
        finally:
            db.close()
        return [prompt + continuation for prompt, continuation in reversed(rows)]

    def adapt(self) -> None:
        """Every living agent takes `adapt_steps` optimizer steps on the shared recent memories."""
        texts = self.recent_memories()
        if not texts:
            return
        sequences = [self.tokenizer.encode(t).ids for t in texts]
        for agent in self.agents():
            # Load, learn and save under the agent's lock: a process that learns at the same
            # time waits and then learns on top of these weights, so no update is lost.
            with FileLock(str(self.weights_path(agent.id).with_suffix(".lock"))):
                loaded = self.version(agent)
                model = self.model(agent)
                adapt_model(model, sequences, self.settings.adapt_steps, self.settings.learning_rate)
                self.save(agent, model, loaded + 1)

    def version(self, agent: Agent) -> int:
        """How many learning updates the agent's current weights carry (0 at birth)."""
        return int(weights_metadata(self.weights_path(agent.id)).get("version", "0"))

    def save(self, agent: Agent, model: GPT, version: int) -> None:
        """Write an agent's weights (atomically) as `version` (one more than the version
        they were loaded at), and keep the loaded model current."""
        path = self.weights_path(agent.id)
        save_weights(model, path, {"version": str(version)})
        self._models = {k: v for k, v in self._models.items() if k[0] != agent.id}
        self._models[(agent.id, path.stat().st_mtime_ns)] = model

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
        row = db.execute("SELECT id, parent, genome, weights, block_size, fitness, interactions, "
                         "total_interactions, identity_seed, born, status FROM agents WHERE id = ?",
                         (parent_id,)).fetchone()
        agent = self._agent(row)
        genome, block_size = agent.genome, agent.block_size
        parent = GPT(GPTConfig.from_genome(genome, self.tokenizer.get_vocab_size(), block_size))
        load_weights(parent, self.weights_path(parent_id))
        child_id, identity = _new_identity()
        child = mutate_weights(parent, genome.sigma, identity)
        save_weights(child, self.weights_path(child_id))
        db.execute("INSERT INTO agents (id, parent, genome, weights, block_size, fitness, identity_seed, born) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (child_id, parent_id, row[2], f"agents/{child_id}.safetensors", block_size, agent.fitness,
                    str(identity), _now()))
        db.execute("UPDATE agents SET interactions = 0 WHERE id = ?", (parent_id,))
        _event(db, "division", parent_id, {"child": child_id, "sigma": genome.sigma})
        _event(db, "birth", child_id, {"parent": parent_id, "identity_seed": str(identity)})
        return child_id

    def _select(self, db: sqlite3.Connection) -> None:
        alive = db.execute("SELECT id, fitness FROM agents WHERE status = 'alive' "
                           "ORDER BY fitness ASC, born DESC").fetchall()
        for agent_id, fitness in alive[: max(0, len(alive) - self.settings.population_cap)]:
            db.execute("UPDATE agents SET status = 'retired', retired = ? WHERE id = ?", (_now(), agent_id))
            _event(db, "retirement", agent_id, {"fitness": fitness})

    def status(self, events: int = 10) -> dict[str, Any]:
        """Agents (all, with lineage), memory size and the most recent events."""
        db = self._connect()
        try:
            memories = db.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
            recent = db.execute("SELECT kind, agent, detail, created FROM events ORDER BY id DESC LIMIT ?",
                                (events,)).fetchall()
        finally:
            db.close()
        return {
            "agents": [dataclasses.asdict(a) | {"genome": a.genome.describe()} for a in self.agents(False)],
            "memories": memories,
            "events": [{"kind": k, "agent": a, "detail": json.loads(d), "created": c} for k, a, d, c in recent],
            "settings": dataclasses.asdict(self.settings),
        }


class _Transaction:
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


def _new_identity() -> tuple[str, int]:
    # The identity seed comes from the OS entropy pool; it is recorded with the agent, so
    # the noise of a division can be replayed from the database.
    identity = int.from_bytes(os.urandom(8), "big") >> 1
    return f"a{identity:016x}"[:9], identity


def _event(db: sqlite3.Connection, kind: str, agent: str, detail: dict[str, Any]) -> None:
    db.execute("INSERT INTO events (kind, agent, detail, created) VALUES (?, ?, ?, ?)",
               (kind, agent, json.dumps(detail), _now()))


def mutate_weights(parent: GPT, sigma: float, identity_seed: int) -> GPT:
    """A copy of `parent` with N(0, σ²) added to every weight, drawn from `identity_seed`."""
    generator = torch.Generator().manual_seed(identity_seed)
    child = GPT(parent.config)
    child.load_state_dict(parent.state_dict())
    with torch.no_grad():
        for param in child.parameters():  # the tied embedding is one parameter: noised once
            param.add_(torch.randn(param.shape, generator=generator) * sigma)
    return child.eval()


def adapt_model(model: GPT, sequences: Sequence[Sequence[int]], steps: int, learning_rate: float) -> None:
    """A few AdamW steps of next-token training on `sequences` (each cropped to the context)."""
    block = model.config.block_size + 1
    windows = [list(s)[-block:] for s in sequences if len(s) >= 2]
    if not windows or steps <= 0:
        return
    length = min(len(w) for w in windows)
    batch = torch.tensor([w[-length:] for w in windows])  # (B, length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        _, loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()


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
