"""Generational evolution on DEAP: elites, tournament selection, uniform crossover and
per-trait mutation; and NSGA-II, its multi-objective sibling with survival selection."""

from __future__ import annotations

from deap import tools

from genesis.core.genome import Genome
from genesis.core.records import Record
from genesis.search.population import MAX_REDRAWS, Candidate, isolated_random
from genesis.search.strategies.base import Strategy


class Generational(Strategy):
    """Elites from the hall of fame, then tournament winners paired, crossed over and
    mutated; the new generation replaces the old."""

    def propose(self, loop):
        elites = [ind.record.genome for ind in loop.hall_of_fame[: loop.config.elites]]
        candidates = [Candidate(loop.generation, i, g, (g.id,), "elite") for i, g in enumerate(elites)]
        wanted = loop.config.population_size - len(elites)
        with isolated_random(loop.rng):
            chosen = loop.toolbox.select([loop.individual(r) for r in loop.population], wanted)
        return candidates + breed(loop, [ind.record.genome for ind in chosen], len(candidates), set(elites))


class NSGA2(Strategy):
    """DEAP's NSGA-II: mates drawn at random, no elites; the pressure comes from survival,
    which keeps the best `population_size` of parents and children."""

    multi_objective = True

    def propose(self, loop):
        with isolated_random(loop.rng):
            chosen = tools.selRandom([loop.individual(r) for r in loop.population], loop.config.population_size)
        return breed(loop, [ind.record.genome for ind in chosen], 0, set())

    def survivors(self, loop, records):
        """By Pareto rank, then crowding distance (DEAP's selNSGA2), at equal fidelity:
        genomes trained with the most tokens first, lower rungs and early-stopped ones
        only to fill up."""
        pool = {r.genome_id: r for r in loop.population + records}  # a genome counts once
        survivors: list[Record] = []
        for tokens in sorted({r.outcome.tokens for r in pool.values()}, reverse=True):
            level = [loop.individual(r) for r in pool.values() if r.outcome.tokens == tokens]
            wanted = min(len(level), loop.config.population_size - len(survivors))
            survivors += [ind.record for ind in tools.selNSGA2(level, wanted)] if wanted else []
        return survivors


def breed(loop, parents: list[Genome], start: int, seen: set[Genome]) -> list[Candidate]:
    """Pair `parents`, cross them over and mutate the children; one child per parent,
    each new within its generation where a few redraws allow."""
    config = loop.config
    candidates: list[Candidate] = []
    for first, second in zip(parents[0::2], parents[1::2] + parents[:1]):
        if loop.rng.random() < config.crossover_rate:
            children = loop.toolbox.mate(first, second)
            origin, operator = (first.id, second.id), "crossover"
        else:
            children = (first, second)
            origin, operator = None, "clone"
        for parent, child in zip((first, second), children):
            if len(candidates) == len(parents):
                break
            child_origin = origin or (parent.id,)
            child_operator = operator
            mutated = loop.rng.random() < config.mutation_rate
            for _ in range(MAX_REDRAWS):
                if not mutated and child not in seen:
                    break
                child, mutated = loop.toolbox.mutate(child), False
                child_operator = "mutation" if operator == "clone" else "crossover+mutation"
            seen.add(child)
            candidates.append(Candidate(loop.generation, start + len(candidates), child,
                                        child_origin, child_operator))
    return candidates
