"""The Ray backend: tasks on a local Ray instance or a cluster (`pip install genesis[ray]`)."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from pathlib import Path
from typing import Any, Iterator, Sequence

from genesis.core.files import replace_bytes
from genesis.core.records import Outcome
from genesis.errors import GenesisError
from genesis.runs.backends.base import Job, TrainingSetup, run_job

RAY_PROBE_SECONDS = 3
LOOPBACK = "127.0.0.1"
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
            socket.create_connection((host or LOOPBACK, int(port)), timeout=RAY_PROBE_SECONDS).close()
        except (OSError, ValueError):
            raise GenesisError(f"cannot start or join Ray at {address}: nothing answers there") from None
    try:  # a local instance listens on loopback only; joining a cluster keeps the cluster's addresses
        ray.init(address=address, _node_ip_address=None if address else LOOPBACK,
                 num_cpus=None if address else (workers or os.cpu_count()),
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
                outcome, weights = Outcome(status="lost", reason=f"ray task failed: {type(error).__name__}"), None
            if weights is not None and job.weights_path:
                replace_bytes(Path(job.weights_path), weights)
            yield job, outcome

    def close(self) -> None:
        """Shut down a Ray instance (or connection) genesis started; leave any other."""
        stop_ray()


def stop_ray() -> None:
    """Shut down the Ray instance (or connection) `start_ray` started, if any."""
    if _RAY_STARTED:
        import ray

        ray.shutdown()
        _RAY_STARTED.clear()


def _ray_train(setup: TrainingSetup, job: Job, tokens) -> tuple[dict[str, Any], bytes | None]:
    import tempfile

    import torch

    torch.set_num_threads(setup.threads)
    if setup.device == "auto":
        setup = dataclasses.replace(setup, device="cuda" if torch.cuda.is_available() else "cpu")
    if not job.weights_path:
        return run_job(setup, job, tokens).to_dict(), None
    with tempfile.TemporaryDirectory() as folder:  # on the worker's machine, returned as bytes
        local = Path(folder) / "model.safetensors"
        outcome = run_job(setup, dataclasses.replace(job, weights_path=str(local)), tokens)
        return outcome.to_dict(), local.read_bytes() if local.exists() else None
