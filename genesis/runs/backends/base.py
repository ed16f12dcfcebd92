"""What every backend is given and gives back: jobs, the training setup, and outcomes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, Sequence

from genesis.core.genome import Genome
from genesis.core.recipe import Recipe
from genesis.core.records import Outcome


class Backend(Protocol):
    """Where trainings run. `run` yields one `(job, outcome)` pair per job, in any order,
    as trainings finish (a failed training is an outcome with a failure status, never an
    exception); `close` releases workers. A backend that keeps weights writes each job's
    `weights_path`."""

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Outcome]]: ...

    def close(self) -> None: ...



TABLE_PREFIX = "table:"  # `--backend table:PATH`: lookups in a sweep table (genesis.runs.table)

@dataclass(frozen=True)
class Job:
    """One training to run: a genome, its seed, where to keep its weights, a step
    budget that replaces the recipe's (a lower fidelity) when given, early-stopping
    bounds on its learning curve, whether to measure the test split too (see
    `genesis.train.trainer.train`), and which replicate of the genome it is."""

    genome: Genome
    seed: int
    weights_path: str | None = None
    steps: int | None = None
    give_up_above: tuple[float | None, ...] = ()
    measure_test: bool = False
    replicate: int = 0


@dataclass(frozen=True)
class TrainingSetup:
    """What every worker needs besides the job: recipe, corpus key, cache, device, threads."""

    recipe: Recipe
    data_key: str
    cache_dir: str | None
    device: str
    threads: int


def run_job(setup: TrainingSetup, job: Job, tokens) -> Outcome:
    from genesis.train.trainer import train  # torch: imported where trainings run

    recipe = setup.recipe if job.steps is None else dataclasses.replace(setup.recipe, steps=job.steps)
    return train(job.genome, recipe, tokens, job.seed, setup.device,
                 weights_path=Path(job.weights_path) if job.weights_path else None,
                 give_up_above=job.give_up_above, measure_test=job.measure_test)
