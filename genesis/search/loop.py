"""The generation loop: a random first generation, then the run's strategy
(`genesis.search.strategies`) proposes each generation and picks who lives on.

DEAP is wrapped so that runs cannot interfere: no classes are written into
`deap.creator` (the fitness and individual types are defined once, in
`genesis.search.fitness`, so they pickle into worker processes), every run builds its
own `Toolbox` (tournament selection, uniform crossover, per-trait mutation), and DEAP's
built-in operators, which draw from the global `random` module, run under
`genesis.search.population.isolated_random`.

This module knows nothing about torch or training: it hands `Candidate`s to an
`evaluator` callable and receives `Record`s back.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from deap import base, tools

from genesis.core.genome import Genome
from genesis.core.operators import crossover_uniform, mutate
from genesis.core.records import OBJECTIVES, Record, full_fidelity
from genesis.core.space import SearchSpace
from genesis.search.fitness import Individual
from genesis.search.population import Candidate, Evaluated, random_candidates
from genesis.search.strategies import make_strategy, multi_objective_strategies, strategy_names


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
        if self.strategy not in strategy_names():
            raise ValueError(f"strategy must be one of {', '.join(strategy_names())}, not {self.strategy!r}")
        if len(self.objectives) > 1 and not make_strategy(self.strategy).multi_objective:
            raise ValueError(f"several objectives need --strategy {' or '.join(multi_objective_strategies())}")
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


Evaluator = Callable[[Sequence[Candidate]], Sequence[Record]]  # candidates in, their records out


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
        evaluator: Evaluator,
        observers: Sequence[Observer] = (),
    ):
        config.validate()
        self.space = space
        self.config = config
        self.evaluator = evaluator
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
        self.strategy = make_strategy(config.strategy)

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
        """Propose, evaluate and select one generation; returns its records."""
        first = self.generation == 0  # the first generation is random for every strategy
        candidates = (random_candidates(self.space, self.rng, self.config.population_size, 0) if first
                      else self.strategy.propose(self))
        for observer in self.observers:
            observer.on_generation_start(self.generation, candidates)
        records = list(self.evaluator(candidates))
        self.spent_tokens += sum(r.compute_tokens for r in records)
        for record in records:
            self.history.setdefault(record.genome_id, Evaluated(record.genome, tuple(
                record.outcome.objective(name) for name in self.config.objectives), self.generation,
                record.outcome.tokens))
        self.population = records if first else self.strategy.survivors(self, records)
        self.hall_of_fame.update([Individual(r) for r in records])
        stats = generation_stats(records)
        self.logbook.record(gen=self.generation, **stats)
        for observer in self.observers:
            observer.on_generation_end(self.generation, records, stats)
        self.generation += 1
        return records

    def individual(self, record: Record) -> Individual:
        """`record` as DEAP sees it, with the run's objectives as its fitness."""
        return Individual(record, self.config.objectives)

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

