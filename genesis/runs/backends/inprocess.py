"""The in-process backend: one training after another, in this process."""

from __future__ import annotations

from typing import Iterator, Sequence

from genesis.core.records import Outcome
from genesis.runs.backends.base import Job, TrainingSetup, run_job


class InProcessBackend:
    """Trains each job in this process, with `setup.threads` torch threads."""

    def __init__(self, setup: TrainingSetup, tokens=None):
        from genesis.train.data import load_cached

        self.setup = setup
        self.tokens = tokens if tokens is not None else load_cached(setup.data_key, setup.cache_dir)

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Outcome]]:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.setup.threads)
        try:
            for job in jobs:
                yield job, run_job(self.setup, job, self.tokens)
        finally:
            torch.set_num_threads(previous)

    def close(self) -> None:
        """Nothing to release."""
