"""Evaluator backends: where the trainings of a generation run.

All backends take the same `Job`s and yield `(job, outcome)` pairs as trainings finish:

- `InProcessBackend`: one training after another in this process.
- `ProcessPoolBackend`: N worker processes (spawn start method) of T threads each; a
  worker that dies is replaced and its genome recorded as failed.
- `RayBackend`: Ray tasks on a local or remote cluster (`pip install genesis[ray]`).

A training's result depends only on its genome, seed, recipe and the number of threads
it runs with, so for one seed every backend gives the same records when the threads
per evaluation are equal (with other thread counts, losses agree to about 1e-5).
Pool workers read the tokenized corpus from the token cache by its key (one machine);
Ray tasks get it through Ray's object store and return kept weights with their result,
so a Ray cluster needs no shared filesystem.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import socket
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Iterator, Sequence

from genesis.core.genome import Genome
from genesis.core.recipe import Recipe
from genesis.core.records import Outcome
from genesis.errors import GenesisError

log = logging.getLogger(__name__)

BACKENDS = ("inprocess", "processes", "ray")
MAX_EARLY_DEATHS = 3  # workers that may die before starting a job until it counts as failed


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


def _run_job(setup: TrainingSetup, job: Job, tokens) -> Outcome:
    from genesis.train.trainer import train

    recipe = setup.recipe if job.steps is None else dataclasses.replace(setup.recipe, steps=job.steps)
    return train(job.genome, recipe, tokens, job.seed, setup.device,
                 weights_path=Path(job.weights_path) if job.weights_path else None,
                 give_up_above=job.give_up_above, measure_test=job.measure_test)


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
                yield job, _run_job(self.setup, job, self.tokens)
        finally:
            torch.set_num_threads(previous)

    def close(self) -> None:
        """Nothing to release."""


def _worker_main(connection, setup: TrainingSetup) -> None:
    """A pool worker: load the corpus once, then train jobs until told to stop."""
    import torch

    from genesis.train.data import load_cached

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


RAY_PROBE_SECONDS = 3
_RAY_STARTED: list[bool] = []  # a Ray instance or connection this process started, to shut down


def start_ray(address: str | None = None, workers: int | None = None) -> None:
    """Start a local Ray instance, or join the cluster at `address`, unless this process
    already has one (then it is left as it is, and never shut down by genesis).

    Called before a run folder exists, so a missing Ray or a bad address leaves nothing.

    Raises:
        GenesisError: Ray is not installed, or the cluster cannot be joined.
    """
    try:
        import ray
    except ImportError:
        raise GenesisError("the ray backend needs Ray: pip install 'genesis[ray]'") from None
    if ray.is_initialized():
        return
    if address and address != "auto":
        # Ray retries an unreachable cluster for a long time; a short TCP probe fails fast
        host, _, port = address.split("://")[-1].rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=RAY_PROBE_SECONDS).close()
        except (OSError, ValueError):
            raise GenesisError(f"cannot start or join Ray at {address}: nothing answers there") from None
    try:
        ray.init(address=address, num_cpus=None if address else (workers or os.cpu_count()),
                 include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as error:  # Ray raises many types for an unreachable or bad address
        raise GenesisError(f"cannot start or join Ray{f' at {address}' if address else ''}: "
                           f"{type(error).__name__}: {error}".splitlines()[0]) from None
    _RAY_STARTED.append(True)


class RayBackend:
    """Ray tasks, each training one genome with `setup.threads` CPUs (and a GPU when the
    device is cuda), on a local instance or a cluster of several machines.

    Nothing is shared through files: the token arrays travel once through Ray's object
    store, and a task that keeps weights returns them with its result, written into the
    run folder here. "auto" resolves on the worker, to the GPU Ray gave it, if any.
    """

    def __init__(self, setup: TrainingSetup, tokens, address: str | None = None, workers: int | None = None):
        import ray

        start_ray(address, workers)
        self.ray = ray
        self.setup = dataclasses.replace(setup, cache_dir=None)  # workers read no cache
        self.tokens = ray.put(tokens)
        gpus = 1 if setup.device.startswith("cuda") else 0
        self.task = ray.remote(num_cpus=setup.threads, num_gpus=gpus)(_ray_train)

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Outcome]]:
        pending = {self.task.remote(self.setup, job, self.tokens): job for job in jobs}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                result, weights = self.ray.get(done[0])
                outcome = Outcome.from_dict(result)
            except Exception as error:  # a worker that died surfaces here as a Ray error
                outcome, weights = Outcome(status="error", reason=f"ray task failed: {type(error).__name__}"), None
            if weights is not None and job.weights_path:
                _write_atomic(Path(job.weights_path), weights)
            yield job, outcome

    def close(self) -> None:
        """Shut down a Ray instance (or connection) genesis started; leave any other."""
        if _RAY_STARTED:
            self.ray.shutdown()
            _RAY_STARTED.clear()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def _ray_train(setup: TrainingSetup, job: Job, tokens) -> tuple[dict[str, Any], bytes | None]:
    import tempfile

    import torch

    torch.set_num_threads(setup.threads)
    if setup.device == "auto":
        setup = dataclasses.replace(setup, device="cuda" if torch.cuda.is_available() else "cpu")
    if not job.weights_path:
        return _run_job(setup, job, tokens).to_dict(), None
    with tempfile.TemporaryDirectory() as folder:  # on the worker's machine, returned as bytes
        local = Path(folder) / "model.safetensors"
        outcome = _run_job(setup, dataclasses.replace(job, weights_path=str(local)), tokens)
        return outcome.to_dict(), local.read_bytes() if local.exists() else None


def make_backend(name: str, setup: TrainingSetup, tokens=None, workers: int = 2,
                 ray_address: str | None = None, seed: int = 0):
    """Build the backend called `name` (one of `BACKENDS`, or `table:PATH`, a lookup in a
    sweep table for a run of seed `seed`: see `genesis.runs.table`)."""
    if name.startswith("table:"):
        from genesis.runs.table import Table, TableBackend

        return TableBackend(Table(name[len("table:"):]), seed)
    if name == "inprocess":
        return InProcessBackend(setup, tokens)
    if name == "processes":
        return ProcessPoolBackend(setup, workers)
    if name == "ray":
        return RayBackend(setup, tokens, ray_address, workers)
    raise GenesisError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
