"""genesis: neuroevolution of tiny transformer language models.

The public API; everything else lives in private-by-convention modules behind it.
Importing the package does not import torch.
"""

from __future__ import annotations

from genesis.errors import GenesisError
from genesis.evolution import EvolutionConfig, Observer
from genesis.genome import Genome
from genesis.recipe import Recipe, load_recipe
from genesis.records import Outcome, Record
from genesis.run import Run, evolve, resume
from genesis.space import SearchSpace, load_search_space
from genesis.sweep import load_table, sweep

__all__ = [
    "EvolutionConfig",
    "GenesisError",
    "Genome",
    "Observer",
    "Outcome",
    "Recipe",
    "Record",
    "Run",
    "SearchSpace",
    "evolve",
    "load_recipe",
    "load_search_space",
    "load_table",
    "resume",
    "sweep",
]
