"""The process-pool backend: N spawned worker processes of T threads each."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Iterator, Sequence

from genesis.core.records import Outcome
from genesis.errors import GenesisError
from genesis.runs.backends.base import Job, TrainingSetup, run_job

log = logging.getLogger(__name__)

MAX_EARLY_DEATHS = 3  # workers that may die before starting a job until it counts as failed


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
        connection.send(("done", run_job(setup, job, tokens).to_dict()))


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
    memory) we know exactly which genome it held: that training is recorded as lost, a
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
                    yield job, Outcome(status="lost", reason=f"worker process died (exit code {code})")

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
