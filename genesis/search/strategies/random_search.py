"""Random search: every generation is sampled anew. The baseline any search must beat."""

from __future__ import annotations

from genesis.search.population import random_candidates
from genesis.search.strategies.base import Strategy


class RandomSearch(Strategy):
    """Each generation draws `population_size` new genomes from the space."""

    def propose(self, loop):
        return random_candidates(loop.space, loop.rng, loop.config.population_size, loop.generation)
