"""How a colony behaves: its settings, fixed when it is seeded."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from genesis.colony.consensus import POLICIES
from genesis.colony.niches import SELECTIONS
from genesis.errors import GenesisError

MAX_RANK = 64  # an adapter file above it is refused: a colony folder may come from someone else


@dataclass(frozen=True)
class ColonySettings:
    """How a colony behaves; fixed when it is seeded.

    Attributes:
        division_threshold: Θ, interactions after which an agent divides.
        population_cap: most agents alive; above it the lowest-fitness ones retire.
        consensus: "softmax" (all agents, weights softmax(fitness / temperature)),
            "top_k" (the `consensus_top_k` fittest agents, equal weights), "posterior"
            (routed per prompt: the softmax prior times each agent's likelihood of the
            prompt's last `routing_tokens` tokens; `genesis.colony.consensus`) or "niche"
            (the softmax of each agent's fitness in the prompt's niche; needs `niches`).
        consensus_temperature: temperature of the softmax over fitness.
        consensus_top_k: agents that answer in top_k mode.
        routing_tokens: the prompt's last tokens whose likelihood routes a posterior consensus.
        routing_temperature: τ, how much that likelihood is tempered (1: the plain posterior).
        answering: under softmax, posterior or niche, only this many agents with the
            largest shares answer, their shares renormalized (sparse routing; 0: all).
        fitness_smoothing: α of the running fitness estimate f ← (1-α)·f + α·loglik.
        learning_rate: AdamW learning rate of continuous learning.
        adapt_steps: optimizer steps each agent takes after feedback (0: no learning).
        learners: only this many agents, those with the largest consensus shares on the
            prompt, learn from its feedback (0: every agent), as a routed expert trains
            only on the data routed to it: the agents heard on a kind of text keep
            learning it, so routing can grow specialists.
        child_steps: optimizer steps a niche leader's newborn child takes on that niche's
            memories, at `child_learning_rate` (0: a child learns only as everyone does).
            Colonies seeded before these existed take `adapt_steps` at `learning_rate`.
        memory_window: recent memories an adaptation trains on.
        agent_weights: "adapter" (each agent a low-rank adapter over its seed bundle's
            frozen base: small, batched, learns without touching the base) or "full"
            (each agent a whole model that learns every weight). Colonies seeded before
            adapters existed are "full".
        adapter_rank: the rank of every adapter matrix.
        learn_from: "similar" (the memories most like the newest feedback) or "recent".
        recall: memories put before a prompt as context when asked (0: none).
        memory_limit: memories kept; beyond it the oldest are forgotten.
        selection: who retires above the cap: "species" (the weakest of the most populous
            architecture, `genesis.colony.niches`: measured better on a topic stream,
            benchmarks/README.md), "fitness" (the lowest, whatever it is) or "niche" (the
            weakest of those dominated in every niche; needs `niches`).
        niches: clusters of the memories (their token tf-idf vectors): the colony's niches (0: none).
            With niches every agent's fitness is also kept per niche, an agent that reaches
            Θ divides only while it leads a niche, and its child learns on that niche's
            memories (`genesis.colony.lifecycle`).
    """

    division_threshold: int = 25
    population_cap: int = 6
    consensus: str = "softmax"
    consensus_temperature: float = 0.1
    consensus_top_k: int = 2
    routing_tokens: int = 16
    routing_temperature: float = 16.0
    answering: int = 0
    fitness_smoothing: float = 0.2
    learning_rate: float = 1e-4
    adapt_steps: int = 1
    learners: int = 0
    child_steps: int = 1
    child_learning_rate: float = 1e-4
    memory_window: int = 8
    agent_weights: str = "adapter"
    adapter_rank: int = 4
    learn_from: str = "similar"
    recall: int = 0
    memory_limit: int = 10_000
    selection: str = "species"
    niches: int = 0

    @classmethod
    def from_stored(cls, stored: dict) -> ColonySettings:
        """The settings a colony's database holds, checked (`validate`): a colony may come
        from someone else. Colonies seeded before adapters, retrieval and species existed
        lack those fields: they hold whole models, learn from the most recent memories,
        retire the least fit and teach children as they teach everyone, so those are
        their defaults, not this class's.

        Raises:
            GenesisError: an unknown setting, or a value out of its range.
        """
        if not isinstance(stored, dict):
            raise GenesisError("the colony's settings are not an object")
        unknown = sorted(set(stored) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise GenesisError(f"the colony's settings hold an unknown setting '{unknown[0]}'")
        older = {"agent_weights": "full", "learn_from": "recent", "selection": "fitness",
                 "child_steps": stored.get("adapt_steps", cls.adapt_steps),
                 "child_learning_rate": stored.get("learning_rate", cls.learning_rate)}
        settings = cls(**{**older, **stored})
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise `GenesisError` for settings a colony cannot run with: a value of another
        type, a non-finite number, or one outside its range (`RANGES`)."""
        for field in dataclasses.fields(self):
            self.checked(field.name, getattr(self, field.name))
        if self.niches == 0 and "niche" in (self.consensus, self.selection):
            raise GenesisError("niche consensus and niche selection need niches (set niches to 2 or more)")

    @classmethod
    def checked(cls, name: str, value):
        """`value`, if setting `name` may take it (as `validate` judges); else `GenesisError`."""
        if name in CHOICES:
            if value not in CHOICES[name]:
                raise GenesisError(f"{name} must be one of {', '.join(CHOICES[name])}, not {value!r}")
            return value
        low, high = RANGES[name]
        kind = next(field.type for field in dataclasses.fields(cls) if field.name == name)
        number = (float, int) if kind == "float" else (int,)
        if (not isinstance(value, number) or isinstance(value, bool) or not math.isfinite(value)
                or not low <= value <= high or (name in POSITIVE and value == 0)):
            bound = f"({low}, {high}]" if name in POSITIVE else f"[{low}, {high}]"
            raise GenesisError(f"{name} must be a finite {kind} in {bound}, not {value!r}")
        return value


CHOICES = {"consensus": POLICIES, "agent_weights": ("adapter", "full"),
           "learn_from": ("similar", "recent"), "selection": SELECTIONS}
# The range of every numeric setting; bounded so that no stored colony makes a process
# loop, learn or allocate without limit.
RANGES = {"division_threshold": (1, 1_000_000), "population_cap": (1, 100_000), "consensus_top_k": (1, 100_000),
          "routing_tokens": (1, 4096), "routing_temperature": (0.0, 1e6), "answering": (0, 100_000),
          "learners": (0, 100_000),
          "consensus_temperature": (0.0, 1e6), "fitness_smoothing": (0.0, 1.0), "learning_rate": (0.0, 1.0),
          "child_learning_rate": (0.0, 1.0), "adapt_steps": (0, 1000), "child_steps": (0, 1000),
          "memory_window": (1, 1000), "adapter_rank": (1, MAX_RANK),
          "recall": (0, 64), "memory_limit": (1, 10_000_000), "niches": (0, 64)}
POSITIVE = ("consensus_temperature", "fitness_smoothing", "routing_temperature")  # zero excluded
