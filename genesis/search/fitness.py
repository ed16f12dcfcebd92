"""How DEAP sees a genome: fitness types compared at equal fidelity, and the individual
that carries a record. Defined once at module level (not in `deap.creator`) so runs
cannot interfere and the types pickle into worker processes."""

from __future__ import annotations

from typing import Sequence

from deap import base

from genesis.core.records import Record


class Fitness2(base.Fitness):
    """DEAP fitness over two objectives, both minimized."""

    weights = (-1.0, -1.0)


class Fitness3(base.Fitness):
    """DEAP fitness over three objectives, all minimized."""

    weights = (-1.0, -1.0, -1.0)


class FidelityFitness(base.Fitness):
    """Single-objective fitness compared at equal fidelity (`Outcome.rank`): more
    training tokens first, then the lower objective. With one fidelity, the objective alone."""

    weights = (-1.0, -1.0)


_FITNESS_OF_SIZE = {2: Fitness2, 3: Fitness3}


class Individual:
    """A genome as DEAP sees it: something with a `fitness`; equal when genomes are equal."""

    def __init__(self, record: Record, objectives: Sequence[str] = ("val_loss",)):
        self.record = record
        outcome = record.outcome
        if len(objectives) == 1:
            self.fitness = FidelityFitness(outcome.rank(objectives[0]))
        else:
            self.fitness = _FITNESS_OF_SIZE[len(objectives)](
                tuple(outcome.objective(name) for name in objectives))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Individual) and other.record.genome == self.record.genome

    __hash__ = None  # mutable DEAP fitness inside: not hashable
