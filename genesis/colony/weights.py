"""The agents' weights, in either of a colony's two kinds:

- `FullWeights`: each agent a whole µLM in `agents/<id>.safetensors` (a few MB each);
- `AdapterWeights`: each agent a low-rank adapter in `agents/<id>.safetensors` (tens of
  KB) over a shared, frozen base in `bases/<base id>.safetensors` (see
  `genesis.colony.adapters`); the adapter file names its base in its metadata.

Both derive every path from an id inside the colony folder, refuse symbolic links, cache
loaded models per file version, and give each agent a lock to learn under. Both answer
for many agents at once: the adapter kind in one batched pass per base.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from filelock import FileLock

from genesis.colony import adapters as lora
from genesis.colony.database import AGENT_ID, Agent
from genesis.colony.learning import adapt_model, mutate_weights, training_batch
from genesis.errors import GenesisError
from genesis.train.generate import continuation_token_probs, next_token_probs
from genesis.train.model import GPT, GPTConfig, load_weights, save_weights, weights_metadata

BASE_ID = re.compile(r"b[0-9a-f]{8}")
LEARN_TOGETHER = 16  # adapters trained in one batched pass (memory: agents x memories x vocab logits)


class FullWeights:
    """Every agent a whole model of its own."""

    def __init__(self, folder: Path, vocab_size: int):
        self.folder = folder
        self.vocab_size = vocab_size
        self._models: dict[tuple[str, int], torch.nn.Module] = {}  # (agent id, file mtime) -> model

    def path(self, agent_id: str) -> Path:
        """Where an agent's weights live.

        Raises:
            GenesisError: not an agent id, or the file is a symbolic link.
        """
        return _inside(self.folder, "agents", agent_id, AGENT_ID, "an agent id")

    def load(self, agent: Agent) -> torch.nn.Module:
        """A fresh model with the agent's current weights (not cached, free to change)."""
        model = GPT(GPTConfig.from_genome(agent.genome, self.vocab_size, agent.block_size))
        load_weights(model, self.path(agent.id))
        return model.eval()

    def model(self, agent: Agent) -> torch.nn.Module:
        """The agent's current model, loaded from its file (cached per version)."""
        key = (agent.id, self.path(agent.id).stat().st_mtime_ns)
        if key not in self._models:
            model = self.load(agent)
            self._models = {k: v for k, v in self._models.items() if k[0] != agent.id}
            self._models[key] = model
        return self._models[key]

    def embedding(self, agent: Agent) -> np.ndarray:
        """The agent's token embedding table, (vocab, d_model)."""
        return self.model(agent).tok_emb.weight.detach().numpy().copy()

    def version(self, agent: Agent) -> int:
        """How many learning updates the agent's current weights carry (0 at birth)."""
        return int(weights_metadata(self.path(agent.id)).get("version", "0"))

    def save(self, agent: Agent, model: torch.nn.Module, version: int) -> None:
        """Write an agent's weights (atomically) as `version` (one more than the version
        they were loaded at), and keep the loaded model current."""
        path = self.path(agent.id)
        save_weights(model, path, {"version": str(version)})
        self._remember(agent, path, model)

    def lock(self, agent: Agent) -> FileLock:
        """The agent's lock: load, learn and save under it, so no update is lost."""
        return FileLock(str(self.path(agent.id).with_suffix(".lock")))

    def adapt(self, agents: Sequence[Agent], sequences: Sequence[Sequence[int]], steps: int,
              learning_rate: float) -> None:
        """Every agent takes `steps` optimizer steps on `sequences`. Each loads, learns and
        saves under its lock: a process that learns at the same time waits and then learns
        on top of these weights, so no update is lost."""
        for agent in agents:
            with self.lock(agent):
                loaded = self.version(agent)
                model = self.model(agent)
                adapt_model(model, sequences, steps, learning_rate)
                self.save(agent, model, loaded + 1)

    def divide(self, parent: Agent, child_id: str, identity_seed: int) -> None:
        """Write the child's weights: the parent's plus N(0, σ²), from the child's seed."""
        child = mutate_weights(self.load(parent), parent.genome.sigma, identity_seed)
        save_weights(child, self.path(child_id))

    def predictor(self, agents: Sequence[Agent], temperature: float) -> Callable[[Sequence[int]], torch.Tensor]:
        """A function from a context to each agent's next-token distribution, shape
        (agents, vocab); the agents' weights are read once, here."""
        models = [self.model(a) for a in agents]
        return lambda tokens: torch.stack([next_token_probs(m, tokens, temperature) for m in models])

    def continuation_probs(self, agents: Sequence[Agent], context: Sequence[int],
                           continuation: Sequence[int]) -> torch.Tensor:
        """Each agent's teacher-forced probabilities of `continuation`, shape (agents, T)."""
        return torch.stack([continuation_token_probs(self.model(a), context, continuation) for a in agents])

    def _remember(self, agent: Agent, path: Path, model: torch.nn.Module) -> None:
        self._models = {k: v for k, v in self._models.items() if k[0] != agent.id}
        self._models[(agent.id, path.stat().st_mtime_ns)] = model


class AdapterWeights(FullWeights):
    """Every agent a low-rank adapter over a shared base; models are `AdaptedModel`s."""

    def __init__(self, folder: Path, vocab_size: int, rank: int):
        super().__init__(folder, vocab_size)
        self.rank = rank
        self._bases: dict[str, tuple[GPT, dict[str, lora.LoRALinear]]] = {}
        self._base_ids: dict[str, str] = {}

    def base_path(self, base_id: str) -> Path:
        """Where a base's weights live.

        Raises:
            GenesisError: not a base id, or the file is a symbolic link.
        """
        return _inside(self.folder, "bases", base_id, BASE_ID, "a base id")

    def base_of(self, agent: Agent) -> str:
        """The id of the base the agent's adapter sits on (fixed at birth)."""
        if agent.id not in self._base_ids:
            self._base_ids[agent.id] = weights_metadata(self.path(agent.id)).get("base", "")
        return self._base_ids[agent.id]

    def base(self, agent: Agent) -> tuple[GPT, dict[str, lora.LoRALinear]]:
        """The agent's base model (frozen, with its adapter wrappers), loaded once."""
        return self.load_base(self.base_of(agent), agent.genome, agent.block_size)

    def load_base(self, base_id: str, genome, block_size: int) -> tuple[GPT, dict[str, lora.LoRALinear]]:
        """Base `base_id` built for `genome` (its weights must fit it), loaded once."""
        if base_id not in self._bases:
            model = GPT(GPTConfig.from_genome(genome, self.vocab_size, block_size))
            load_weights(model, self.base_path(base_id))
            self._bases[base_id] = (model.eval(), lora.attach(model))
        return self._bases[base_id]

    def adapter(self, agent: Agent) -> lora.Adapter:
        """The agent's current adapter, checked against its base."""
        _, wrappers = self.base(agent)
        try:
            return lora.load_adapter(self.path(agent.id), wrappers, self.rank)
        except ValueError as error:
            raise GenesisError(f"agent {agent.id}: {error}") from None

    def embedding(self, agent: Agent) -> np.ndarray:
        return self.base(agent)[0].tok_emb.weight.detach().numpy().copy()

    def load(self, agent: Agent) -> torch.nn.Module:
        base, wrappers = self.base(agent)
        return lora.AdaptedModel(base, wrappers, self.adapter(agent)).eval()

    def save(self, agent: Agent, model: torch.nn.Module, version: int) -> None:
        path = self.path(agent.id)
        lora.save_adapter(model.tensors(), path, {"version": str(version), "base": self.base_of(agent)})
        self._remember(agent, path, model)

    def create(self, agent_id: str, base_id: str, adapter: lora.Adapter) -> None:
        """Write a newborn agent's adapter over base `base_id`."""
        lora.save_adapter(adapter, self.path(agent_id), {"version": "0", "base": base_id})

    def born(self, agent_id: str, base_id: str, genome, block_size: int, identity_seed: int) -> None:
        """Write a first-generation agent: an adapter drawn from its identity seed."""
        _, wrappers = self.load_base(base_id, genome, block_size)
        self.create(agent_id, base_id, lora.new_adapter(wrappers, self.rank, genome.sigma, identity_seed))

    def adapt(self, agents: Sequence[Agent], sequences: Sequence[Sequence[int]], steps: int,
              learning_rate: float) -> None:
        """As `FullWeights.adapt`, but `LEARN_TOGETHER` agents of a base at a time in one
        batched pass (the same updates as one by one), each under its lock."""
        groups: dict[str, list[Agent]] = {}
        for agent in agents:
            groups.setdefault(self.base_of(agent), []).append(agent)
        for group in groups.values():
            base, wrappers = self.base(group[0])
            batch = training_batch(sequences, base.config.block_size)
            if batch is None or steps <= 0:
                continue
            for start in range(0, len(group), LEARN_TOGETHER):
                chunk = sorted(group[start:start + LEARN_TOGETHER], key=lambda a: a.id)  # one lock order
                with contextlib.ExitStack() as locks:
                    for agent in chunk:
                        locks.enter_context(self.lock(agent))
                    loaded = [self.version(agent) for agent in chunk]
                    learned = lora.learn_together(base, wrappers, [self.adapter(a) for a in chunk], batch,
                                                  steps, learning_rate)
                    for agent, version, adapter in zip(chunk, loaded, learned):
                        self.save(agent, lora.AdaptedModel(base, wrappers, adapter).eval(), version + 1)

    def divide(self, parent: Agent, child_id: str, identity_seed: int) -> None:
        child = lora.mutate_adapter(self.adapter(parent), parent.genome.sigma, identity_seed)
        self.create(child_id, self.base_of(parent), child)

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
        groups: dict[str, list[int]] = {}
        for index, agent in enumerate(agents):
            groups.setdefault(self.base_of(agent), []).append(index)
        batches = [(self.base(agents[rows[0]]), rows, lora.stack([self.model(agents[i]).tensors() for i in rows]))
                   for rows in groups.values()]

        def compute(run) -> torch.Tensor:
            out: list[torch.Tensor | None] = [None] * len(agents)
            for (base, wrappers), rows, stacked in batches:
                for index, row in zip(rows, run(base, wrappers, stacked)):
                    out[index] = row
            return torch.stack(out)
        return compute


def _inside(folder: Path, subfolder: str, name: str, pattern: re.Pattern, what: str) -> Path:
    """`folder/subfolder/<name>.safetensors`, for a `name` that matches `pattern` (so it
    stays inside the folder) and a file that is no symbolic link."""
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise GenesisError(f"{name!r} is not {what}")
    path = folder / subfolder / f"{name}.safetensors"
    if path.is_symlink() or (folder / subfolder).is_symlink():
        raise GenesisError(f"{path} is a symbolic link; a colony keeps its weights inside its folder")
    return path
