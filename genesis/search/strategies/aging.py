"""Aging (regularized) evolution, Real et al. 2019: tournament winners are mutated into
children, and the oldest genomes, not the worst, leave the population."""

from __future__ import annotations

from genesis.search.population import MAX_REDRAWS, Candidate, isolated_random
from genesis.search.strategies.base import Strategy


class Aging(Strategy):
    """Each generation mutates `aging_batch` tournament winners (default half the
    population); the youngest `population_size` genomes live on."""

    def propose(self, loop):
        config = loop.config
        wanted = config.aging_batch or max(1, config.population_size // 2)
        with isolated_random(loop.rng):
            chosen = loop.toolbox.select([loop.individual(r) for r in loop.population], wanted)
        seen = {r.genome for r in loop.population}
        candidates = []
        for index, winner in enumerate(chosen):
            parent = winner.record.genome
            child = loop.toolbox.mutate(parent)
            for _ in range(MAX_REDRAWS):
                if child not in seen:
                    break
                child = loop.toolbox.mutate(child)
            seen.add(child)
            candidates.append(Candidate(loop.generation, index, child, (parent.id,), "mutation"))
        return candidates

    def survivors(self, loop, records):
        # the youngest population_size genomes live on; the oldest die, however fit
        return (loop.population + records)[-loop.config.population_size:]
