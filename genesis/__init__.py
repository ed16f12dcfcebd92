"""genesis: neuroevolution of tiny transformer language models.

The public API; everything else lives in private-by-convention modules behind it.
Importing the package does not import torch.
"""

from __future__ import annotations

from genesis.core.genome import Genome
from genesis.core.recipe import Recipe, load_recipe
from genesis.core.records import Outcome, Record
from genesis.core.space import SearchSpace, load_search_space
from genesis.errors import GenesisError
from genesis.runs.api import Run, evolve, resume
from genesis.runs.sweep import load_table, sweep
from genesis.search.loop import EvolutionConfig, Observer

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
