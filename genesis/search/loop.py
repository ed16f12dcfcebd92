"""The generation loop, on DEAP: tournament selection, uniform crossover, per-trait
mutation and elitism through a hall of fame.

DEAP is wrapped so that runs cannot interfere: no classes are written into
`deap.creator` (the fitness and individual types are defined once, here, so they pickle
into worker processes), every run builds its own `Toolbox`, and DEAP's built-in
operators, which draw from the global `random` module, run under `_isolated_random`.

This module knows nothing about torch or training: it hands `Candidate`s to an
`evaluate` callable and receives `Outcome`s back.
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from deap import base, tools

from genesis.core.genome import Genome
from genesis.core.operators import crossover_uniform, mutate
from genesis.core.records import OBJECTIVES, Outcome, Record, full_fidelity
from genesis.core.space import SearchSpace
from genesis.search.fitness import Individual
from genesis.search.strategies.optuna import (
    OPTUNA_STRATEGIES,
    Evaluated,
    generation_seed,
    sample_genomes,
)

MAX_REDRAWS = 10  # attempts to make a child that is new within its generation
STRATEGIES = ("evolution", "aging", "random", "nsga2", *OPTUNA_STRATEGIES)
MULTI_OBJECTIVE_STRATEGIES = ("nsga2", *OPTUNA_STRATEGIES)


@dataclass(frozen=True)
class EvolutionConfig:
    """Settings of the generation loop.

    Attributes:
        population_size: genomes per generation.
        generations: generations in all, the random initial one included.
        tournament_size: contestants per tournament selection.
        crossover_rate: probability that a pair of selected parents is crossed over.
        mutation_rate: probability that a child is mutated.
        trait_mutation_rate: per-trait probability of change inside a mutation.
        elites: best genomes so far carried unchanged into every new generation.
        seed: the run seed; all randomness of the loop and of training derives from it.
        strategy: "evolution" (generational: tournament, crossover, mutation, elitism),
            "aging" (regularized evolution, Real et al. 2019: each generation mutates
            tournament winners into `aging_batch` children and the oldest genomes, not the
            worst, leave the population), "random" (every generation samples anew: the
            baseline any search must beat), or "tpe" / "nsga2-optuna" (Optuna's samplers,
            asked for each generation given every genome evaluated so far, over
            `objectives`), or "nsga2" (DEAP's NSGA-II survival over `objectives`).
        aging_batch: children per generation of aging evolution; 0 means half the
            population.
        objectives: what is minimized, any of `records.OBJECTIVES`; several need a
            multi-objective strategy (nsga2, nsga2-optuna, or tpe as Optuna's MOTPE).
        budget_tokens: a compute budget in training tokens (0: none); the run stops after
            the generation that spends it, or after `generations`, whichever comes first.
    """

    population_size: int = 8
    generations: int = 4
    tournament_size: int = 3
    crossover_rate: float = 0.5
    mutation_rate: float = 0.7
    trait_mutation_rate: float = 0.3
    elites: int = 1
    seed: int = 0
    strategy: str = "evolution"
    aging_batch: int = 0
    objectives: tuple[str, ...] = ("val_loss",)
    budget_tokens: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))  # JSON gives lists

    def validate(self) -> None:
        """Raise `ValueError` for settings the loop cannot run with."""
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown or not 1 <= len(set(self.objectives)) == len(self.objectives) <= 3:
            raise ValueError(f"objectives must be 1 to 3 distinct names of: {', '.join(OBJECTIVES)}")
        if len(self.objectives) > 1 and self.strategy not in MULTI_OBJECTIVE_STRATEGIES:
            raise ValueError(f"several objectives need --strategy {' or '.join(MULTI_OBJECTIVE_STRATEGIES)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.budget_tokens < 0:
            raise ValueError("the token budget must not be negative")
        if self.aging_batch < 0:
            raise ValueError("aging batch must not be negative")
        if self.population_size < 2:
            raise ValueError("population size must be at least 2")
        if self.generations < 1:
            raise ValueError("generations must be at least 1")
        if not 0 <= self.elites < self.population_size:
            raise ValueError("elites must be at least 0 and fewer than the population size")
        if self.tournament_size < 1:
            raise ValueError("tournament size must be at least 1")
        for name in ("crossover_rate", "mutation_rate", "trait_mutation_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name.replace('_', ' ')} must be between 0 and 1")


@dataclass(frozen=True)
class Candidate:
    """A genome waiting for evaluation, with its place in the run and its origin."""

    generation: int
    index: int
    genome: Genome
    parents: tuple[str, ...] = ()
    operator: str = "random"

    def to_record(self, outcome: Outcome, cached: bool = False, compute_tokens: int = 0,
                  rung: int | None = None) -> Record:
        return Record(self.generation, self.index, self.genome, self.parents, self.operator,
                      outcome, cached, compute_tokens, rung)


class Observer:
    """Receives progress from a run; override the hooks you need. Library code never prints."""

    def on_run_start(self, run_id: str, path: Path) -> None:
        """A run folder is ready (new or resumed); evaluations are about to start."""

    def on_generation_start(self, generation: int, candidates: Sequence[Candidate]) -> None:
        """A generation's candidates are about to be evaluated."""

    def on_evaluation(self, record: Record) -> None:
        """One candidate has been evaluated (or taken from the cache)."""

    def on_generation_end(self, generation: int, records: Sequence[Record], stats: dict) -> None:
        """A generation is complete; `stats` is its logbook entry."""

    def on_retraining(self, retraining) -> None:
        """A fresh-seed retraining (`genesis.core.noise.Retraining`, a noise probe or a
        confirmation) has finished."""


Evaluate = Callable[[Sequence[Candidate]], Sequence[Record]]


class Evolution:
    """One evolutionary run over a search space.

    Call `step()` for one generation or `run()` for all of them. The state (generation,
    population, hall of fame, logbook, random state) is plain data so that a run store
    can checkpoint and restore it.
    """

    def __init__(
        self,
        space: SearchSpace,
        config: EvolutionConfig,
        evaluate: Evaluate,
        observers: Sequence[Observer] = (),
    ):
        config.validate()
        self.space = space
        self.config = config
        self.evaluate = evaluate
        self.observers = list(observers)
        self.rng = random.Random(config.seed)
        self.generation = 0
        self.spent_tokens = 0  # training tokens spent so far, for the compute budget
        self.population: list[Record] = []
        # every genome evaluated, by id, with its objective values (inf for a failure)
        self.history: dict[str, Evaluated] = {}
        self.hall_of_fame = tools.HallOfFame(max(1, config.elites))
        self.logbook = tools.Logbook()
        self.toolbox = base.Toolbox()
        self.toolbox.register("select", tools.selTournament, tournsize=config.tournament_size)
        self.toolbox.register("mate", crossover_uniform, space=space, rng=self.rng)
        self.toolbox.register("mutate", mutate, space=space, rng=self.rng,
                              trait_prob=config.trait_mutation_rate)

    @property
    def done(self) -> bool:
        """Whether the last generation ran or the compute budget is spent."""
        budget = self.config.budget_tokens
        return self.generation >= self.config.generations or 0 < budget <= self.spent_tokens

    def run(self) -> list[Record]:
        """Run the remaining generations; returns the final population."""
        while not self.done:
            self.step()
        return self.population

    def step(self) -> list[Record]:
        """Breed, evaluate and select one generation; returns its records."""
        if self.generation == 0 or self.config.strategy == "random":
            candidates = self._random_candidates()
        elif self.config.strategy == "aging":
            candidates = self._aging_offspring()
        elif self.config.strategy in OPTUNA_STRATEGIES:
            genomes = sample_genomes(self.config.strategy, self.space, list(self.history.values()),
                                     self.config.population_size,
                                     generation_seed(self.config.seed, self.generation), self.generation)
            candidates = [Candidate(self.generation, i, g, (), self.config.strategy)
                          for i, g in enumerate(genomes)]
        else:
            candidates = self._offspring()
        for observer in self.observers:
            observer.on_generation_start(self.generation, candidates)
        records = list(self.evaluate(candidates))
        self.spent_tokens += sum(r.compute_tokens for r in records)
        for record in records:
            self.history.setdefault(record.genome_id, Evaluated(record.genome, tuple(
                record.outcome.objective(name) for name in self.config.objectives), self.generation,
                record.outcome.tokens))
        if self.config.strategy == "aging" and self.generation > 0:
            # the youngest population_size genomes live on; the oldest die, however fit
            self.population = (self.population + records)[-self.config.population_size:]
        elif self.config.strategy == "nsga2" and self.generation > 0:
            self.population = self._survivors(records)
        else:
            self.population = records
        self.hall_of_fame.update([Individual(r) for r in records])
        stats = generation_stats(records)
        self.logbook.record(gen=self.generation, **stats)
        for observer in self.observers:
            observer.on_generation_end(self.generation, records, stats)
        self.generation += 1
        return records

    def _random_candidates(self) -> list[Candidate]:
        genomes: list[Genome] = []
        for _ in range(self.config.population_size):
            genome = self.space.sample(self.rng)
            for _ in range(MAX_REDRAWS):
                if genome not in genomes:
                    break
                genome = self.space.sample(self.rng)
            genomes.append(genome)
        return [Candidate(self.generation, i, g) for i, g in enumerate(genomes)]

    def _aging_offspring(self) -> list[Candidate]:
        wanted = self.config.aging_batch or max(1, self.config.population_size // 2)
        with _isolated_random(self.rng):
            chosen = self.toolbox.select([Individual(r) for r in self.population], wanted)
        seen = {r.genome for r in self.population}
        candidates = []
        for index, winner in enumerate(chosen):
            parent = winner.record.genome
            child = self.toolbox.mutate(parent)
            for _ in range(MAX_REDRAWS):
                if child not in seen:
                    break
                child = self.toolbox.mutate(child)
            seen.add(child)
            candidates.append(Candidate(self.generation, index, child, (parent.id,), "mutation"))
        return candidates

    def _offspring(self) -> list[Candidate]:
        """Generational breeding: elites, then tournament winners crossed and mutated.

        Under NSGA-II there are no elites (survival selection keeps the best) and mates
        are drawn at random; the pressure comes from `_survivors`.
        """
        nsga2 = self.config.strategy == "nsga2"
        elites = [] if nsga2 else [ind.record.genome for ind in self.hall_of_fame[: self.config.elites]]
        candidates = [Candidate(self.generation, i, g, (g.id,), "elite") for i, g in enumerate(elites)]
        wanted = self.config.population_size - len(elites)
        with _isolated_random(self.rng):
            pool = [self._individual(r) for r in self.population]
            chosen = tools.selRandom(pool, wanted) if nsga2 else self.toolbox.select(pool, wanted)
        return candidates + self._breed([ind.record.genome for ind in chosen], len(candidates), set(elites))

    def _breed(self, parents: list[Genome], start: int, seen: set[Genome]) -> list[Candidate]:
        """Pair `parents`, cross them over and mutate the children; one child per parent."""
        candidates: list[Candidate] = []
        for first, second in zip(parents[0::2], parents[1::2] + parents[:1]):
            if self.rng.random() < self.config.crossover_rate:
                children = self.toolbox.mate(first, second)
                origin, operator = (first.id, second.id), "crossover"
            else:
                children = (first, second)
                origin, operator = None, "clone"
            for parent, child in zip((first, second), children):
                if len(candidates) == len(parents):
                    break
                child_origin = origin or (parent.id,)
                child_operator = operator
                mutated = self.rng.random() < self.config.mutation_rate
                for _ in range(MAX_REDRAWS):
                    if not mutated and child not in seen:
                        break
                    child, mutated = self.toolbox.mutate(child), False
                    child_operator = "mutation" if operator == "clone" else "crossover+mutation"
                seen.add(child)
                candidates.append(Candidate(self.generation, start + len(candidates), child,
                                            child_origin, child_operator))
        return candidates

    def _individual(self, record: Record) -> Individual:
        return Individual(record, self.config.objectives)

    def _survivors(self, records: list[Record]) -> list[Record]:
        """NSGA-II survival: the best `population_size` of parents and children by Pareto
        rank, then crowding distance (DEAP's selNSGA2), at equal fidelity: genomes trained
        with the most tokens first, lower rungs and early-stopped ones only to fill up."""
        pool = {r.genome_id: r for r in self.population + records}  # a genome counts once
        survivors: list[Record] = []
        for tokens in sorted({r.outcome.tokens for r in pool.values()}, reverse=True):
            level = [self._individual(r) for r in pool.values() if r.outcome.tokens == tokens]
            wanted = min(len(level), self.config.population_size - len(survivors))
            survivors += [ind.record for ind in tools.selNSGA2(level, wanted)] if wanted else []
        return survivors

    def state(self) -> dict[str, Any]:
        """The loop's full state as JSON-ready data (for checkpoints)."""
        version, internal, gauss = self.rng.getstate()
        return {
            "generation": self.generation,
            "spent_tokens": self.spent_tokens,
            "population": [r.to_dict() for r in self.population],
            "hall_of_fame": [ind.record.to_dict() for ind in self.hall_of_fame],
            "logbook": list(self.logbook),
            "history": [[genome.to_dict(), [v if math.isfinite(v) else None for v in values], generation, tokens]
                        for genome, values, generation, tokens in self.history.values()],
            "rng": [version, list(internal), gauss],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Return to a state produced by `state()`."""
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.generation = state["generation"]
        self.spent_tokens = state.get("spent_tokens", 0)
        self.population = [Record.from_dict(r) for r in state["population"]]
        self.hall_of_fame.clear()
        self.hall_of_fame.update([Individual(Record.from_dict(r)) for r in state["hall_of_fame"]])
        self.logbook = tools.Logbook()
        for entry in state["logbook"]:
            self.logbook.record(**entry)
        self.history = {}
        for traits, values, *where in state["history"]:
            genome = Genome.from_dict(traits)
            if not isinstance(values, list):  # an older checkpoint: one fitness, nothing else
                values, where = [values], []
            generation, tokens = (*where, 0, 0)[:2]
            self.history[genome.id] = Evaluated(genome, tuple(math.inf if v is None else v for v in values),
                                                generation, tokens)


def generation_stats(records: Sequence[Record]) -> dict[str, Any]:
    """Best, mean and median fitness of the records that trained, at the generation's
    highest fidelity (lower rungs and early-stopped trainings left out), and counts."""
    fidelity = full_fidelity(records)
    values = [r.outcome.fitness for r in records
              if math.isfinite(r.outcome.fitness) and r.outcome.tokens == fidelity]
    return {
        "best": min(values) if values else None,
        "mean": statistics.fmean(values) if values else None,
        "median": statistics.median(values) if values else None,
        "failed": sum(1 for r in records if r.outcome.status != "ok"),
        "cached": sum(1 for r in records if r.cached),
        "unique": len({r.genome for r in records}),
    }


@contextlib.contextmanager
def _isolated_random(rng: random.Random) -> Iterator[None]:
    # DEAP's selection draws from the global `random` module. Seed it from the run's own
    # generator for the call and put the old state back afterwards: the run stays
    # reproducible, and neither disturbs nor is disturbed by other users of `random`.
    saved = random.getstate()
    random.seed(rng.getrandbits(64))
    try:
        yield
    finally:
        random.setstate(saved)
