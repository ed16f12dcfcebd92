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
from optuna.trial import TrialState, create_trial

from genesis.genome import Genome
from genesis.space import SearchSpace
from genesis.study import distributions

OPTUNA_STRATEGIES = ("tpe", "nsga2-optuna")


def sample_genomes(strategy: str, space: SearchSpace, history: Sequence[tuple[Genome, float]],
                   count: int, seed: int, attempts: int = 10) -> list[Genome]:
    """Ask an Optuna sampler for `count` new genomes given the evaluated `history`.

    Args:
        strategy: "tpe" or "nsga2-optuna".
        space: the search space (distributions and repair).
        history: (genome, fitness) of every genome evaluated so far; inf for failures.
        count: genomes wanted.
        seed: the sampler's seed.
        attempts: asks per genome before a repeat of a known genome is accepted.
    """
    sampler = (optuna.samplers.TPESampler(seed=seed) if strategy == "tpe"
               else optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, count)))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="minimize", sampler=sampler)
        dists = distributions(space)
        for genome, fitness in history:
            finite = math.isfinite(fitness)
            study.add_trial(create_trial(
                params={name: getattr(genome, name) for name in dists}, distributions=dists,
                value=fitness if finite else None,
                state=TrialState.COMPLETE if finite else TrialState.FAIL))
        seen = {genome for genome, _ in history}
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


def generation_seed(run_seed: int, generation: int) -> int:
    """A sampler seed for one generation, fixed by the run seed."""
    return random.Random(f"{run_seed}:{generation}").getrandbits(32)
