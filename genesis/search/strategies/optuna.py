"""Optuna samplers as search strategies: the baselines evolution has to beat.

Each generation, a fresh in-memory study is filled with every genome evaluated so far
(as finished or failed trials) and asked for new parameter sets by TPE or Optuna's
NSGA-II sampler, seeded from the run seed and the generation. Because the sampler state
is rebuilt from the history, a resumed run samples exactly what an uninterrupted one
would. The asked trials are never told: genomes are recorded in the run's own study like
every other evaluation, so reports compare strategies directly.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

from genesis.core.genome import Genome
from genesis.core.space import ChoiceDomain, FloatDomain, IntDomain, SearchSpace
from genesis.search.population import Candidate, Evaluated
from genesis.search.strategies.base import Strategy


class _GenerationalNSGAII(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II whose generations are the run's generations.

    The sampler finds a trial's generation in its system attributes and otherwise counts
    completed trials; trials rebuilt from the history carry the generation they were
    evaluated in, and every trial asked now belongs to the generation being bred, so its
    parents are the elites of all earlier generations (without this, rebuilt trials would
    count as no generation and every proposal would be a random one).
    """

    def __init__(self, generation: int, **kwargs):
        super().__init__(**kwargs)
        self.generation = generation

    def get_trial_generation(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int:
        return trial.system_attrs.get(self._get_generation_key(), self.generation)


class OptunaSampler(Strategy):
    """An Optuna sampler asked for each generation given every genome evaluated so far."""

    multi_objective = True  # TPE as MOTPE, or NSGA-II's non-dominated sorting
    sampler = ""  # "tpe" or "nsga2-optuna"

    def propose(self, loop):
        genomes = sample_genomes(self.sampler, loop.space, list(loop.history.values()),
                                 loop.config.population_size, generation_seed(loop.config.seed, loop.generation),
                                 loop.generation)
        return [Candidate(loop.generation, i, g, (), self.sampler) for i, g in enumerate(genomes)]


class TPE(OptunaSampler):
    """Optuna's tree-structured Parzen estimator (MOTPE with several objectives)."""

    sampler = "tpe"


class NSGA2Optuna(OptunaSampler):
    """Optuna's NSGA-II sampler, its generations being the run's generations."""

    sampler = "nsga2-optuna"


def sample_genomes(strategy: str, space: SearchSpace, history: Sequence[Evaluated], count: int,
                   seed: int, generation: int, attempts: int = 10) -> list[Genome]:
    """Ask an Optuna sampler for `count` new genomes given the evaluated `history`.

    Args:
        strategy: "tpe" or "nsga2-optuna".
        space: the search space (distributions and repair).
        history: every genome evaluated so far; with several objective values the
            study is multi-objective (NSGA-II's non-dominated sorting, or TPE as MOTPE).
        count: genomes wanted.
        seed: the sampler's seed.
        generation: the generation being bred.
        attempts: asks per genome before a repeat of a known genome is accepted.
    """
    if strategy == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed)
    else:
        sampler = _GenerationalNSGAII(generation, seed=seed, population_size=max(2, count))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        objectives = len(history[0].values) if history else 1
        study = optuna.create_study(directions=["minimize"] * objectives, sampler=sampler)
        dists = distributions(space)
        full = max((entry.tokens for entry in history), default=0)
        for genome, values, evaluated_in, tokens in history:
            study.add_trial(_trial(genome, values, tokens < full, tokens, dists,
                                   {sampler._get_generation_key(): evaluated_in}
                                   if isinstance(sampler, _GenerationalNSGAII) else None))
        seen = {entry.genome for entry in history}
        genomes: list[Genome] = []
        for _ in range(count):
            for _ in range(attempts):
                genome = space.repair(Genome(**study.ask(dists).params))
                if genome not in seen:
                    break
            seen.add(genome)
            genomes.append(genome)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return genomes


def _trial(genome: Genome, values: tuple[float, ...], lower_fidelity: bool, tokens: int,
           dists: dict, system_attrs: dict | None) -> optuna.trial.FrozenTrial:
    """An evaluated genome as a finished Optuna trial. A failure is a failed trial; a
    lower-fidelity result (a lower rung, an early stop) is a pruned one, so that samplers
    compare values at equal fidelity: TPE ranks it below every complete trial by the
    value it reached (single objective), NSGA-II leaves it out."""
    params = {name: getattr(genome, name) for name in dists}
    if not all(math.isfinite(v) for v in values):
        return create_trial(params=params, distributions=dists, state=TrialState.FAIL,
                            system_attrs=system_attrs)
    if lower_fidelity:
        return create_trial(params=params, distributions=dists, state=TrialState.PRUNED,
                            intermediate_values={tokens: values[0]} if len(values) == 1 else None,
                            system_attrs=system_attrs)
    return create_trial(params=params, distributions=dists, values=list(values),
                        state=TrialState.COMPLETE, system_attrs=system_attrs)


def generation_seed(run_seed: int, generation: int) -> int:
    """A sampler seed for one generation, fixed by the run seed."""
    return random.Random(f"{run_seed}:{generation}").getrandbits(32)


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """Optuna distributions for the traits of a search space.

    Evenly spaced integers become an `IntDistribution` with their step, other integer
    sets and categorical traits a `CategoricalDistribution`, log floats a log-scale
    `FloatDistribution`.
    """
    result: dict[str, BaseDistribution] = {}
    for name, domain in space.domains.items():
        if isinstance(domain, IntDomain):
            values = domain.values
            steps = {b - a for a, b in zip(values, values[1:])}
            if len(steps) <= 1:
                result[name] = IntDistribution(values[0], values[-1], step=steps.pop() if steps else 1)
            else:
                result[name] = CategoricalDistribution(values)
        elif isinstance(domain, ChoiceDomain):
            result[name] = CategoricalDistribution(domain.values)
        elif isinstance(domain, FloatDomain):
            result[name] = FloatDistribution(domain.low, domain.high)
        else:
            result[name] = FloatDistribution(domain.low, domain.high, log=True)
    return result
