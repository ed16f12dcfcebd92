"""How a colony behaves: its settings, fixed when it is seeded."""

from __future__ import annotations

from dataclasses import dataclass

from genesis.errors import GenesisError

MAX_RANK = 64  # an adapter file above it is refused: a colony folder may come from someone else


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
        agent_weights: "adapter" (each agent a low-rank adapter over its seed bundle's
            frozen base: small, batched, learns without touching the base) or "full"
            (each agent a whole model that learns every weight). Colonies seeded before
            adapters existed are "full".
        adapter_rank: the rank of every adapter matrix.
        learn_from: "similar" (the memories most like the newest feedback) or "recent".
        recall: memories put before a prompt as context when asked (0: none).
        memory_limit: memories kept; beyond it the oldest are forgotten.
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
    agent_weights: str = "adapter"
    adapter_rank: int = 4
    learn_from: str = "similar"
    recall: int = 0
    memory_limit: int = 10_000

    @classmethod
    def from_stored(cls, stored: dict) -> ColonySettings:
        """The settings a colony's database holds. Colonies seeded before adapters and
        retrieval existed lack those fields: they hold whole models and learn from the
        most recent memories, so those are their defaults, not this class's."""
        return cls(**{"agent_weights": "full", "learn_from": "recent", **stored})

    def validate(self) -> None:
        """Raise `GenesisError` for settings a colony cannot run with."""
        if self.consensus not in ("softmax", "top_k"):
            raise GenesisError(f"consensus must be softmax or top_k, not {self.consensus!r}")
        if self.division_threshold < 1 or self.population_cap < 1 or self.consensus_top_k < 1:
            raise GenesisError("division threshold, population cap and top-k must be at least 1")
        if self.agent_weights not in ("adapter", "full"):
            raise GenesisError(f"agent weights must be adapter or full, not {self.agent_weights!r}")
        if self.learn_from not in ("similar", "recent"):
            raise GenesisError(f"learn_from must be similar or recent, not {self.learn_from!r}")
        if self.recall < 0 or self.memory_limit < 1:
            raise GenesisError("recall must be at least 0 and the memory limit at least 1")
        if not 1 <= self.adapter_rank <= MAX_RANK:
            raise GenesisError(f"the adapter rank must be in 1..{MAX_RANK}")
        if self.consensus_temperature <= 0 or not 0 < self.fitness_smoothing <= 1:
            raise GenesisError("consensus temperature must be > 0 and smoothing in (0, 1]")
