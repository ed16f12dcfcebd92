"""Genetic operators over genomes: uniform crossover and per-trait mutation.

Each operator takes its own `random.Random`, never the global one, and returns repaired
genomes that are valid in the search space.
"""

from __future__ import annotations

import random

from genesis.core.genome import Genome
from genesis.core.space import SearchSpace


def crossover_uniform(
    first: Genome, second: Genome, space: SearchSpace, rng: random.Random, swap_prob: float = 0.5
) -> tuple[Genome, Genome]:
    """Swap each trait between two parents with probability `swap_prob`.

    Returns two children; each trait of a child comes from one of the parents. When a
    child's inherited `n_head` does not split its `d_model`, it takes the other parent's
    `n_head` if that fits, and is repaired only when neither does.
    """
    left, right = first.to_dict(), second.to_dict()
    for name in space.domains:  # traits the space does not search are equal in both parents
        if rng.random() < swap_prob:
            left[name], right[name] = right[name], left[name]
    for child, other in ((left, right), (right, left)):
        if not space.head_fits(child["d_model"], child["n_head"]):
            if space.head_fits(child["d_model"], other["n_head"]):
                child["n_head"] = other["n_head"]
    return space.repair(Genome(**left)), space.repair(Genome(**right))


def mutate(genome: Genome, space: SearchSpace, rng: random.Random, trait_prob: float = 0.3) -> Genome:
    """Mutate each trait with probability `trait_prob`, and at least one trait.

    Integer traits step to a neighbouring value, categorical traits are resampled and
    `sigma` undergoes log-normal self-adaptation (see `space.LogFloatDomain`).
    """
    searched = list(space.domains)
    names = [name for name in searched if rng.random() < trait_prob]
    if not names:
        names = [rng.choice(searched)]
    traits = genome.to_dict()
    for name in names:
        traits[name] = space.domains[name].mutate(traits[name], rng)
    return space.repair(Genome(**traits))
