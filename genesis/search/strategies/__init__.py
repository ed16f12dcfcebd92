"""Search strategies, one module per family, found by name in one registry.

A new strategy is a `Strategy` subclass in its own module plus one line in `_BUILT_IN`
(or, from outside the package, one call to `register_strategy`).
"""

from __future__ import annotations

from typing import Callable

from genesis.search.strategies.aging import Aging
from genesis.search.strategies.base import Strategy
from genesis.search.strategies.generational import NSGA2, Generational
from genesis.search.strategies.optuna import TPE, NSGA2Optuna
from genesis.search.strategies.random_search import RandomSearch

_BUILT_IN: dict[str, Callable[[], Strategy]] = {
    "evolution": Generational,
    "aging": Aging,
    "random": RandomSearch,
    "nsga2": NSGA2,
    "tpe": TPE,
    "nsga2-optuna": NSGA2Optuna,
}
_REGISTRY = dict(_BUILT_IN)


def register_strategy(name: str, factory: Callable[[], Strategy]) -> None:
    """Make `factory()` the strategy called `name` (`--strategy name`, `EvolutionConfig(strategy=name)`).

    A run records only the name: a run of a strategy registered at run time resumes in
    a process that registers it again.
    """
    if name in _BUILT_IN:
        raise ValueError(f"{name!r} is a built-in strategy")
    _REGISTRY[name] = factory


def strategy_names() -> tuple[str, ...]:
    """Every registered strategy, built-in ones first."""
    return tuple(_REGISTRY)


def make_strategy(name: str) -> Strategy:
    """A new instance of the strategy called `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"strategy must be one of {', '.join(_REGISTRY)}, not {name!r}")
    return _REGISTRY[name]()


def multi_objective_strategies() -> tuple[str, ...]:
    """The strategies that can search several objectives at once."""
    return tuple(name for name in _REGISTRY if make_strategy(name).multi_objective)


__all__ = ["Strategy", "make_strategy", "multi_objective_strategies", "register_strategy", "strategy_names"]
