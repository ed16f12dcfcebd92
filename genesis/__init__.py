"""genesis: neuroevolution of tiny transformer language models.

The public API: everything the command line does, as functions and classes. The code
behind it lives in packages by layer (core, search, train, runs, report, colony, cli).
Importing the package is light (no torch, scipy or matplotlib): the names that need
them (reports, bundles, the colony) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from genesis.core.genome import Genome
from genesis.core.recipe import Recipe, load_recipe
from genesis.core.records import Outcome, Record
from genesis.core.space import SearchSpace, load_search_space
from genesis.errors import GenesisError
from genesis.report.sections import register_section
from genesis.runs.api import evolve, resume
from genesis.runs.backends import register_backend
from genesis.runs.reader import Run
from genesis.runs.settings import EvaluatorSettings, NoiseSettings
from genesis.runs.store import list_runs
from genesis.runs.sweep import load_table, sweep
from genesis.search.loop import EvolutionConfig, Observer
from genesis.search.strategies import Strategy, register_strategy

_LAZY = {  # name -> module; these import torch, or scipy and matplotlib
    "build_report": "genesis.report.build",
    "compare": "genesis.report.render",
    "write_comparison": "genesis.report.render",
    "write_report": "genesis.report.render",
    "Bundle": "genesis.colony.bundle",
    "export_champions": "genesis.colony.bundle",
    "load_agent": "genesis.colony.bundle",
    "load_bundle": "genesis.colony.bundle",
    "export_agent": "genesis.colony.export",
    "upgrade_colony": "genesis.colony.upgrade",
    "Colony": "genesis.colony.colony",
    "ColonySettings": "genesis.colony.settings",
    "simulate": "genesis.colony.simulate",
    "generate": "genesis.train.generate",
    "TensorBoardLogger": "genesis.report.tensorboard",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genesis' has no attribute {name!r}")


__all__ = [
    "Bundle",
    "Colony",
    "ColonySettings",
    "EvaluatorSettings",
    "EvolutionConfig",
    "GenesisError",
    "Genome",
    "NoiseSettings",
    "Observer",
    "Outcome",
    "Recipe",
    "Record",
    "Run",
    "SearchSpace",
    "Strategy",
    "TensorBoardLogger",
    "build_report",
    "compare",
    "evolve",
    "export_agent",
    "export_champions",
    "generate",
    "list_runs",
    "load_agent",
    "load_bundle",
    "load_recipe",
    "load_search_space",
    "load_table",
    "register_backend",
    "register_section",
    "register_strategy",
    "resume",
    "simulate",
    "sweep",
    "upgrade_colony",
    "write_comparison",
    "write_report",
]
