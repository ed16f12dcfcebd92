"""Evaluator backends: identical records for one seed, and a dead worker does not stop a run."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest

import genesis
from genesis.evaluate import Job, ProcessPoolBackend, TrainingSetup
from genesis.genome import Genome
from genesis.records import TIMING_FIELDS

from conftest import FIXTURES


def _evolve(tmp_path, data_folder, name, **kwargs):
    return genesis.evolve(population=4, generations=2, search_space=FIXTURES / "small_space.toml",
                          recipe=FIXTURES / "tiny.toml", data=data_folder, seed=12,
                          output=tmp_path / name, threads=1, **kwargs)


def _comparable(run) -> list[dict]:
    rows = []
    for record in run.records:
        row = record.to_dict()
        row["metrics"] = {k: v for k, v in row["metrics"].items() if k not in TIMING_FIELDS}
        rows.append(row)
    return rows


def test_in_process_and_process_pool_give_identical_records(tmp_path, data_folder):
    in_process = _evolve(tmp_path, data_folder, "inprocess")
    pooled = _evolve(tmp_path, data_folder, "processes", backend="processes", workers=2)
    assert _comparable(in_process) == _comparable(pooled)
    assert pooled.config["evaluator"] == {"backend": "processes", "workers": 2, "threads": 1,
                                          "ray_address": None, "device": "cpu"}


def test_ray_backend_on_a_local_instance_gives_identical_records(tmp_path, data_folder):
    pytest.importorskip("ray")
    in_process = _evolve(tmp_path, data_folder, "inprocess")
    on_ray = _evolve(tmp_path, data_folder, "ray", backend="ray", workers=2)
    assert _comparable(in_process) == _comparable(on_ray)


class _KillTheWorkers(genesis.Observer):
    """Kills every pool worker as soon as the first evaluation comes back.

    At that moment one worker has just delivered (idle) and the other is still training
    one of the five remaining genomes: exactly that genome must be recorded as failed.
    """

    def __init__(self):
        self.killed = []

    def on_evaluation(self, record):
        if not self.killed:
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)
                self.killed.append(child.pid)


def test_a_killed_worker_is_recorded_as_failed_and_the_run_goes_on(tmp_path, data_folder):
    killer = _KillTheWorkers()
    run = genesis.evolve(population=6, generations=2, search_space=FIXTURES / "small_space.toml",
                         recipe=FIXTURES / "small_steps.toml", data=data_folder, seed=3,
                         output=tmp_path, backend="processes", workers=2, observers=[killer])
    assert len(killer.killed) == 2
    assert run.status == "finished" and len(run.records) == 12
    failed = {r.genome_id: r for r in run.records if r.outcome.status == "error"}
    assert len(failed) == 1
    assert "worker process died (exit code -9)" in next(iter(failed.values())).outcome.reason
    assert all(r.outcome.status == "ok" for r in run.records if r.genome_id not in failed)


def test_pool_replaces_a_dead_worker_and_finishes_every_job(tokens, tiny_recipe):
    setup = TrainingSetup(tiny_recipe, tokens.key, os.environ["GENESIS_CACHE"], "cpu", 1)
    backend = ProcessPoolBackend(setup, workers=2)
    genomes = [Genome(1, 1, 32, activation, 0.01) for activation in ("relu", "gelu", "silu", "swiglu")]
    jobs = [Job(g, seed=1) for g in genomes]
    results = []
    try:
        for job, outcome in backend.run(jobs):
            if not results:  # after the first result, kill whichever worker is busy
                busy = [w for w in backend.workers if w.job is not None]
                if busy:
                    os.kill(busy[0].process.pid, signal.SIGKILL)
            results.append((job, outcome))
    finally:
        backend.close()
    assert sorted(j.genome.id for j, _ in results) == sorted(g.id for g in genomes)
    statuses = [o.status for _, o in results]
    assert statuses.count("ok") >= 3 and set(statuses) <= {"ok", "error"}
    assert all(w.process.is_alive() is False for w in backend.workers)
