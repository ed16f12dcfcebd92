"""What every search strategy is: a way to propose a generation and to pick who lives on.

The generation loop (`genesis.search.loop.Evolution`) draws the first generation at
random for every strategy, evaluates each generation and keeps the books; a strategy
only decides what to evaluate next and which records form the population it breeds from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from genesis.core.records import Record
from genesis.search.population import Candidate

if TYPE_CHECKING:  # the loop hands itself to its strategy
    from genesis.search.loop import Evolution


class Strategy:
    """A search strategy. Subclass it, override `propose` (and `survivors` if the
    population is not simply the last generation), and register it with
    `genesis.search.strategies.register_strategy`.

    Attributes:
        multi_objective: whether it can search several objectives at once.
    """

    multi_objective = False

    def propose(self, loop: Evolution) -> list[Candidate]:
        """The candidates of generation `loop.generation` (never the first: that one is
        random for every strategy). Everything a strategy needs is on the loop: its
        `config`, `space`, `rng` (the only randomness allowed: runs must replay),
        `population`, `history` of every genome evaluated and `hall_of_fame`."""
        raise NotImplementedError

    def survivors(self, loop: Evolution, records: list[Record]) -> list[Record]:
        """The population after a generation was evaluated; by default the generation."""
        return records
