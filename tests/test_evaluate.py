"""Evaluator backends: identical records for one seed, and a dead worker does not stop a run."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from conftest import FIXTURES

import genesis
from genesis.core.genome import Genome
from genesis.core.recipe import Recipe
from genesis.core.records import TIMING_FIELDS
from genesis.runs.backends import Job, ProcessPoolBackend, TrainingSetup
from genesis.runs.backends.ray_cluster import LOOPBACK


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
                                          "ray_address": None, "device": "cpu", "rungs": [1.0],
                                          "early_stop": 0.0, "replicates": 1, "race": False}


@pytest.fixture
def ray_folder(monkeypatch):
    """A fresh, short folder for everything Ray writes (its sockets need short paths), so a
    test needs no /tmp/ray from an earlier run and leaves none behind."""
    pytest.importorskip("ray")
    folder = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))
    (folder / "ray").mkdir()  # Ray writes its address file here, whatever temp_dir says
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_ray_on_a_two_node_cluster_gives_identical_records_and_ships_the_weights(tmp_path, data_folder,
                                                                                  ray_folder):
    """Two Ray nodes on loopback with their own temp folders (Ray's simulated multi-node
    cluster): the tokens travel through the object store, kept weights come back with the
    results."""
    import ray
    from ray.cluster_utils import Cluster

    in_process = _evolve(tmp_path, data_folder, "inprocess", noise_probes=0, confirm=0)
    cluster = Cluster(initialize_head=True, head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 1,
                                                           "temp_dir": str(ray_folder / "h")})
    try:
        cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1, temp_dir=str(ray_folder / "n"))
        assert cluster.address.startswith(f"{LOOPBACK}:")
        on_ray = _evolve(tmp_path, data_folder, "ray", backend="ray", ray_address=cluster.address,
                         noise_probes=0, confirm=0)
        assert not ray.is_initialized()  # genesis disconnects what it connected
    finally:
        cluster.shutdown()
    assert _comparable(in_process) == _comparable(on_ray)
    kept = {p.name for p in (on_ray.path / "weights").glob("*.safetensors")}
    assert kept == {p.name for p in (in_process.path / "weights").glob("*.safetensors")} and kept
    for name in kept:
        assert (on_ray.path / "weights" / name).read_bytes() == (in_process.path / "weights" / name).read_bytes()


def test_a_local_ray_instance_binds_to_loopback_and_is_shut_down(ray_folder):
    import ray

    from genesis.runs.backends.ray_cluster import start_ray, stop_ray

    start_ray(workers=1)
    try:
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {LOOPBACK}
    finally:
        stop_ray()
    assert not ray.is_initialized()


def test_a_bad_ray_address_exits_2_before_a_run_folder_exists(tmp_path, ray_folder):
    from typer.testing import CliRunner

    from genesis.cli import app

    result = CliRunner().invoke(app, ["evolve", "--backend", "ray", "--ray-address", "127.0.0.1:1",
                                      "--output", str(tmp_path / "runs"), "--recipe", str(FIXTURES / "tiny.toml"),
                                      "--search-space", str(FIXTURES / "small_space.toml")])
    assert result.exit_code == 2 and "cannot start or join Ray" in result.output
    assert not (tmp_path / "runs").exists()


class _KillTheWorkers(genesis.Observer):
    """Kills every pool worker as soon as the first evaluation comes back."""

    def __init__(self):
        self.killed = []

    def on_evaluation(self, record):
        if not self.killed:
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)
                self.killed.append(child.pid)


def test_killed_workers_do_not_stop_a_run(tmp_path, data_folder):
    killer = _KillTheWorkers()
    run = genesis.evolve(population=6, generations=2, search_space=FIXTURES / "small_space.toml",
                         recipe=FIXTURES / "small_steps.toml", data=data_folder, seed=3,
                         output=tmp_path / "killed", backend="processes", workers=2, observers=[killer],
                         noise_probes=0, confirm=0)
    assert len(killer.killed) == 2
    assert run.status == "finished" and len(run.records) == 12
    failed = [r for r in run.records if r.outcome.status != "ok"]
    # the worker still training when killed loses its model; an idle one loses nothing
    # (a later genome that differs only in σ shares that training, and its failed outcome)
    assert len({r.genome.training_id for r in failed}) <= 1
    assert all(r.outcome.reason == "worker process died (exit code -9)" for r in failed)
    # the workers that replaced the killed ones train exactly as before: every genome of
    # generation 0 that did not die with a worker matches a run without kills
    reference = genesis.evolve(population=6, generations=1, search_space=FIXTURES / "small_space.toml",
                               recipe=FIXTURES / "small_steps.toml", data=data_folder, seed=3,
                               output=tmp_path / "reference", threads=1, noise_probes=0, confirm=0)
    expected = {r.genome_id: r.outcome.val_loss for r in reference.records}
    survived = [r for r in run.records if r.generation == 0 and r.outcome.status == "ok"]
    assert len(survived) >= 5 and all(r.outcome.val_loss == expected[r.genome_id] for r in survived)


def test_the_genome_of_a_worker_killed_mid_training_is_recorded_as_lost(tokens):
    recipe = Recipe(name="slow", steps=60, batch_size=8, seq_len=32, warmup_steps=2,
                    eval_batches=2, eval_batch_size=4)
    setup = TrainingSetup(recipe, tokens.key, os.environ["GENESIS_CACHE"], "cpu", 1)
    quick, slow = Genome(1, 1, 32, "relu", 0.01), Genome(4, 4, 256, "gelu", 0.01)
    extra = [Genome(1, 1, 32, activation, 0.01) for activation in ("gelu", "silu")]
    backend = ProcessPoolBackend(setup, workers=2)
    results = {}
    try:
        for job, outcome in backend.run([Job(quick, 1), Job(slow, 1)] + [Job(g, 1) for g in extra]):
            if not results:  # the quick genome is back; the slow one is many seconds from done
                assert job.genome == quick
                busy = next(w for w in backend.workers if w.job is not None)
                assert busy.job.genome == slow
                os.kill(busy.process.pid, signal.SIGKILL)
            results[job.genome] = outcome
    finally:
        backend.close()
    assert results[slow].status == "lost"
    assert results[slow].reason == "worker process died (exit code -9)"
    assert all(results[g].status == "ok" for g in [quick, *extra])
    assert all(not w.process.is_alive() for w in backend.workers)


def test_successive_halving_promotes_the_best_at_each_rung(tmp_path, data_folder, tokens):
    import dataclasses

    from genesis.core.records import training_seed
    from genesis.train.trainer import train

    recipe = Recipe(name="halving", steps=8, batch_size=4, seq_len=32, warmup_steps=1,
                    eval_batches=2, eval_batch_size=4)
    run = genesis.evolve(population=6, generations=1, search_space=FIXTURES / "small_space.toml",
                         recipe=recipe, data=tokens, seed=5, output=tmp_path, rungs=(0.25, 0.5, 1.0),
                         noise_probes=0, confirm=0)
    by_tokens = {}
    for record in run.records:
        by_tokens.setdefault(record.outcome.tokens, []).append(record)
    per_step = recipe.batch_size * recipe.seq_len
    assert {k // per_step: len(v) for k, v in by_tokens.items()} == {2: 3, 4: 1, 8: 2}
    assert run.config["evaluator"]["rungs"] == [0.25, 0.5, 1.0]
    # compute counts every rung a genome trained at: 2 steps, 2 + 4, or 2 + 4 + 8
    assert sorted(r.compute_tokens // per_step for r in run.records if not r.cached) == [2, 2, 2, 6, 14, 14]
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["compute_tokens"] == sum(r.compute_tokens for r in run.records)

    def loss_at(record, steps):  # what the rung measured: training is deterministic per seed
        return train(record.genome, dataclasses.replace(recipe, steps=steps), tokens,
                     training_seed(5, record.genome.training_id)).val_loss

    first = {r.genome_id: loss_at(r, 2) for r in run.records}
    went_on = [r.genome_id for r in run.records if r.outcome.tokens > 2 * per_step]
    stopped = [r.genome_id for r in run.records if r.outcome.tokens == 2 * per_step]
    assert max(first[g] for g in went_on) <= min(first[g] for g in stopped)
    second = {g: loss_at(next(r for r in run.records if r.genome_id == g), 4) for g in went_on}
    finalists = [r.genome_id for r in run.records if r.outcome.tokens == 8 * per_step]
    assert max(second[g] for g in finalists) <= min(v for g, v in second.items() if g not in finalists)


def test_early_stopping_gives_up_exactly_what_earlier_generations_bound(tmp_path, tokens):
    from genesis.search.fidelity import give_up_bounds
    from genesis.train.trainer import curve_parts

    recipe = Recipe(name="stopping", steps=16, batch_size=4, seq_len=32, warmup_steps=2,
                    eval_batches=2, eval_batch_size=4)
    run = genesis.evolve(population=6, generations=3, search_space=FIXTURES / "small_space.toml",
                         recipe=recipe, data=tokens, seed=4, output=tmp_path, early_stop=0.5)
    assert run.config["evaluator"]["early_stop"] == 0.5
    trained = [r for r in run.records if not r.cached]
    assert all(r.outcome.stopped_at is None for r in trained if r.generation == 0)
    stopped = [r for r in trained if r.outcome.stopped_at is not None]
    assert stopped, "the median rule gives up on some training"
    ends = [end for _, end in curve_parts(recipe.steps)]
    for record in (r for r in trained if r.generation > 0):
        earlier = [r.outcome.curve for r in trained
                   if r.generation < record.generation and r.outcome.stopped_at is None]
        bounds = give_up_bounds(earlier, 0.5)
        curve = record.outcome.curve
        above = [k for k, bound in enumerate(bounds) if bound is not None and k < len(curve)
                 and min(curve[: k + 1]) > bound]
        if record.outcome.stopped_at is None:
            assert not above and len(curve) == 8
        else:
            assert record.outcome.stopped_at == ends[above[0]] and len(curve) == above[0] + 1
            assert record.compute_tokens == record.outcome.tokens < recipe.tokens
            assert record.outcome.val_loss is not None
    assert all(r.outcome.stopped_at is None for r in run.best(3))  # full fidelity ranks first


def test_kept_weights_survive_results_read_in_any_order(tmp_path, data_folder, monkeypatch):
    """A parallel backend writes a training's weights before its result is read: settling
    the others in between must not prune them."""
    from genesis.runs.backends import InProcessBackend

    real_run = InProcessBackend.run

    def all_first_then_reversed(self, jobs):
        yield from reversed(list(real_run(self, jobs)))

    monkeypatch.setattr(InProcessBackend, "run", all_first_then_reversed)
    run = genesis.evolve(population=6, generations=1, search_space=FIXTURES / "small_space.toml",
                         recipe=FIXTURES / "tiny.toml", data=data_folder, output=tmp_path, seed=2,
                         noise_probes=0, confirm=0)
    best = run.best(5)
    assert all(run.store.weights_path(r.genome.training_id).exists() for r in best)
    kept = {p.stem for p in (run.path / "weights").glob("*.safetensors")}
    assert kept == {r.genome.training_id for r in best}
    assert not list((run.path / "weights" / ".staged").glob("*"))
