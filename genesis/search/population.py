"""What the loop and its strategies pass around: candidates waiting for evaluation, the
history of genomes evaluated, fresh random genomes, and DEAP's global `random` fenced in."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Iterator, NamedTuple

from genesis.core.genome import Genome
from genesis.core.records import Outcome, Record
from genesis.core.space import SearchSpace

MAX_REDRAWS = 10  # attempts to make a child that is new within its generation


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


class Evaluated(NamedTuple):
    """A genome evaluated earlier in a run: its objective values (all minimized, inf for
    a failure), the generation it was first evaluated in and the training tokens its
    values were measured at (its fidelity)."""

    genome: Genome
    values: tuple[float, ...]
    generation: int
    tokens: int = 0


def random_candidates(space: SearchSpace, rng: random.Random, count: int, generation: int) -> list[Candidate]:
    """`count` genomes sampled from `space`, redrawn (a few times) to be distinct."""
    genomes: list[Genome] = []
    for _ in range(count):
        genome = space.sample(rng)
        for _ in range(MAX_REDRAWS):
            if genome not in genomes:
                break
            genome = space.sample(rng)
        genomes.append(genome)
    return [Candidate(generation, i, g) for i, g in enumerate(genomes)]


@contextlib.contextmanager
def isolated_random(rng: random.Random) -> Iterator[None]:
    """Run DEAP's operators, which draw from the global `random` module, on a seed from
    the run's own generator, and put the old global state back afterwards: the run stays
    reproducible, and neither disturbs nor is disturbed by other users of `random`."""
    saved = random.getstate()
    random.seed(rng.getrandbits(64))
    try:
        yield
    finally:
        random.setstate(saved)
