"""Runs that survive: Optuna study, checkpoints, resume after SIGKILL, cache, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import FIXTURES
from typer.testing import CliRunner

import genesis
import genesis.runs.api as run_module
from genesis.cli import app
from genesis.core.records import TIMING_FIELDS
from genesis.errors import GenesisError

SMALL_SPACE = FIXTURES / "small_space.toml"
runner = CliRunner()


def _comparable(records) -> list[dict]:
    result = []
    for record in records:
        data = record.to_dict()
        data["metrics"] = {k: v for k, v in data["metrics"].items() if k not in TIMING_FIELDS}
        result.append(data)
    return result


def _only_run(folder: Path) -> Path:
    runs = [p for p in folder.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def _evolve_command(output: Path, data_folder: Path) -> list[str]:
    return [sys.executable, "-m", "genesis", "evolve", "--population", "4", "--generations", "3",
            "--search-space", str(SMALL_SPACE), "--recipe", str(FIXTURES / "small_steps.toml"),
            "--data", str(data_folder), "--seed", "5", "--output", str(output)]


def _records_written(output: Path) -> int:
    files = list(output.glob("*/evaluations.jsonl"))
    return len(files[0].read_text().splitlines()) if files else 0


def _start_and_stop(output: Path, data_folder: Path, after_records: int, sig: int):
    """Start a real `genesis evolve`, wait for `after_records` records, send `sig`."""
    process = subprocess.Popen(_evolve_command(output, data_folder), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _records_written(output) < after_records:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.01)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, stdout, stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_folder):
    output = tmp_path_factory.mktemp("straight")
    subprocess.run(_evolve_command(output, data_folder), check=True, capture_output=True)
    return genesis.Run.load(_only_run(output))


@pytest.mark.slow
@pytest.mark.parametrize("after_records", [4, 6, 9])  # end of generation 0, mid 1, mid 2
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, data_folder, uninterrupted,
                                                          after_records):
    code, _, _ = _start_and_stop(tmp_path, data_folder, after_records, signal.SIGKILL)
    assert code == -signal.SIGKILL
    folder = _only_run(tmp_path)
    assert genesis.Run.load(folder).status == "interrupted"
    before = [line for line in (folder / "evaluations.jsonl").read_text().splitlines(keepends=True)
              if line.endswith("\n")]

    result = subprocess.run([sys.executable, "-m", "genesis", "resume", str(folder)],
                            capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    resumed = genesis.Run.load(folder)
    assert resumed.status == "finished"
    assert _comparable(resumed.population) == _comparable(uninterrupted.population)
    assert resumed.best(1)[0].outcome.val_loss == uninterrupted.best(1)[0].outcome.val_loss
    assert _comparable(resumed.records) == _comparable(uninterrupted.records)
    # evaluations finished before the kill were not redone: their lines stand untouched
    # and none is recorded twice
    after = (folder / "evaluations.jsonl").read_text().splitlines(keepends=True)
    assert after[: len(before)] == before and len(after) == len(resumed.records) == 12


def test_optuna_reads_the_study_back(tmp_path, data_folder):
    run = genesis.evolve(population=3, generations=2, search_space=SMALL_SPACE,
                         recipe=FIXTURES / "tiny.toml", data=data_folder, output=tmp_path, seed=2)
    study = optuna.load_study(study_name=run.id, storage=f"sqlite:///{run.path / 'study.db'}")
    trials = study.get_trials()
    trained = [r for r in run.records if not r.cached]  # a cached repeat is no new trial
    assert len(trials) == len(trained) < len(run.records) == 6
    by_key = {(r.generation, r.index): r for r in trained}
    for trial in trials:
        record = by_key[(trial.user_attrs["generation"], trial.user_attrs["index"])]
        assert trial.value == record.outcome.val_loss
        searched = ("n_layer", "n_head", "d_model", "activation", "sigma")  # the space's traits
        assert trial.params == {name: getattr(record.genome, name) for name in searched}
        assert trial.user_attrs["genome_id"] == record.genome_id
        assert trial.user_attrs["operator"] == record.operator
        assert trial.user_attrs["generation"] == record.generation
    assert study.best_value == run.best(1)[0].outcome.val_loss


def test_the_study_stores_lower_fidelity_as_pruned_and_several_objectives_as_a_front(tmp_path, data_folder):
    recipe = genesis.Recipe(name="rungs", steps=16, batch_size=4, seq_len=32, warmup_steps=1,
                            eval_batches=2, eval_batch_size=4)
    run = genesis.evolve(population=4, generations=1, search_space=SMALL_SPACE, recipe=recipe,
                         data=data_folder, output=tmp_path, rungs=(0.5, 1.0), noise_probes=0, confirm=0)
    study = optuna.load_study(study_name=run.id, storage=f"sqlite:///{run.path / 'study.db'}")
    states = [t.state for t in study.get_trials()]
    lower = [r for r in run.records if r.outcome.tokens < recipe.tokens]
    assert states.count(optuna.trial.TrialState.PRUNED) == len(lower) == 2
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    pruned = next(t for t in study.get_trials() if t.state == optuna.trial.TrialState.PRUNED)
    assert pruned.intermediate_values and pruned.value is None

    run = genesis.evolve(population=3, generations=1, search_space=SMALL_SPACE, recipe=FIXTURES / "tiny.toml",
                         data=data_folder, output=tmp_path, noise_probes=0, confirm=0,
                         evolution=genesis.EvolutionConfig(strategy="nsga2", objectives=("val_loss", "params")))
    study = optuna.load_study(study_name=run.id, storage=f"sqlite:///{run.path / 'study.db'}")
    assert len(study.directions) == 2 and study.best_trials
    assert all(len(t.values) == 2 for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE)


def test_fitness_cache_skips_repeated_genomes(tmp_path, data_folder, monkeypatch):
    import genesis.train.trainer

    calls = []
    real_train = genesis.train.trainer.train

    def counting_train(genome, *args, **kwargs):
        calls.append(genome.training_id)
        return real_train(genome, *args, **kwargs)

    monkeypatch.setattr(genesis.train.trainer, "train", counting_train)
    run = genesis.evolve(population=4, generations=3, search_space=SMALL_SPACE,
                         recipe=FIXTURES / "tiny.toml", data=data_folder, output=tmp_path, seed=1,
                         noise_probes=0, confirm=0)
    # one training per architecture: repeats and σ-only variants come from the cache
    assert len(calls) == len(set(calls)) == len({r.genome.training_id for r in run.records})
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["cache_hits"] == len(run.records) - len(calls) > 0  # elites at least


def test_a_diverging_genome_is_a_failed_trial_and_the_run_finishes(tmp_path, data_folder):
    with pytest.raises(genesis.GenesisError, match="every genome of generation 0 failed"):
        genesis.evolve(population=3, generations=2, search_space=SMALL_SPACE,
                       recipe=FIXTURES / "huge_lr.toml", data=data_folder, output=tmp_path)
    run = genesis.Run.load(_only_run(tmp_path))
    assert run.status == "interrupted" and len(run.records) == 3  # nothing claims success
    result = CliRunner().invoke(app, ["evolve", "--population", "2", "--generations", "1", "--search-space",
                                      str(SMALL_SPACE), "--recipe", str(FIXTURES / "huge_lr.toml"),
                                      "--data", str(data_folder), "--output", str(tmp_path / "cli")])
    assert result.exit_code == 2 and "failed to train" in result.output
    study = optuna.load_study(study_name=run.id, storage=f"sqlite:///{run.path / 'study.db'}")
    trials = study.get_trials()
    assert {t.state for t in trials} == {optuna.trial.TrialState.FAIL}
    assert all(t.user_attrs["status"] == "diverged" and t.user_attrs["reason"] for t in trials)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_prints_the_resume_command(tmp_path, data_folder):
    code, _, stderr = _start_and_stop(tmp_path, data_folder, 2, signal.SIGINT)
    folder = _only_run(tmp_path)
    assert code == 130
    assert f"genesis resume {folder}" in stderr.replace("\n", "")
    assert genesis.Run.load(folder).status == "interrupted"
    result = runner.invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0 and "interrupted" in result.output
    genesis.resume(folder)
    result = runner.invoke(app, ["runs", str(tmp_path)])
    assert "finished" in result.output and "3/3" in result.output


def test_bad_storage_url_leaves_no_run_behind(tmp_path, data_folder):
    with pytest.raises(GenesisError, match="cannot open the Optuna storage"):
        genesis.evolve(population=2, generations=1, search_space=SMALL_SPACE,
                       recipe=FIXTURES / "tiny.toml", data=data_folder, output=tmp_path,
                       storage="nosuchdb://nowhere")
    assert list(tmp_path.iterdir()) == []


def _finished_run(tmp_path, data_folder) -> Path:
    return genesis.evolve(population=2, generations=1, search_space=SMALL_SPACE,
                          recipe=FIXTURES / "tiny.toml", data=data_folder,
                          output=tmp_path / "runs").path


def test_resume_errors_exit_2(tmp_path, data_folder):
    not_a_run = tmp_path / "plain"
    not_a_run.mkdir()
    result = runner.invoke(app, ["resume", str(not_a_run)])
    assert result.exit_code == 2 and "is not a genesis run" in result.output

    run_path = _finished_run(tmp_path, data_folder)
    result = runner.invoke(app, ["resume", str(run_path)])
    assert result.exit_code == 2 and "already finished" in result.output

    (run_path / "summary.json").unlink()  # now it looks interrupted
    result = runner.invoke(app, ["evolve", "--resume", str(run_path), "--search-space", "default"])
    assert result.exit_code == 2 and "differs from the one" in result.output

    config = json.loads((run_path / "config.json").read_text())
    (run_path / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    result = runner.invoke(app, ["resume", str(run_path)])
    assert result.exit_code == 2 and "format version 99" in result.output


@pytest.mark.parametrize("command", [["evolve", "--population", "1", "--output", "OUT"],
                                     ["evolve", "--replicates", "0", "--output", "OUT"],
                                     ["sweep", "--seeds", "0", "--output", "OUT"]])
def test_a_refused_setting_prints_one_error_line_and_nothing_else(tmp_path, command):
    # no corpus is there to read: the setting is refused first, before any progress bar
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    result = runner.invoke(app, [*args, "--data", str(tmp_path / "no-corpus")])
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert len(result.output.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


def test_unwritable_output_and_missing_split_exit_2(tmp_path, data_folder):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["evolve", "--output", str(blocker / "runs"), "--data",
                                 str(data_folder), "--search-space", str(SMALL_SPACE),
                                 "--recipe", str(FIXTURES / "tiny.toml")])
    assert result.exit_code == 2 and "cannot create a run folder" in result.output

    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("train", "valid"):
        (partial / f"{name}.txt").write_text("text\n")
    result = runner.invoke(app, ["evolve", "--output", str(tmp_path / "runs"), "--data", str(partial)])
    assert result.exit_code == 2 and "no test.txt" in result.output
    assert not (tmp_path / "runs").exists()


def test_runs_lists_a_finished_run(tmp_path, data_folder):
    run_path = _finished_run(tmp_path, data_folder)
    result = CliRunner().invoke(app, ["runs", str(run_path.parent)], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert run_path.name in result.output and "finished" in result.output and "1/1" in result.output


def test_records_cut_by_a_crash_are_dropped_before_appending(tmp_path, data_folder):
    run_path = _finished_run(tmp_path, data_folder)
    log = run_path / "evaluations.jsonl"
    whole = log.read_text()
    log.write_text(whole + '{"generation": 0, "ind')  # a line cut mid-write
    store = run_module.RunStore(run_path)
    assert len(store.drop_partial_record()) == 2
    assert log.read_text() == whole


def test_a_corrupt_line_in_the_middle_of_the_log_is_an_error_naming_it(tmp_path, data_folder):
    run_path = _finished_run(tmp_path, data_folder)
    log = run_path / "evaluations.jsonl"
    first, second = log.read_text().splitlines()
    log.write_text(first[:40] + "\n" + second + "\n")  # damage, not a crash: later records follow
    with pytest.raises(GenesisError, match="line 1 is corrupt"):
        run_module.RunStore(run_path).records()
    result = CliRunner().invoke(app, ["report", str(run_path)])
    assert result.exit_code == 2 and "line 1 is corrupt" in result.output
    assert log.read_text() == first[:40] + "\n" + second + "\n"  # nothing was dropped


def test_the_run_lock_is_exclusive_and_only_force_breaks_a_foreign_one(tmp_path):
    store = run_module.RunStore.create(tmp_path, "locked", {"seed": 0})
    store.lock()
    with pytest.raises(GenesisError, match="already running"):
        run_module.RunStore(store.path).lock()  # this live process holds it
    store.unlock()
    (store.path / "run.lock").write_text(json.dumps({"pid": 1, "host": "another-machine"}))
    with pytest.raises(GenesisError, match="--force"):
        store.lock()
    assert store.status() == "running"  # a holder elsewhere cannot be seen dying
    store.lock(force=True)
    assert json.loads((store.path / "run.lock").read_text())["pid"] == os.getpid()
    store.unlock()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (store.path / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    store.lock()  # a dead process of this host left it: replaced without --force
    assert json.loads((store.path / "run.lock").read_text())["pid"] == os.getpid()


def test_resume_force_flag_reaches_the_lock(tmp_path):
    result = CliRunner().invoke(app, ["resume", "--help"])
    assert "--force" in result.output
