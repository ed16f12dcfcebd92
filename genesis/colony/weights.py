"""The agents' weights, kept in the colony's database, in either of two kinds:

- `FullWeights`: each agent a whole µLM (a few MB each);
- `AdapterWeights`: each agent a low-rank adapter (tens of KB) over a shared, frozen base
  in the `bases` table (see `genesis.colony.adapters`).

Each agent's weights carry a version (0 at birth, one more per learning update). Learning
loads a version, trains and saves only if the version is still the one it loaded (a
compare-and-set); a process that lost the race learns again on top of the winner's
weights, so concurrent learners, on one machine or many, never overwrite each other.
Loaded models are cached per version. Both kinds answer for many agents at once: the
adapter kind in one batched pass per base.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np
import sqlalchemy as sa
import torch
from sqlalchemy.engine import Connection

from genesis.colony import adapters as lora
from genesis.colony.bundle import Bundle
from genesis.colony.database import Agent, Store, bases_table, weights_table
from genesis.colony.learning import adapt_model, mutate_weights, training_batch
from genesis.colony.settings import ColonySettings
from genesis.errors import GenesisError, NotFound
from genesis.train.generate import continuation_token_probs, next_token_probs
from genesis.train.model import GPT, GPTConfig, load_weights_bytes, weights_bytes

BASE_ID = re.compile(r"b[0-9a-f]{8}")
LEARN_TOGETHER = 16  # adapters trained in one batched pass (memory: agents x memories x vocab logits)
MAX_TRIES = 20  # learning rounds before giving up on agents other processes keep updating


class FullWeights:
    """Every agent a whole model of its own."""

    def __init__(self, store: Store, vocab_size: int):
        self.store = store
        self.vocab_size = vocab_size
        self._models: dict[str, tuple[int, torch.nn.Module]] = {}  # agent id -> (version, model)

    def build(self, agent: Agent, data: bytes, db: Connection | None = None) -> torch.nn.Module:
        """A fresh model of the agent from its stored weights `data` (`db`: the
        connection to read anything else through, inside a transaction)."""
        model = GPT(GPTConfig.from_genome(agent.genome, self.vocab_size, agent.block_size))
        try:
            load_weights_bytes(model, data)
        except RuntimeError as error:
            raise GenesisError(f"{self.store.name}: agent {agent.id}: its weights do not fit its genome: "
                               f"{error}") from None
        return model.eval()

    def serialize(self, model: torch.nn.Module) -> bytes:
        """A model's weights as stored."""
        return weights_bytes(model)

    def _rows(self, agent_ids: Sequence[str], columns, db: Connection | None = None) -> dict[str, tuple]:
        query = sa.select(weights_table.c.agent, *columns).where(weights_table.c.agent.in_(list(agent_ids)))
        with self.store.reading(db) as reader:
            return {row[0]: tuple(row[1:]) for row in reader.execute(query)}

    def load_many(self, agents: Sequence[Agent], db: Connection | None = None,
                  skip_missing: bool = False) -> dict[str, tuple[int, torch.nn.Module]]:
        """Each agent's current version and a fresh model of it (not cached, free to
        change), read in one query; with `skip_missing`, only those that still have
        weights (another process may have retired an agent and dropped them meanwhile)."""
        found = self._rows([a.id for a in agents], (weights_table.c.version, weights_table.c.data), db)
        for agent in agents:
            if agent.id not in found and not skip_missing:
                raise GenesisError(f"{self.store.name}: agent {agent.id} has no weights")
        return {a.id: (found[a.id][0], self.build(a, found[a.id][1], db)) for a in agents if a.id in found}

    def load(self, agent: Agent, db: Connection | None = None) -> tuple[int, torch.nn.Module]:
        """The agent's current version and a fresh model of it (not cached, free to change)."""
        return self.load_many([agent], db)[agent.id]

    def models(self, agents: Sequence[Agent]) -> list[torch.nn.Module]:
        """The agents' current models: one query for their versions and one for the
        weights of those that changed since they were cached."""
        versions = self.versions(agents)
        gone = [a.id for a in agents if a.id not in versions]
        if gone:  # long retired: `forget_retired_weights` dropped them
            raise NotFound(f"{self.store.name}: agent {gone[0]} retired long ago; its weights are gone")
        self._models.update(self.load_many([a for a in agents if self._models.get(a.id, (None,))[0]
                                            != versions[a.id]]))
        return [self._models[a.id][1] for a in agents]

    def model(self, agent: Agent) -> torch.nn.Module:
        """The agent's current model (cached per version)."""
        return self.models([agent])[0]

    def versions(self, agents: Sequence[Agent]) -> dict[str, int]:
        """How many learning updates each agent's current weights carry (0 at birth)."""
        return {agent_id: version for agent_id, (version,) in self._rows([a.id for a in agents],
                                                                         (weights_table.c.version,)).items()}

    def version(self, agent: Agent) -> int:
        """How many learning updates the agent's current weights carry (0 at birth)."""
        return self.versions([agent])[agent.id]

    def embedding(self, agent: Agent) -> np.ndarray:
        """The agent's token embedding table, (vocab, d_model)."""
        return self.model(agent).tok_emb.weight.detach().numpy().copy()

    def create(self, db: Connection, agent_id: str, base: str | None, data: bytes) -> None:
        """Store a newborn agent's weights (version 0), in the transaction that adds its row."""
        db.execute(weights_table.insert().values(agent=agent_id, base=base, version=0, data=data))

    def born(self, db: Connection, agent_id: str, bundle: Bundle, base: tuple[str, bytes], identity_seed: int) -> None:
        """Store a first-generation agent: a copy of its bundle's weights (`base`: their
        id and bytes, read once per bundle).

        Raises:
            GenesisError: the bundle is an agent with an adapter (it seeds adapter colonies).
        """
        if bundle.adapter is not None:
            raise GenesisError(f"{bundle.path} is an agent with an adapter: it seeds colonies of adapter agents")
        self.create(db, agent_id, None, base[1])

    def exported(self, agent: Agent) -> tuple[bytes, lora.Adapter | None]:
        """What an agent leaves its colony with: the bytes of model.safetensors and, for
        an adapter agent, its adapter."""
        return self._rows([agent.id], (weights_table.c.data,))[agent.id][0], None

    def divide(self, db: Connection, parent: Agent, child_id: str, identity_seed: int) -> None:
        """Store the child's weights: the parent's plus N(0, σ²), drawn from the child's seed."""
        _, model = self.load(parent, db)
        self.create(db, child_id, None, self.serialize(mutate_weights(model, parent.genome.sigma, identity_seed)))

    def adapt(self, agents: Sequence[Agent], sequences: Sequence[Sequence[int]], steps: int,
              learning_rate: float) -> None:
        """Every agent takes `steps` optimizer steps on `sequences`, on top of its newest
        weights: an agent another process updated meanwhile learns again from those.

        Raises:
            GenesisError: other processes kept updating the same agents `MAX_TRIES` times.
        """
        if steps <= 0 or not sequences:
            return
        pending = list(agents)
        for _ in range(MAX_TRIES):
            pending = self._learn(pending, sequences, steps, learning_rate)
            if not pending:
                return
        raise GenesisError(f"{self.store.name}: {len(pending)} agents kept changing under learning; try again")

    def _learn(self, agents: Sequence[Agent], sequences, steps: int, learning_rate: float) -> list[Agent]:
        """One round of learning; returns the agents whose save lost a race (an agent
        whose weights are gone meanwhile retired long ago: it learns no more)."""
        lost = []
        for agent in agents:
            loaded = self.load_many([agent], skip_missing=True)
            if not loaded:
                continue
            version, model = loaded[agent.id]
            adapt_model(model, sequences, steps, learning_rate)
            if not self._save([(agent, version, model)]):
                lost.append(agent)
        return lost

    def _save(self, learned: Sequence[tuple[Agent, int, torch.nn.Module]]) -> list[Agent]:
        """Store each model as version+1 where the agent is still at `version`; returns
        the agents saved (the others were updated by someone else meanwhile)."""
        blobs = [self.serialize(model) for _, _, model in learned]  # before taking the write lock
        saved = []
        with self.store.write() as db:
            for (agent, version, model), data in zip(learned, blobs):
                changed = db.execute(weights_table.update().where(weights_table.c.agent == agent.id,
                                                                  weights_table.c.version == version)
                                     .values(version=version + 1, data=data)).rowcount
                if changed:
                    saved.append(agent)
                    self._models[agent.id] = (version + 1, model)
        return saved

    def predictor(self, agents: Sequence[Agent], temperature: float) -> Callable[[Sequence[int]], torch.Tensor]:
        """A function from a context to each agent's next-token distribution, shape
        (agents, vocab); the agents' weights are read once, here."""
        models = self.models(agents)
        return lambda tokens: torch.stack([next_token_probs(m, tokens, temperature) for m in models])

    def continuation_probs(self, agents: Sequence[Agent], context: Sequence[int],
                           continuation: Sequence[int]) -> torch.Tensor:
        """Each agent's teacher-forced probabilities of `continuation`, shape (agents, T)."""
        return torch.stack([continuation_token_probs(m, context, continuation) for m in self.models(agents)])


class AdapterWeights(FullWeights):
    """Every agent a low-rank adapter over a shared base; models are `AdaptedModel`s."""

    def __init__(self, store: Store, vocab_size: int, rank: int):
        super().__init__(store, vocab_size)
        self.rank = rank
        self._bases: dict[str, tuple[GPT, dict[str, lora.LoRALinear]]] = {}
        self._base_ids: dict[str, str] = {}

    def base_of(self, agent: Agent, db: Connection | None = None) -> str:
        """The id of the base the agent's adapter sits on (fixed at birth).

        Raises:
            GenesisError: the stored base id is not a base id.
        """
        return self.bases_of([agent], db)[agent.id]

    def bases_of(self, agents: Sequence[Agent], db: Connection | None = None) -> dict[str, str]:
        """`base_of` for several agents, the ones not yet known read in one query."""
        unknown = [a.id for a in agents if a.id not in self._base_ids]
        found = self._rows(unknown, (weights_table.c.base,), db) if unknown else {}
        for agent_id in unknown:
            base_id = found.get(agent_id, (None,))[0]
            if not isinstance(base_id, str) or not BASE_ID.fullmatch(base_id):
                raise GenesisError(f"{self.store.name}: agent {agent_id}: {base_id!r} is not a base id")
            self._base_ids[agent_id] = base_id
        return {a.id: self._base_ids[a.id] for a in agents}

    def load_many(self, agents: Sequence[Agent], db: Connection | None = None,
                  skip_missing: bool = False) -> dict[str, tuple[int, torch.nn.Module]]:
        if skip_missing:
            agents = self._with_weights(agents)
        self.bases_of(agents, db)  # one query for the base ids the models are built on
        return super().load_many(agents, db, skip_missing)

    def _with_weights(self, agents: Sequence[Agent]) -> list[Agent]:
        """The agents whose weights are still stored."""
        present = self.versions(agents)
        return [a for a in agents if a.id in present]

    def base(self, agent: Agent, db: Connection | None = None) -> tuple[GPT, dict[str, lora.LoRALinear]]:
        """The agent's base model (frozen, with its adapter wrappers), loaded once."""
        return self.load_base(self.base_of(agent, db), agent.genome, agent.block_size, db)

    def load_base(self, base_id: str, genome, block_size: int,
                  db: Connection | None = None) -> tuple[GPT, dict[str, lora.LoRALinear]]:
        """Base `base_id` built for `genome` (its weights must fit it), loaded once."""
        if base_id not in self._bases:
            model = GPT(GPTConfig.from_genome(genome, self.vocab_size, block_size))
            try:
                load_weights_bytes(model, self._base_bytes(base_id, db))
            except RuntimeError as error:
                raise GenesisError(f"{self.store.name}: base {base_id} does not fit its agents: {error}") from None
            self._bases[base_id] = (model.eval(), lora.attach(model))
        return self._bases[base_id]

    def build(self, agent: Agent, data: bytes, db: Connection | None = None) -> torch.nn.Module:
        base_model, wrappers = self.base(agent, db)
        try:
            adapter = lora.load_adapter(data, wrappers, self.rank)
        except ValueError as error:
            raise GenesisError(f"{self.store.name}: agent {agent.id}: {error}") from None
        return lora.AdaptedModel(base_model, wrappers, adapter).eval()

    def serialize(self, model: torch.nn.Module) -> bytes:
        return lora.adapter_bytes(model.tensors())

    def adapter(self, agent: Agent) -> lora.Adapter:
        """The agent's current adapter, checked against its base."""
        return self.model(agent).tensors()

    def exported(self, agent: Agent) -> tuple[bytes, lora.Adapter | None]:
        return self._base_bytes(self.base_of(agent)), self.adapter(agent)

    def _base_bytes(self, base_id: str, db: Connection | None = None) -> bytes:
        with self.store.reading(db) as reader:
            data = reader.execute(sa.select(bases_table.c.data).where(bases_table.c.id == base_id)).scalar()
        if data is None:
            raise GenesisError(f"{self.store.name}: no base {base_id}")
        return data

    def embedding(self, agent: Agent) -> np.ndarray:
        return self.base(agent)[0].tok_emb.weight.detach().numpy().copy()

    def born(self, db: Connection, agent_id: str, bundle: Bundle, base: tuple[str, bytes], identity_seed: int) -> None:
        """Store a first-generation agent over its bundle's weights (`base`: their id and
        bytes, stored once): an adapter drawn from its identity seed or, for a bundle
        exported with an adapter, that adapter plus N(0, σ²) from the seed.

        Raises:
            GenesisError: the bundle's adapter has another rank than the colony's.
        """
        genome, (base_id, data) = bundle.genome, base
        if base_id not in self._bases and db.execute(
                sa.select(bases_table.c.id).where(bases_table.c.id == base_id)).first() is None:
            db.execute(bases_table.insert().values(id=base_id, data=data))
        _, wrappers = self.load_base(base_id, genome, bundle.manifest["block_size"], db)
        if bundle.adapter is None:
            adapter = lora.new_adapter(wrappers, self.rank, genome.sigma, identity_seed)
        elif lora.rank_of(bundle.adapter) != self.rank:
            raise GenesisError(f"{bundle.path}: its adapter has rank {lora.rank_of(bundle.adapter)}, the colony's "
                               f"adapters rank {self.rank} (seed with --rank {lora.rank_of(bundle.adapter)})")
        else:
            adapter = lora.mutate_adapter(bundle.adapter, genome.sigma, identity_seed)
        self.create(db, agent_id, base_id, lora.adapter_bytes(adapter))

    def divide(self, db: Connection, parent: Agent, child_id: str, identity_seed: int) -> None:
        _, model = self.load(parent, db)
        child = lora.mutate_adapter(model.tensors(), parent.genome.sigma, identity_seed)
        self.create(db, child_id, self.base_of(parent, db), lora.adapter_bytes(child))

    def _learn(self, agents: Sequence[Agent], sequences, steps: int, learning_rate: float) -> list[Agent]:
        """As `FullWeights._learn`, but `LEARN_TOGETHER` agents of a base at a time in one
        batched pass (the same updates as one by one)."""
        groups: dict[str, list[Agent]] = {}
        agents = self._with_weights(agents)  # the others retired long ago meanwhile: they learn no more
        bases = self.bases_of(agents)
        for agent in agents:
            groups.setdefault(bases[agent.id], []).append(agent)
        lost = []
        for group in groups.values():
            base, wrappers = self.base(group[0])
            batch = training_batch(sequences, base.config.block_size)
            if batch is None:
                continue
            for start in range(0, len(group), LEARN_TOGETHER):
                found = self.load_many(group[start:start + LEARN_TOGETHER], skip_missing=True)
                chunk = [agent for agent in group[start:start + LEARN_TOGETHER] if agent.id in found]
                loaded = [found[agent.id] for agent in chunk]
                if not chunk:
                    continue
                learned = lora.learn_together(base, wrappers, [model.tensors() for _, model in loaded], batch,
                                              steps, learning_rate)
                saved = {a.id for a in self._save([(agent, version, lora.AdaptedModel(base, wrappers, adapter).eval())
                                                   for agent, (version, _), adapter in zip(chunk, loaded, learned)])}
                lost += [agent for agent in chunk if agent.id not in saved]
        return lost

    def predictor(self, agents: Sequence[Agent], temperature: float) -> Callable[[Sequence[int]], torch.Tensor]:
        """As `FullWeights.predictor`, one batched pass per base and new token: the adapters
        are stacked once, here, and each base decodes incrementally (`BatchedDecoder`)."""
        compute = self._per_base(agents)
        decoders: dict[int, lora.BatchedDecoder] = {}  # per base batch

        def decode(base, wrappers, stacked):
            key = id(stacked)
            if key not in decoders:
                decoders[key] = lora.BatchedDecoder(base, wrappers, stacked, temperature)
            return decoders[key]

        return lambda tokens: compute(lambda base, wrappers, stacked: decode(base, wrappers, stacked)(tokens))

    def continuation_probs(self, agents: Sequence[Agent], context: Sequence[int],
                           continuation: Sequence[int]) -> torch.Tensor:
        return self._per_base(agents)(lambda base, wrappers, stacked: lora.batched_continuation_probs(
            base, wrappers, stacked, context, continuation))

    def _per_base(self, agents: Sequence[Agent]):
        """Group the agents by base and stack their adapters; returns a function that runs
        `compute(base, wrappers, stacked)` once per base and puts the rows back in the
        agents' order."""
        models, bases = self.models(agents), self.bases_of(agents)
        groups: dict[str, list[int]] = {}
        for index, agent in enumerate(agents):
            groups.setdefault(bases[agent.id], []).append(index)
        batches = [(self.base(agents[rows[0]]), rows, lora.stack([models[i].view() for i in rows]))
                   for rows in groups.values()]

        def compute(run) -> torch.Tensor:
            out: list[torch.Tensor | None] = [None] * len(agents)
            for (base, wrappers), rows, stacked in batches:
                for index, row in zip(rows, run(base, wrappers, stacked)):
                    out[index] = row
            return torch.stack(out)
        return compute


def make_weights(store: Store, vocab_size: int, settings: ColonySettings) -> FullWeights:
    """The agents' weights of the kind `settings.agent_weights` names."""
    if settings.agent_weights == "adapter":
        return AdapterWeights(store, vocab_size, settings.adapter_rank)
    return FullWeights(store, vocab_size)
