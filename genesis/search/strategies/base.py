"""What every search strategy is: a way to propose a generation and to pick who lives on.

The generation loop (`genesis.search.loop.Evolution`) draws the first generation at
random for every strategy, evaluates each generation and keeps the books; a strategy
only decides what to evaluate next and which records form the population it breeds from.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from genesis.core.records import Record
from genesis.core.space import SearchSpace
from genesis.search.fitness import Individual
from genesis.search.population import Candidate


class SearchState(Protocol):
    """What a strategy may read of the generation loop that hands itself over
    (`genesis.search.loop.Evolution` is one): declared here, so strategies sit below
    the loop and import nothing of it."""

    config: Any  # the run's `EvolutionConfig`
    space: SearchSpace
    rng: random.Random  # the only randomness allowed: runs must replay
    generation: int
    population: list[Record]
    history: dict[str, Any]  # every genome evaluated, by id
    hall_of_fame: Any  # DEAP's HallOfFame of the best individuals
    toolbox: Any  # DEAP's toolbox: select, mate, mutate

    def individual(self, record: Record) -> Individual:
        """A record as a DEAP individual."""


class Strategy:
    """A search strategy. Subclass it, override `propose` (and `survivors` if the
    population is not simply the last generation), and register it with
    `genesis.search.strategies.register_strategy`.

    Attributes:
        multi_objective: whether it can search several objectives at once.
    """

    multi_objective = False

    def propose(self, loop: SearchState) -> list[Candidate]:
        """The candidates of generation `loop.generation` (never the first: that one is
        random for every strategy). Everything a strategy needs is on the loop: its
        `config`, `space`, `rng` (the only randomness allowed: runs must replay),
        `population`, `history` of every genome evaluated and `hall_of_fame`."""
        raise NotImplementedError

    def survivors(self, loop: SearchState, records: list[Record]) -> list[Record]:
        """The population after a generation was evaluated; by default the generation."""
        return records
