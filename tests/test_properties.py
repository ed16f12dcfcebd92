"""Hypothesis properties of the pure layers above core: every strategy of the search loop,
and the report's statistics. No torch, no training: fitness is a stand-in function."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from genesis.core.records import Outcome
from genesis.core.space import load_search_space
from genesis.report.traitstats import eta_squared, holm
from genesis.search.loop import Evolution, EvolutionConfig
from genesis.search.strategies import strategy_names

SPACE = load_search_space()
BUILT_IN = ("evolution", "aging", "random", "nsga2", "tpe", "nsga2-optuna")


def _stand_in(candidates):
    """A smooth loss with one optimum, and a second objective (size) that disagrees with it."""
    def loss(g):
        return abs(g.d_model - 96) / 32 + abs(g.n_layer - 3) + (g.activation != "silu")
    return [c.to_record(Outcome("ok", val_loss=loss(c.genome), params=c.genome.n_layer * c.genome.d_model ** 2,
                                tokens=100)) for c in candidates]


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(BUILT_IN), st.integers(0, 2**31), st.integers(2, 6))
def test_every_strategy_replays_and_stays_in_the_space(strategy, seed, population):
    config = EvolutionConfig(population_size=population, generations=3, seed=seed, strategy=strategy)
    runs = []
    for _ in range(2):
        loop = Evolution(SPACE, config, _stand_in)
        loop.run()
        runs.append(loop)
    first, second = ([r.genome for r in loop.population] for loop in runs)
    assert first == second  # same seed, same run
    assert list(runs[0].logbook) == list(runs[1].logbook)
    assert all(SPACE.is_valid(g) for g in first) and len(first) == population
    assert set(strategy_names()) >= set(BUILT_IN)


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(("evolution", "nsga2")), st.integers(0, 2**31))
def test_generational_strategies_never_lose_the_best_genome(strategy, seed):
    objectives = ("val_loss",) if strategy == "evolution" else ("val_loss", "params")
    loop = Evolution(SPACE, EvolutionConfig(population_size=6, generations=4, seed=seed, strategy=strategy,
                                            objectives=objectives), _stand_in)
    best_so_far = math.inf
    while not loop.done:
        records = loop.step()
        best_so_far = min(best_so_far, *(r.outcome.val_loss for r in records))
        # elitism (evolution) or survival of the non-dominated (nsga2) keeps the best loss
        assert min(r.outcome.val_loss for r in loop.population) == best_so_far


@given(st.lists(st.one_of(st.none(), st.floats(0, 1)), max_size=12))
def test_holm_never_lowers_a_p_value_and_keeps_their_order(p_values):
    adjusted = holm(p_values)
    pairs = [(p, a) for p, a in zip(p_values, adjusted) if p is not None]
    assert all(a is None for p, a in zip(p_values, adjusted) if p is None)
    assert all(p <= a <= 1 for p, a in pairs)
    assert all(a1 <= a2 for p1, a1 in pairs for p2, a2 in pairs if p1 < p2)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(-10, 10)), min_size=2, max_size=40))
def test_eta_squared_is_a_share_of_variance(pairs):
    values, losses = zip(*pairs)
    eta = eta_squared(values, np.array(losses))
    assert -1e-9 <= eta <= 1 + 1e-9
    if len(set(values)) == len(values):  # every value its own group: all variance is between
        assert eta == 1.0 or np.var(losses) == 0
