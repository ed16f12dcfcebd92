"""Evaluator backends: where the trainings of a generation run.

All backends take the same `Job`s and yield `(job, outcome)` pairs as trainings finish:

- `InProcessBackend`: one training after another in this process.
- `ProcessPoolBackend`: N worker processes (spawn start method) of T threads each; a
  worker that dies is replaced and its training recorded as lost (retrained if needed again).
- `RayBackend`: Ray tasks on a local or remote cluster (`pip install genesis[ray]`).

A training's result depends only on its genome, seed, recipe and the number of threads
it runs with, so for one seed every backend gives the same records when the threads
per evaluation are equal (with other thread counts, losses agree to about 1e-5).
Pool workers read the tokenized corpus from the token cache by its key (one machine);
Ray tasks get it through Ray's object store and return kept weights with their result,
so a Ray cluster needs no shared filesystem.
"""

from __future__ import annotations

from typing import Callable

from genesis.errors import GenesisError
from genesis.runs.backends.base import TABLE_PREFIX, Backend, Job, TrainingSetup
from genesis.runs.backends.inprocess import InProcessBackend
from genesis.runs.backends.pool import ProcessPoolBackend
from genesis.runs.backends.ray_cluster import RayBackend, start_ray

# name -> factory(setup, tokens, workers, ray_address): a new backend is one class and one line here
BackendFactory = Callable[[TrainingSetup, object, int, "str | None"], Backend]
_REGISTRY: dict[str, BackendFactory] = {
    "inprocess": lambda setup, tokens, workers, address: InProcessBackend(setup, tokens),
    "processes": lambda setup, tokens, workers, address: ProcessPoolBackend(setup, workers),
    "ray": lambda setup, tokens, workers, address: RayBackend(setup, tokens, address, workers),
}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `factory(setup, tokens, workers, ray_address)` the backend called `name`
    (`--backend name`, `genesis.evolve(backend=name)`)."""
    if name in ("inprocess", "processes", "ray") or name.startswith(TABLE_PREFIX):
        raise ValueError(f"{name!r} is a built-in backend")
    _REGISTRY[name] = factory


def backend_names() -> tuple[str, ...]:
    """Every registered backend (besides `table:PATH`)."""
    return tuple(_REGISTRY)


def make_backend(name: str, setup: TrainingSetup, tokens=None, workers: int = 2,
                 ray_address: str | None = None) -> Backend:
    """Build the backend called `name`, one of `backend_names()` (a `table:PATH` lookup is
    built by `genesis.runs.table`, which sits above the backends)."""
    if name not in _REGISTRY:
        raise GenesisError(f"unknown backend {name!r} (choose from {', '.join(_REGISTRY)}, or table:PATH)")
    return _REGISTRY[name](setup, tokens, workers, ray_address)


__all__ = ["TABLE_PREFIX", "Backend", "Job", "TrainingSetup", "backend_names", "make_backend", "register_backend", "start_ray"]
