"""End to end: DEAP evolves genomes that really train; runs reproduce; errors exit 2."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import statistics
import subprocess
import sys

import pytest
from conftest import FIXTURES
from typer.testing import CliRunner

import genesis
from genesis.cli import app
from genesis.core.records import TIMING_FIELDS, Outcome
from genesis.core.space import load_search_space
from genesis.search.loop import Evolution, EvolutionConfig
from genesis.search.population import Candidate

SMALL_SPACE = FIXTURES / "small_space.toml"
TINY = FIXTURES / "tiny.toml"


def _comparable(record: dict) -> dict:
    metrics = {k: v for k, v in record["metrics"].items() if k not in TIMING_FIELDS}
    return {**record, "metrics": metrics}


def _tiny_run(tmp_path, data_folder, generations=2, **kwargs):
    return genesis.evolve(population=3, generations=generations, search_space=SMALL_SPACE, recipe=TINY,
                          data=data_folder, output=tmp_path, **kwargs)


def test_tiny_evolve_end_to_end_writes_a_run_folder(tmp_path, data_folder):
    run = _tiny_run(tmp_path, data_folder, seed=1)
    assert len(run.records) == 6
    assert {r.generation for r in run.records} == {0, 1}
    assert all(r.outcome.status == "ok" for r in run.records)
    assert len(run.population) == 3 and run.best(1)[0].outcome.val_ppl > 1
    config = json.loads((run.path / "config.json").read_text())
    assert config["seed"] == 1 and config["recipe"]["steps"] == 4
    assert config["search_space"]["traits"]["d_model"]["values"] == [32, 64]
    lines = (run.path / "evaluations.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert {"genome", "genome_id", "parents", "generation", "operator", "metrics", "status"} <= set(first)
    second_generation = [json.loads(line) for line in lines[3:]]
    assert second_generation[0]["operator"] == "elite"
    assert all(r["parents"] for r in second_generation)
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["evaluations"] == 6 and summary["trained"] + summary["cache_hits"] == 6


def test_optional_traits_evolve_end_to_end(tmp_path, data_folder):
    run = genesis.evolve(population=4, generations=2, search_space=FIXTURES / "rich_space.toml",
                         recipe=TINY, data=data_folder, output=tmp_path, seed=4)
    assert all(r.outcome.status == "ok" for r in run.records)
    assert {r.genome.norm for r in run.records} == {"layernorm", "rmsnorm"}
    assert {r.genome.qk_norm for r in run.records} == {"off", "on"}
    trial_params = genesis_study_params(run)
    assert all({"norm", "ffn_mult", "qk_norm"} <= set(p) for p in trial_params)


def genesis_study_params(run) -> list[dict]:
    import optuna

    study = optuna.load_study(study_name=run.id, storage=f"sqlite:///{run.path / 'study.db'}")
    return [t.params for t in study.get_trials()]


def test_two_runs_with_one_seed_give_identical_records(tmp_path, data_folder):
    first = _tiny_run(tmp_path / "a", data_folder, seed=7)
    second = _tiny_run(tmp_path / "b", data_folder, seed=7)
    other = _tiny_run(tmp_path / "c", data_folder, seed=8)
    records = [[_comparable(r.to_dict()) for r in run.records] for run in (first, second, other)]
    assert records[0] == records[1]
    assert records[0] != records[2]


def _fake_evaluate(candidates):
    """A stand-in fitness with one optimum: 3 layers, 96 wide, silu, sigma 1e-3."""
    def loss(g):
        return (abs(g.d_model - 96) / 32 + abs(g.n_layer - 3) + (g.activation != "silu")
                + abs(math.log10(g.sigma) + 3))
    return [c.to_record(Outcome("ok", val_loss=loss(c.genome))) for c in candidates]


def test_evolution_improves_a_known_fitness_and_keeps_the_elite():
    space = load_search_space()
    config = EvolutionConfig(population_size=10, generations=8, seed=3)
    loop = Evolution(space, config, _fake_evaluate)
    loop.run()
    bests = [entry["best"] for entry in loop.logbook]
    assert bests == sorted(bests, reverse=True)  # elitism: the best never gets worse
    assert bests[-1] < bests[0]


def test_aging_evolution_removes_the_oldest_not_the_worst():
    space = load_search_space()
    config = EvolutionConfig(population_size=6, generations=8, seed=4, strategy="aging", aging_batch=2)
    loop = Evolution(space, config, _fake_evaluate)
    history = []
    for _ in range(config.generations):
        alive = {r.genome_id for r in loop.population}
        children = loop.step()
        if history:  # every child mutates a tournament winner of the living population
            assert all(r.operator == "mutation" and r.parents[0] in alive for r in children)
            assert all(r.genome_id not in alive for r in children)
        history.extend(children)
        assert [r.genome for r in loop.population] == [r.genome for r in history[-6:]]
    assert len(history) == 6 + 7 * 2


def test_aging_tournaments_compare_the_objective_the_run_minimizes():
    def size_and_loss(candidates):  # params is the objective here; the validation loss disagrees with it
        return [c.to_record(Outcome("ok", val_loss=1 / c.genome.d_model, non_embedding_params=c.genome.d_model))
                for c in candidates]

    config = EvolutionConfig(population_size=6, generations=2, seed=4, strategy="aging", aging_batch=2,
                             objectives=("params",))
    loop = Evolution(load_search_space(), config, size_and_loss)
    loop.step()
    compared, select = [], loop.toolbox.select
    loop.toolbox.select = lambda individuals, k: compared.extend(individuals) or select(individuals, k)
    loop.step()
    assert compared and all(i.fitness.values == i.record.outcome.rank("params") for i in compared)


@pytest.mark.parametrize("strategy", ["tpe", "nsga2-optuna"])
def test_optuna_samplers_propose_valid_new_genomes_and_learn(strategy):
    space = load_search_space()
    loop = Evolution(space, EvolutionConfig(population_size=6, generations=5, seed=1, strategy=strategy),
                     _fake_evaluate)
    loop.run()
    later = [entry.genome for entry in loop.history.values()]
    assert len(later) == len({g.id for g in later}) >= 25  # new genomes, not repeats
    assert all(space.is_valid(genome) for genome in later)
    assert loop.population[0].operator == strategy
    bests = [entry["best"] for entry in loop.logbook]
    assert min(bests[1:]) < bests[0]


def _two_objectives(candidates):
    """Loss falls with size, size is the second objective: a true trade-off. The other
    traits break ties by a hair, so no two genomes share a point of the front."""
    def loss(g):
        return (10.0 - g.d_model / 64 - g.n_layer + 1e-4 * abs(math.log10(g.sigma) + 3)
                + 1e-5 * ("relu", "gelu", "silu", "swiglu").index(g.activation) + 1e-6 * g.n_head)
    return [c.to_record(Outcome("ok", val_loss=loss(c.genome),
                                non_embedding_params=c.genome.n_layer * c.genome.d_model ** 2))
            for c in candidates]


def _vector(record, objectives):
    return tuple(record.outcome.objective(o) for o in objectives)


def _dominates(a, b, objectives):
    left = [a.outcome.objective(o) for o in objectives]
    right = [b.outcome.objective(o) for o in objectives]
    return all(x <= y for x, y in zip(left, right)) and left != right


def test_nsga2_keeps_the_non_dominated_front_of_everything_evaluated():
    objectives = ("val_loss", "params")
    space = load_search_space()
    config = EvolutionConfig(population_size=8, generations=6, seed=2, strategy="nsga2",
                             objectives=objectives)
    seen = []
    loop = Evolution(space, config, lambda cs: seen.extend(_two_objectives(cs)) or seen[-len(cs):])
    loop.run()
    distinct = {r.genome_id: r for r in seen}.values()
    front = {_vector(r, objectives) for r in distinct
             if not any(_dominates(o, r, objectives) for o in distinct)}
    kept = {_vector(r, objectives) for r in loop.population}
    assert 2 <= len(front) <= config.population_size  # a trade-off that fits the population
    assert front <= kept  # elitist survival lost no point of the front found so far
    survivors = list(loop.population)
    best_front = [r for r in survivors if not any(_dominates(o, r, objectives) for o in survivors)]
    assert all(not _dominates(a, b, objectives) for a in best_front for b in best_front)


def _evaluated_from_generation(strategy, objectives, first, seed):
    seen = []
    config = EvolutionConfig(population_size=8, generations=6, seed=seed, strategy=strategy,
                             objectives=objectives)
    Evolution(load_search_space(), config, lambda cs: seen.extend(_two_objectives(cs)) or seen[-len(cs):]).run()
    return [r.outcome for r in seen if r.generation >= first]


@pytest.mark.parametrize("seed", [0, 1])
def test_optuna_nsga2_breeds_from_the_history_not_at_random(seed):
    # Rebuilt trials must belong to their generations, or NSGA-II samples at random.
    bred = _evaluated_from_generation("nsga2-optuna", ("val_loss",), 3, seed)
    sampled = _evaluated_from_generation("random", ("val_loss",), 3, seed)
    assert statistics.mean(o.val_loss for o in bred) < statistics.mean(o.val_loss for o in sampled) - 0.5


@pytest.mark.parametrize("strategy", ["nsga2-optuna", "tpe"])
def test_optuna_samplers_search_several_objectives(strategy):
    # Loss falls with size: one objective breeds big models, loss and size keep small ones too.
    one = _evaluated_from_generation(strategy, ("val_loss",), 3, 0)
    two = _evaluated_from_generation(strategy, ("val_loss", "params"), 3, 0)
    mean_params = [statistics.mean(o.non_embedding_params for o in outcomes) for outcomes in (one, two)]
    assert mean_params[1] < 0.6 * mean_params[0]


def test_fitness_is_compared_at_equal_fidelity_first():
    from genesis.search.fitness import Individual

    genome = load_search_space().sample(random.Random(0))
    full = Candidate(0, 0, genome).to_record(Outcome("ok", val_loss=6.0, tokens=1000))
    brief = Candidate(0, 1, genome).to_record(Outcome("ok", val_loss=5.0, tokens=250))
    failed = Candidate(0, 2, genome).to_record(Outcome("diverged", tokens=1000))
    assert Individual(full).fitness > Individual(brief).fitness > Individual(failed).fitness
    better = Candidate(0, 3, genome).to_record(Outcome("ok", val_loss=5.5, tokens=1000))
    assert Individual(better).fitness > Individual(full).fitness


def _costly_evaluate(candidates):
    """`_fake_evaluate` where every evaluation cost 1000 training tokens."""
    return [dataclasses.replace(r, compute_tokens=1000) for r in _fake_evaluate(candidates)]


def test_a_token_budget_stops_after_the_generation_that_spends_it():
    space = load_search_space()
    config = EvolutionConfig(population_size=4, generations=50, seed=1, budget_tokens=10_000)
    loop = Evolution(space, config, _costly_evaluate)
    loop.run()
    assert loop.generation == 3 and loop.spent_tokens == 12_000  # 4000 a generation
    resumed = Evolution(space, config, _costly_evaluate)
    resumed.restore(json.loads(json.dumps(loop.state())))
    assert resumed.done and resumed.spent_tokens == 12_000


def test_evolve_counts_compute_and_stops_on_its_token_budget(tmp_path, data_folder):
    per_genome = 4 * 4 * 32  # tiny.toml: steps x batch x sequence
    run = _tiny_run(tmp_path, data_folder, seed=2, generations=10, budget_tokens=4 * per_genome)
    assert {r.generation for r in run.records} == {0, 1}
    assert all(r.compute_tokens == (0 if r.cached else per_genome) for r in run.records)
    assert 4 * per_genome <= sum(r.compute_tokens for r in run.records) < 7 * per_genome


def test_several_objectives_need_a_multi_objective_strategy():
    with pytest.raises(ValueError, match="need --strategy nsga2 or tpe or nsga2-optuna"):
        EvolutionConfig(objectives=("val_loss", "params")).validate()
    with pytest.raises(ValueError, match="objectives must be"):
        EvolutionConfig(strategy="nsga2", objectives=("val_loss", "wings")).validate()
    EvolutionConfig(strategy="nsga2", objectives=("val_loss", "size_bytes")).validate()


def test_random_search_samples_every_generation_anew():
    space = load_search_space()
    loop = Evolution(space, EvolutionConfig(population_size=5, generations=3, seed=2, strategy="random"),
                     _fake_evaluate)
    loop.run()
    assert loop.population[0].generation == 2
    assert all(r.operator == "random" and not r.parents for r in loop.population)


def test_deap_state_does_not_leak_between_interleaved_runs():
    space = load_search_space()
    config = EvolutionConfig(population_size=6, generations=4, seed=11)
    alone = Evolution(space, config, _fake_evaluate)
    alone.run()
    random.seed(12345)
    before = random.random()
    random.seed(12345)
    a, b = Evolution(space, config, _fake_evaluate), Evolution(space, config, _fake_evaluate)
    for _ in range(config.generations):  # interleave two runs step by step
        a.step()
        b.step()
    assert random.random() == before  # the global random stream was left untouched
    genomes = [[r.genome for r in loop.population] for loop in (alone, a, b)]
    assert genomes[0] == genomes[1] == genomes[2]
    import deap.creator
    assert not hasattr(deap.creator, "Individual") and not hasattr(deap.creator, "FitnessMin")


def test_a_failing_genome_gets_the_worst_fitness_and_the_run_goes_on(tmp_path, data_folder, monkeypatch):
    import genesis.train.trainer

    real_train = genesis.train.trainer.train

    def two_layers_fail(genome, *args, **kwargs):
        if genome.n_layer == 2:
            return Outcome(status="error", reason="RuntimeError: planted")
        return real_train(genome, *args, **kwargs)

    monkeypatch.setattr(genesis.train.trainer, "train", two_layers_fail)
    run = genesis.evolve(population=4, generations=2, search_space=SMALL_SPACE, recipe=TINY,
                         data=data_folder, output=tmp_path, seed=2, noise_probes=0, confirm=0)
    failed = [r for r in run.records if r.genome.n_layer == 2]
    assert failed and all(r.outcome.fitness == math.inf and r.outcome.reason.endswith("planted") for r in failed)
    assert run.status == "finished" and len(run.records) == 8
    assert run.best(1)[0].genome.n_layer == 1 and all(best is not None for best in run.generation_best())


@pytest.mark.parametrize("strategy", ["evolution", "aging", "random", "tpe", "nsga2-optuna"])
def test_state_round_trip_continues_identically(strategy):
    space = load_search_space()
    config = EvolutionConfig(population_size=6, generations=5, seed=5, strategy=strategy)
    straight = Evolution(space, config, _fake_evaluate)
    straight.run()
    interrupted = Evolution(space, config, _fake_evaluate)
    interrupted.step()
    interrupted.step()
    state = json.loads(json.dumps(interrupted.state()))
    resumed = Evolution(space, config, _fake_evaluate)
    resumed.restore(state)
    resumed.run()
    assert [r.to_dict() for r in resumed.population] == [r.to_dict() for r in straight.population]


runner = CliRunner()


def test_cli_evolve_runs_and_prints_the_best_table(tmp_path, data_folder):
    result = runner.invoke(app, ["evolve", "--population", "3", "--generations", "2",
                                 "--search-space", str(SMALL_SPACE), "--recipe", str(TINY),
                                 "--data", str(data_folder), "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Best genomes" in result.output and "generation 1" in result.output
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("args, message", [
    (["--search-space", str(FIXTURES / "malformed.toml")], "malformed TOML"),
    (["--search-space", str(FIXTURES / "unknown_trait.toml")], "unknown trait 'n_wings'"),
    (["--search-space", str(FIXTURES / "impossible_domain.toml")], "impossible domain"),
    (["--search-space", str(FIXTURES / "huge_space.toml")], "above the limit"),
    (["--recipe", "no-such-recipe"], "no such file"),
    (["--data", "/no/such/folder"], "does not exist"),
    (["--population", "1"], "population size must be at least 2"),
    (["--budget-tokens", "lots"], "--budget-tokens takes a token count"),
    (["--budget-tokens", "-5"], "token budget must not be negative"),
])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, message):
    result = runner.invoke(app, ["evolve", "--output", str(tmp_path / "runs"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_unreachable_hub_exits_2_naming_the_data_option(tmp_path):
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin", "GENESIS_CACHE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "genesis", "evolve", "--output", str(tmp_path / "r")],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "--data PATH" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_optuna_samplers_see_lower_fidelity_results_as_pruned(monkeypatch):
    from optuna.trial import TrialState

    import genesis.search.strategies.optuna as samplers

    made = []
    real = samplers.create_trial
    monkeypatch.setattr(samplers, "create_trial", lambda **kwargs: made.append(real(**kwargs)) or made[-1])
    space = load_search_space()
    full, brief, failed = (space.sample(random.Random(seed)) for seed in (1, 2, 3))
    history = [samplers.Evaluated(full, (5.0,), 0, 1000), samplers.Evaluated(brief, (4.0,), 0, 250),
               samplers.Evaluated(failed, (math.inf,), 0, 1000)]
    samplers.sample_genomes("tpe", space, history, count=2, seed=0, generation=1)
    assert [t.state for t in made] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert made[0].value == 5.0 and made[1].intermediate_values == {250: 4.0}


def test_nsga2_survival_compares_at_equal_fidelity():
    objectives = ("val_loss", "params")

    def brief_when_small(candidates):  # small genomes stop early with a tempting low loss
        records = _two_objectives(candidates)
        return [dataclasses.replace(r, outcome=dataclasses.replace(
            r.outcome, val_loss=1.0, tokens=250)) if r.genome.d_model <= 96 else
            dataclasses.replace(r, outcome=dataclasses.replace(r.outcome, tokens=1000)) for r in records]

    config = EvolutionConfig(population_size=6, generations=4, seed=3, strategy="nsga2", objectives=objectives)
    seen = []
    loop = Evolution(load_search_space(), config, lambda cs: seen.extend(brief_when_small(cs)) or seen[-len(cs):])
    loop.run()
    full = {r.genome_id for r in seen if r.outcome.tokens == 1000}
    assert full and any(r.outcome.tokens == 250 for r in seen)
    kept_full = [r for r in loop.population if r.outcome.tokens == 1000]
    assert len(kept_full) == min(len(full), config.population_size)  # full-budget genomes first


def test_json_outputs_version_and_dataframe(tmp_path, data_folder):
    result = runner.invoke(app, ["evolve", "--population", "2", "--generations", "1", "--search-space",
                                 str(SMALL_SPACE), "--recipe", str(TINY), "--data", str(data_folder),
                                 "--output", str(tmp_path), "--confirm", "1", "--confirm-seeds", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["evaluations"] == 2 and len(summary["confirmed"]) == 1 and "noise" in summary
    listed = json.loads(runner.invoke(app, ["runs", str(tmp_path), "--json"]).stdout)
    assert listed[0]["run"] == summary["run"] and listed[0]["status"] == "finished"
    assert listed[0]["confirmed"]["test_ppl"] == summary["confirmed"][0]["test_ppl"]
    frame = genesis.Run.load(summary["path"]).to_dataframe()
    assert len(frame) == 2 and {"n_layer", "activation", "val_loss", "operator", "training_id"} <= set(frame.columns)
    assert runner.invoke(app, ["--version"]).stdout.startswith("genesis ")
