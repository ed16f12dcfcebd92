"""Evaluator backends: where the trainings of a generation run.

All backends take the same `Job`s and yield `(job, outcome)` pairs as trainings finish:

- `InProcessBackend`: one training after another in this process.
- `ProcessPoolBackend`: N worker processes (spawn start method) of T threads each; a
  worker that dies is replaced and its genome recorded as failed.
- `RayBackend`: Ray tasks on a local or remote cluster (`pip install genesis[ray]`).

A training's result depends only on its genome, seed, recipe and the number of threads
it runs with, so for one seed every backend gives the same records when the threads
per evaluation are equal (with other thread counts, losses agree to about 1e-5).
Workers read the tokenized corpus from the token cache by its key, so the cache must
be reachable from every worker (a shared folder on a cluster).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Iterator, Sequence

from genesis.errors import GenesisError
from genesis.genome import Genome
from genesis.recipe import Recipe
from genesis.records import Outcome

log = logging.getLogger(__name__)

BACKENDS = ("inprocess", "processes", "ray")
MAX_EARLY_DEATHS = 3  # workers that may die before starting a job until it counts as failed


@dataclass(frozen=True)
class Job:
    """One training to run: a genome, its seed, where to keep its weights, a step
    budget that replaces the recipe's (a lower fidelity) when given, early-stopping
    bounds on its learning curve, whether to measure the test split too (see
    `genesis.train.train`), and which replicate of the genome it is."""

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


def _run_job(setup: TrainingSetup, job: Job, tokens) -> Outcome:
    from genesis.train import train

    recipe = setup.recipe if job.steps is None else dataclasses.replace(setup.recipe, steps=job.steps)
    return train(job.genome, recipe, tokens, job.seed, setup.device,
                 weights_path=Path(job.weights_path) if job.weights_path else None,
                 give_up_above=job.give_up_above, measure_test=job.measure_test)


class InProcessBackend:
    """Trains each job in this process, with `setup.threads` torch threads."""

    def __init__(self, setup: TrainingSetup, tokens=None):
        from genesis.data import load_cached

        self.setup = setup
        self.tokens = tokens if tokens is not None else load_cached(setup.data_key, setup.cache_dir)

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Outcome]]:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.setup.threads)
        try:
            for job in jobs:
                yield job, _run_job(self.setup, job, self.tokens)
        finally:
            torch.set_num_threads(previous)

    def close(self) -> None:
        """Nothing to release."""


def _worker_main(connection, setup: TrainingSetup) -> None:
    """A pool worker: load the corpus once, then train jobs until told to stop."""
    import torch

    from genesis.data import load_cached

    torch.set_num_threads(setup.threads)
    tokens = load_cached(setup.data_key, setup.cache_dir)
    while True:
        job = connection.recv()
        if job is None:
            return
        connection.send(("started", None))
        connection.send(("done", _run_job(setup, job, tokens).to_dict()))


def _worker_device(device: str, index: int) -> str:
    """Spread workers over the GPUs: worker i trains on GPU i mod count.

    With more workers than GPUs, several small evaluations share a GPU.
    """
    if device != "cuda":
        return device
    import torch

    count = torch.cuda.device_count()
    return f"cuda:{index % count}" if count > 1 else device


@dataclass
class _Worker:
    process: Any
    connection: Any
    job: Job | None = None
    started: bool = False  # the worker acknowledged the job and is training it


class ProcessPoolBackend:
    """`workers` processes of `setup.threads` threads, fed one job at a time.

    Sending one job at a time means that when a worker dies (killed, crashed, out of
    memory) we know exactly which genome it held: that one is recorded as failed, a
    fresh worker takes its place, and the other jobs go on. A job the worker had not yet
    acknowledged (it died idle, before reading it) goes back to the queue instead.
    """

    def __init__(self, setup: TrainingSetup, workers: int = 2):
        if workers < 1:
            raise GenesisError("a process pool needs at least one worker")
        self.setup = setup
        self.context = multiprocessing.get_context("spawn")
        self.workers = [self._start(index) for index in range(workers)]

    def _start(self, index: int) -> _Worker:
        parent, child = self.context.Pipe()
        setup = dataclasses.replace(self.setup, device=_worker_device(self.setup.device, index))
        process = self.context.Process(target=_worker_main, args=(child, setup), daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Outcome]]:
        queue = list(jobs)
        early_deaths: dict[str, int] = {}  # job -> workers that died before starting it
        while queue or any(w.job is not None for w in self.workers):
            for index, worker in enumerate(self.workers):
                if worker.job is None and queue:
                    worker = self._hand_over(index, queue.pop(0))
            busy = [w for w in self.workers if w.job is not None]
            wait([w.connection for w in busy] + [w.process.sentinel for w in busy])
            for index, worker in enumerate(self.workers):
                job = worker.job
                if job is None:
                    continue
                outcome = self._receive(worker)
                if outcome is not None:
                    worker.job, worker.started = None, False
                    yield job, outcome
                elif not worker.process.is_alive():
                    code = worker.process.exitcode
                    self.workers[index] = self._start(index)
                    early_deaths[job.genome.id] = early_deaths.get(job.genome.id, 0) + 1
                    if not worker.started and early_deaths[job.genome.id] < MAX_EARLY_DEATHS:
                        queue.insert(0, job)
                        continue
                    log.warning("worker %s died (exit code %s) training %s", worker.process.pid,
                                code, job.genome.id)
                    yield job, Outcome(status="error", reason=f"worker process died (exit code {code})")

    @staticmethod
    def _receive(worker: _Worker) -> Outcome | None:
        """Read the worker's messages; the outcome if its job is done."""
        try:
            while worker.connection.poll():
                kind, payload = worker.connection.recv()
                if kind == "started":
                    worker.started = True
                else:
                    return Outcome.from_dict(payload)
        except (EOFError, OSError):
            pass
        return None

    def _hand_over(self, index: int, job: Job) -> _Worker:
        """Send `job` to worker `index`, first replacing it if it died while idle."""
        worker = self.workers[index]
        try:
            if not worker.process.is_alive():
                raise BrokenPipeError
            worker.connection.send(job)
        except (BrokenPipeError, OSError):
            worker = self.workers[index] = self._start(index)
            worker.connection.send(job)
        worker.job, worker.started = job, False
        return worker

    def close(self) -> None:
        """Stop every worker."""
        for worker in self.workers:
            try:
                worker.connection.send(None)
            except (BrokenPipeError, OSError):
                pass
        for worker in self.workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()


class RayBackend:
    """Ray tasks, each training one genome with `setup.threads` CPUs.

    Connects to `address` (a running cluster, e.g. "ray://head:10001" or "auto"), or
    starts a local Ray instance with `workers` CPUs.
    """

    def __init__(self, setup: TrainingSetup, address: str | None = None, workers: int | None = None):
        try:
            import ray
        except ImportError:
            raise GenesisError("the ray backend needs Ray: pip install 'genesis[ray]'") from None
        self.ray = ray
        self.setup = setup
        if not ray.is_initialized():
            ray.init(address=address, num_cpus=None if address else (workers or os.cpu_count()),
                     include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        self.task = ray.remote(num_cpus=setup.threads)(_ray_train)

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Outcome]]:
        pending = {self.task.remote(self.setup, job): job for job in jobs}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                outcome = Outcome.from_dict(self.ray.get(done[0]))
            except Exception as error:  # a worker that died surfaces here as a Ray error
                outcome = Outcome(status="error", reason=f"ray task failed: {type(error).__name__}")
            yield job, outcome

    def close(self) -> None:
        """Leave a cluster we joined running; shut down a local instance we started."""
        self.ray.shutdown()


_RAY_TOKENS: dict[str, Any] = {}  # corpus per Ray worker process, loaded once


def _ray_train(setup: TrainingSetup, job: Job) -> dict[str, Any]:
    import torch

    from genesis.data import load_cached

    torch.set_num_threads(setup.threads)
    if setup.data_key not in _RAY_TOKENS:
        _RAY_TOKENS[setup.data_key] = load_cached(setup.data_key, setup.cache_dir)
    return _run_job(setup, job, _RAY_TOKENS[setup.data_key]).to_dict()


def make_backend(name: str, setup: TrainingSetup, tokens=None, workers: int = 2,
                 ray_address: str | None = None, seed: int = 0):
    """Build the backend called `name` (one of `BACKENDS`, or `table:PATH`, a lookup in a
    sweep table for a run of seed `seed`: see `genesis.table`)."""
    if name.startswith("table:"):
        from genesis.table import Table, TableBackend

        return TableBackend(Table(name[len("table:"):]), seed)
    if name == "inprocess":
        return InProcessBackend(setup, tokens)
    if name == "processes":
        return ProcessPoolBackend(setup, workers)
    if name == "ray":
        return RayBackend(setup, ray_address, workers)
    raise GenesisError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
