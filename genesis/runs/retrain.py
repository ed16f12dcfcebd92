"""Running the retrainings of `genesis.core.noise`: noise probes after each generation and
the confirmation of champions at the end of a run, on the run's evaluator backend.

Which models are retrained, and with which replicate numbers, follows from the records
and the retrainings already logged, so a run killed during retraining resumes to the
same retrainings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from genesis.core.noise import CONFIRM, PROBE, Retraining, best_full, fresh_replicates
from genesis.core.records import Record, training_seed
from genesis.errors import GenesisError
from genesis.runs.backends import Job
from genesis.runs.store import drop_torn_line

RETRAININGS_FILE = "retrainings.jsonl"


def read_retrainings(run_path: str | Path) -> list[Retraining]:
    """The retrainings logged in a run folder; a last line cut short by a crash is left out."""
    path = Path(run_path) / RETRAININGS_FILE
    if not path.exists():
        return []
    text = path.read_text()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            found.append(Retraining.from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, GenesisError) as error:
            raise GenesisError(f"{path}: line {number} is corrupt ({error})") from None
    return found


class Retrainer:
    """Noise probes and confirmation for one run.

    Args:
        run_path: the run folder (retrainings are logged there).
        backend: where trainings run.
        seed: the run seed.
        replicates: replicate numbers below this are selection's own.
        probes: models retrained after each generation (0: none).
        confirm: champions confirmed at the end (0: none).
        confirm_seeds: fresh-seed trainings per confirmed champion, probes included.
        observers: get `on_retraining` for each one.
    """

    def __init__(self, run_path: Path, backend, seed: int, replicates: int, probes: int,
                 confirm: int, confirm_seeds: int, observers: Sequence = ()):
        self.path = Path(run_path) / RETRAININGS_FILE
        self.backend, self.seed, self.replicates = backend, seed, replicates
        self.probes, self.confirm, self.confirm_seeds = probes, confirm, confirm_seeds
        self.observers = observers
        self.done = read_retrainings(run_path)
        drop_torn_line(self.path)

    def probe(self, generation: int, records: Sequence[Record]) -> None:
        """Retrain the best `probes` models so far with one fresh seed each, once per generation."""
        probed = {r.genome.training_id for r in self.done if r.kind == PROBE and r.generation == generation}
        jobs = [self._job(record, replicate)
                for record in best_full(records, self.probes)
                if record.genome.training_id not in probed
                for replicate in self._fresh(record, 1)]
        self._run(PROBE, generation, jobs)

    def confirm_champions(self, generation: int, records: Sequence[Record]) -> None:
        """Top up the best `confirm` models to `confirm_seeds` fresh-seed trainings each."""
        jobs = []
        for record in best_full(records, self.confirm):
            have = sum(1 for r in self.done if r.genome.training_id == record.genome.training_id)
            jobs += [self._job(record, replicate)
                     for replicate in self._fresh(record, max(0, self.confirm_seeds - have))]
        self._run(CONFIRM, generation, jobs)

    def _fresh(self, record: Record, count: int) -> list[int]:
        used = [r.replicate for r in self.done if r.genome.training_id == record.genome.training_id]
        return fresh_replicates(used, self.replicates, count)

    def _job(self, record: Record, replicate: int) -> Job:
        return Job(record.genome, training_seed(self.seed, record.genome.training_id, replicate),
                   measure_test=True, replicate=replicate)

    def _run(self, kind: str, generation: int, jobs: list[Job]) -> None:
        for job, outcome in self.backend.run(jobs):
            retraining = Retraining(kind, generation, job.genome, job.replicate, outcome)
            with self.path.open("a") as out:
                out.write(json.dumps(retraining.to_dict(), sort_keys=True) + "\n")
                out.flush()
                os.fsync(out.fileno())
            self.done.append(retraining)
            for observer in self.observers:
                observer.on_retraining(retraining)
