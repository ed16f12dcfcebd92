"""How a run evaluates and confirms: frozen settings with the one set of defaults that
`genesis.evolve`, `genesis.sweep` and the CLI all read, checked and resolved before any
run folder exists.

A run folder stores them resolved (threads counted, "auto" device decided) under
"evaluator" and "noise" in its config.json, so a resumed run trains exactly as it began.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from genesis.errors import GenesisError
from genesis.runs.backends import TABLE_PREFIX, backend_names



@dataclass(frozen=True)
class EvaluatorSettings:
    """Where and how each genome is trained.

    Attributes:
        backend: "inprocess", "processes", "ray", a registered backend, or `table:PATH`
            (lookups in a sweep table instead of training).
        workers: worker processes (processes) or local Ray CPUs (ray).
        threads: torch threads per training; None: all cores in process, else the cores
            divided among the workers.
        ray_address: a Ray cluster to join instead of starting a local instance.
        device: torch device; "auto" is CUDA when available.
        rungs: successive halving inside each generation, as increasing fractions of the
            recipe's steps ending at 1; (1.0,) trains everything fully.
        early_stop: give up full-budget trainings whose curve is worse than this quantile
            of earlier generations' curves at the same point (0: never).
        replicates: trainings per genome, each with its own seed; fitness is their mean.
        race: with several replicates, train a genome's next replicate only while the
            mean of its trainings is no worse than the incumbent's (SMAC's
            intensification): seeds go where the ranking is uncertain.
    """

    backend: str = "inprocess"
    workers: int = 2
    threads: int | None = None
    ray_address: str | None = None
    device: str = "auto"
    rungs: tuple[float, ...] = (1.0,)
    early_stop: float = 0.0
    replicates: int = 1
    race: bool = False

    def resolved(self) -> EvaluatorSettings:
        """These settings checked, with threads counted and the device decided.

        Raises:
            GenesisError: a setting out of range or an unknown backend.
        """
        rungs = tuple(float(f) for f in self.rungs)
        if not rungs or rungs[-1] != 1.0 or rungs[0] <= 0 or any(not a < b for a, b in zip(rungs, rungs[1:])):
            raise GenesisError("rungs must be increasing fractions of the recipe's steps ending at 1")
        if not 0.0 <= self.early_stop <= 1.0:
            raise GenesisError("early stopping takes a quantile between 0 (off) and 1")
        if self.backend not in backend_names() and not self.backend.startswith(TABLE_PREFIX):
            raise GenesisError(f"unknown backend {self.backend!r} (choose from {', '.join(backend_names())}, "
                               f"or {TABLE_PREFIX}PATH for a sweep table)")
        if self.workers < 1 or (self.threads is not None and self.threads < 1):
            raise GenesisError("workers and threads must be at least 1")
        if self.replicates < 1:
            raise GenesisError("replicates must be at least 1")
        if self.race and self.replicates < 2:
            raise GenesisError("racing needs at least 2 replicates: the most trainings a genome may get")
        cores = os.cpu_count() or 1
        threads = self.threads or (cores if self.backend == "inprocess" else max(1, cores // self.workers))
        return dataclasses.replace(self, rungs=rungs, threads=threads,
                                   device=device_for(self.backend, self.device))

    def to_config(self) -> dict[str, Any]:
        """The settings as a run's config.json holds them."""
        return {**dataclasses.asdict(self), "rungs": list(self.rungs)}


@dataclass(frozen=True)
class NoiseSettings:
    """How a run measures its seed noise and confirms its champions (`genesis.core.noise`).

    Attributes:
        probes: after each generation, retrain this many best models with a fresh seed.
        confirm: at the end, confirm this many best models on the test split.
        confirm_seeds: fresh-seed trainings per confirmed model, probes included.
    """

    probes: int = 1
    confirm: int = 3
    confirm_seeds: int = 3

    def checked(self) -> NoiseSettings:
        """These settings, or `GenesisError` when one is negative."""
        if min(self.probes, self.confirm, self.confirm_seeds) < 0:
            raise GenesisError("noise probes and confirmation must be at least 0")
        return self

    def fresh_seeds_per_model(self) -> int:
        """The most fresh-seed trainings one model is promised: its confirmation seeds
        (which its probes count towards), or one probe."""
        return max(self.confirm_seeds if self.confirm else 0, 1 if self.probes else 0)

    def to_config(self) -> dict[str, Any]:
        """The settings as a run's config.json holds them."""
        return dataclasses.asdict(self)


def resolve_device(device: str) -> str:
    """"auto" becomes "cuda" when a GPU is visible, else "cpu"; other names pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_for(backend: str, device: str) -> str:
    """The device a backend trains on: resolved here, except "auto" on Ray, which each
    worker resolves to what its own machine has; a table trains on nothing."""
    if backend.startswith(TABLE_PREFIX):
        return "table"
    return device if backend == "ray" and device == "auto" else resolve_device(device)


def versions() -> dict[str, str]:
    """Versions of Python, genesis and the libraries that shape results."""
    names = ("torch", "deap", "tokenizers", "numpy", "optuna")
    return {"python": platform.python_version(), "genesis": version("genesis"),
            **{name: version(name) for name in names}}
