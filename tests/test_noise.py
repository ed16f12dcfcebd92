"""Answers above the noise: training identity, replicates, noise probes, confirmed
champions on the test split, and statistics that survive correction."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from conftest import FIXTURES
from hypothesis import given
from hypothesis import strategies as st

import genesis
from genesis.core.genome import Genome
from genesis.core.noise import Retraining, confirmed_champions, fresh_replicates, pooled_sd
from genesis.core.records import Outcome, training_seed
from genesis.core.space import load_search_space
from genesis.report.traitstats import holm, trait_effects
from genesis.search.population import Candidate

SMALL_SPACE = FIXTURES / "small_space.toml"
TINY = FIXTURES / "tiny.toml"


def test_sigma_is_outside_the_training_identity_but_inside_the_genome_id():
    a = Genome(2, 2, 64, "gelu", 0.01)
    b = dataclasses.replace(a, sigma=0.02)
    assert a.training_id == b.training_id and a.id != b.id
    assert a.training_id != dataclasses.replace(a, n_layer=3).training_id
    assert a.id == Genome.from_dict(a.to_dict()).id  # ids of recorded genomes are unchanged


class _CountingBackend:
    """Trains nothing: answers each job with an outcome from its seed, and counts jobs."""

    def __init__(self):
        self.jobs = []

    def run(self, jobs):
        for job in jobs:
            self.jobs.append(job)
            loss = 5.0 + (job.seed % 1000) / 1e4
            yield job, Outcome("ok", val_loss=loss, val_ppl=math.exp(loss), tokens=100,
                               test_loss=None if not job.measure_test else loss + 0.1)


def _evaluator(tmp_path, backend, replicates=1):
    from genesis.runs.evaluator import CachingEvaluator as _CachingEvaluator
    from genesis.runs.store import RunStore

    store = RunStore.create(tmp_path, "r", {"seed": 0})

    class _NoStudy:
        def add(self, record):
            pass

    return _CachingEvaluator(store, _NoStudy(), backend, 7, (), [], [1], 100, replicates=replicates)


def test_sigma_only_children_reuse_their_parents_outcome(tmp_path):
    backend = _CountingBackend()
    evaluate = _evaluator(tmp_path, backend)
    parent = Genome(1, 1, 32, "relu", 0.01)
    child = dataclasses.replace(parent, sigma=0.05)
    first = evaluate([Candidate(0, 0, parent)])
    second = evaluate([Candidate(1, 0, child), Candidate(1, 1, dataclasses.replace(parent, sigma=0.002))])
    assert len(backend.jobs) == 1  # one training for three genomes
    assert backend.jobs[0].seed == training_seed(7, parent.training_id)
    assert all(r.outcome == first[0].outcome and r.cached for r in second)
    assert second[0].genome_id != first[0].genome_id


class _LosingBackend(_CountingBackend):
    """Loses its first training (as a killed worker does), then trains as usual."""

    def run(self, jobs):
        for job, outcome in super().run(jobs):
            yield job, (Outcome("lost", reason="worker process died (exit code -9)") if len(self.jobs) == 1
                        else outcome)


def test_a_lost_training_is_not_reused_but_trained_again(tmp_path):
    backend = _LosingBackend()
    evaluate = _evaluator(tmp_path, backend)
    parent = Genome(1, 1, 32, "relu", 0.01)
    assert evaluate([Candidate(0, 0, parent)])[0].outcome.status == "lost"
    child = evaluate([Candidate(1, 0, dataclasses.replace(parent, sigma=0.05))])[0]
    assert len(backend.jobs) == 2 and child.outcome.status == "ok" and not child.cached
    # a resumed run rebuilds what is known from the records: a lost one teaches it nothing
    from genesis.runs.evaluator import CachingEvaluator

    lost = [r for r in evaluate.store.records() if r.outcome.status == "lost"]
    resumed = CachingEvaluator(evaluate.store, evaluate.recorder, _CountingBackend(), 7, (), lost, [1], 100)
    assert len(lost) == 1 and resumed.known == {}


def test_replicates_train_with_their_own_seeds_and_fitness_is_their_mean(tmp_path):
    backend = _CountingBackend()
    evaluate = _evaluator(tmp_path, backend, replicates=3)
    genome = Genome(1, 1, 32, "relu", 0.01)
    [record] = evaluate([Candidate(0, 0, genome)])
    seeds = [job.seed for job in backend.jobs]
    assert seeds == [training_seed(7, genome.training_id, r) for r in range(3)] and len(set(seeds)) == 3
    losses = [5.0 + (s % 1000) / 1e4 for s in seeds]
    assert record.outcome.val_loss == pytest.approx(sum(losses) / 3)
    assert [r["val_loss"] for r in record.outcome.replicates] == pytest.approx(losses)
    assert record.compute_tokens == 300  # compute counts every replicate


class _ScriptedBackend(_CountingBackend):
    """Answers each job with the loss `losses[d_model][replicate]`."""

    def __init__(self, losses):
        super().__init__()
        self.losses = losses

    def run(self, jobs):
        for job in jobs:
            self.jobs.append(job)
            loss = self.losses[job.genome.d_model][job.replicate]
            yield job, Outcome("ok", val_loss=loss, val_ppl=math.exp(loss), tokens=100)


def test_racing_trains_a_genome_further_only_while_it_may_beat_the_incumbent(tmp_path):
    losses = {32: [5.0, 5.1, 5.2], 48: [5.3, 4.0, 4.0], 64: [5.12, 5.0, 5.0], 80: [4.9, 5.4, 5.4],
              96: [5.2, 5.0, 5.0]}
    backend = _ScriptedBackend(losses)
    evaluate = _evaluator(tmp_path, backend, replicates=3)
    evaluate.race = True
    genomes = {d: Genome(1, 1, d, "relu", 0.01) for d in losses}
    first = evaluate([Candidate(0, i, genomes[d]) for i, d in enumerate((32, 48))])
    # the first generation races against its own leader: 32 leads and keeps it, 48 stops at once
    assert [len(r.outcome.replicates) for r in first] == [3, 0]
    assert first[0].outcome.val_loss == pytest.approx(5.1) and first[0].compute_tokens == 300
    assert first[1].outcome.val_loss == 5.3 and first[1].compute_tokens == 100
    backend.jobs.clear()
    second = evaluate([Candidate(1, i, genomes[d]) for i, d in enumerate((64, 80, 96))])
    # the incumbent's mean is 5.1: 64 (5.12) stops; 80 leads after one but not after two
    # (5.15); 96 (5.2) stops at once: its later luck goes unseen, as without racing
    assert [len(r.outcome.replicates) for r in second] == [0, 2, 0]
    assert second[1].outcome.val_loss == pytest.approx(5.15)
    assert sorted((job.genome.d_model, job.replicate) for job in backend.jobs) == [
        (64, 0), (80, 0), (80, 1), (96, 0)]
    assert sum(r.compute_tokens for r in second) == 400  # every training counts as compute
    assert evaluate.incumbent == pytest.approx(5.1)


def test_racing_needs_replicates_to_race_for(tmp_path):
    # the setting is refused before any corpus is read: this folder holds none
    with pytest.raises(genesis.GenesisError, match="racing needs at least 2 replicates"):
        genesis.evolve(population=2, generations=1, search_space=FIXTURES / "small_space.toml",
                       recipe=FIXTURES / "tiny.toml", data=tmp_path / "no-corpus", output=tmp_path / "run",
                       race=True)
    assert not any(tmp_path.iterdir())


def test_replicates_in_a_real_run(tmp_path, data_folder):
    run = genesis.evolve(population=2, generations=1, search_space=SMALL_SPACE, recipe=TINY,
                         data=data_folder, output=tmp_path, replicates=2, noise_probes=0, confirm=0)
    for record in run.records:
        outcome = record.outcome
        assert len(outcome.replicates) == 2
        assert outcome.val_loss == pytest.approx(np.mean([r["val_loss"] for r in outcome.replicates]))
        assert outcome.replicates[0]["val_loss"] != outcome.replicates[1]["val_loss"]
    assert run.summary()["noise"]["df"] == 2  # the replicates measure the noise too


def test_probes_and_confirmation_use_fresh_seeds_and_the_test_split(tmp_path, data_folder, tokens):
    from genesis.train.trainer import train

    run = genesis.evolve(population=3, generations=2, search_space=SMALL_SPACE, recipe=TINY,
                         data=data_folder, output=tmp_path, seed=4, noise_probes=1, confirm=2,
                         confirm_seeds=2)
    retrainings = run.retrainings
    kinds = [r.kind for r in retrainings]
    assert kinds.count("probe") == 2  # one per generation
    selection_seeds = {training_seed(4, r.genome.training_id) for r in run.records}
    for retraining in retrainings:
        assert retraining.replicate >= 1
        assert training_seed(4, retraining.genome.training_id, retraining.replicate) not in selection_seeds
        assert retraining.outcome.test_loss is not None
    # every confirmed champion has exactly confirm_seeds fresh trainings, probes included
    summary = json.loads((run.path / "summary.json").read_text())
    confirmed = summary["confirmed"]
    assert len(confirmed) == 2 and all(c["seeds"] == 2 for c in confirmed)
    assert confirmed[0]["test_loss"] <= confirmed[1]["test_loss"]
    assert summary["noise"]["df"] >= 2 and summary["noise"]["val_loss_sd"] > 0
    assert summary["compute"]["confirmation_tokens"] + summary["compute"]["noise_probe_tokens"] > 0
    assert summary["compute_tokens"] > summary["compute"]["search_tokens"]
    # the retraining's test loss is the test split's: retrain it here on data whose test
    # split is replaced by the validation split, and the number changes to the val loss
    champion = retrainings[-1]
    recipe = genesis.load_recipe(TINY)
    seed = training_seed(4, champion.genome.training_id, champion.replicate)
    again = train(champion.genome, recipe, tokens, seed, measure_test=True)
    assert again.test_loss == pytest.approx(champion.outcome.test_loss, abs=1e-4)
    swapped = dataclasses.replace(tokens, test=tokens.valid)
    assert train(champion.genome, recipe, swapped, seed, measure_test=True).test_loss == pytest.approx(
        again.val_loss, abs=1e-4)
    # export follows the confirmed ranking
    assert run.champions(1)[0].genome.training_id == confirmed[0]["training_id"]


def test_confirmed_interval_covers_the_mean_and_flags_ties():
    genome_a, genome_b = Genome(1, 1, 32, "relu", 0.01), Genome(2, 1, 32, "relu", 0.01)
    records = [Candidate(0, i, g).to_record(Outcome("ok", val_loss=5.0 + i, val_ppl=1.0, tokens=1))
               for i, g in enumerate((genome_a, genome_b))]
    retrainings = [Retraining("confirm", 1, g, r, Outcome("ok", val_loss=5.0, test_loss=loss, tokens=1))
                   for g, losses in ((genome_a, (5.00, 5.02, 4.98)), (genome_b, (5.01, 5.03, 4.99)))
                   for r, loss in enumerate(losses, start=1)]
    a, b = confirmed_champions(records, retrainings, 2)
    assert a["training_id"] == genome_a.training_id and a["test_ppl"] == pytest.approx(math.exp(5.0))
    assert a["test_ppl_low"] < a["test_ppl"] < a["test_ppl_high"]
    assert b["within_noise_of_best"]  # 0.01 apart with a spread of 0.02


def test_pooled_sd_matches_numpy():
    groups = [[1.0, 2.0, 4.0], [3.0, 3.5], [7.0]]
    sd, df = pooled_sd(groups)
    squares = sum(np.var(g) * len(g) for g in groups if len(g) > 1)
    assert df == 3 and sd == pytest.approx(math.sqrt(squares / 3))


@given(st.lists(st.integers(0, 20), max_size=10), st.integers(0, 5), st.integers(0, 6))
def test_fresh_replicates_are_new_distinct_and_smallest(used, first, count):
    found = fresh_replicates(used, first, count)
    assert len(found) == count == len(set(found))
    assert not set(found) & set(used) and all(r >= first for r in found)
    assert found == sorted(r for r in range(first, first + len(used) + count) if r not in used)[:count]


@given(st.lists(st.one_of(st.none(), st.floats(0, 1)), max_size=12))
def test_holm_never_lowers_a_p_value_and_keeps_their_order(p_values):
    adjusted = holm(p_values)
    pairs = [(p, a) for p, a in zip(p_values, adjusted) if p is not None]
    assert all(a >= p and a <= 1 for p, a in pairs)
    ordered = sorted(pairs)
    assert all(x[1] <= y[1] for x, y in zip(ordered, ordered[1:]))


def test_the_correction_demotes_a_trait_that_passes_uncorrected():
    """Many architectures; n_layer carries a weak effect with p between 0.01 and 0.05,
    so it passes at 0.05 alone but not after Holm over the four tested traits."""
    space = load_search_space()
    rng = np.random.default_rng(0)
    genomes = [space.sample(__import__("random").Random(i)) for i in range(60)]
    for seed in range(200):
        rng = np.random.default_rng(seed)
        losses = [5.0 + 0.01 * g.n_layer + rng.normal(0, 0.05) for g in genomes]
        result = trait_effects(genomes, losses, space, resamples=50)
        row = next(r for r in result["ranking"] if r["trait"] == "n_layer")
        if 0.0125 < row["p_value"] < 0.05:
            break
    else:
        pytest.fail("no seed gave a borderline p-value")
    assert row["p_holm"] > 0.05 and row["significant"] is False
    sigma = next(r for r in result["ranking"] if r["trait"] == "sigma")
    assert sigma["p_value"] is None and "colony-only" in sigma["note"]


def test_few_architectures_are_never_called_significant():
    space = load_search_space()
    genomes = [Genome(n, 1, 64, "relu", 0.01) for n in (1, 1, 2, 2, 3, 3, 4, 4)]
    result = trait_effects(genomes, [5.0 + n for n in (1, 1, 2, 2, 3, 3, 4, 4)], space, resamples=50)
    row = next(r for r in result["ranking"] if r["trait"] == "n_layer")
    assert row["p_holm"] < 0.05 and row["significant"] is False and "too few" in row["note"]


def test_effects_smaller_than_the_noise_are_marked():
    space = load_search_space()
    genomes = [Genome(n, 1, 64, a, 0.01) for n in (1, 2, 3, 4) for a in ("relu", "gelu", "silu")]
    losses = [5.0 + 0.001 * g.n_layer for g in genomes]
    row = next(r for r in trait_effects(genomes, losses, space, noise_sd=0.02, noise_df=10,
                                        resamples=50)["ranking"] if r["trait"] == "n_layer")
    assert row["within_noise"] and row["loss_spread"] == pytest.approx(0.003)
    row = next(r for r in trait_effects(genomes, [5.0 + 0.1 * g.n_layer for g in genomes], space,
                                        noise_sd=0.02, noise_df=10, resamples=50)["ranking"]
               if r["trait"] == "n_layer")
    assert not row["within_noise"]


def test_a_storage_password_never_reaches_the_run_folder():
    from genesis.errors import GenesisError
    from genesis.runs.study import redact, storage_for_resume

    url = "postgresql://genesis:s3cret@db.example:5432/runs"
    stored = redact(url)
    assert stored == "postgresql://genesis:***@db.example:5432/runs" and "s3cret" not in stored
    assert redact("sqlite:///runs/x/study.db") == "sqlite:///runs/x/study.db"
    with pytest.raises(GenesisError, match="--storage"):
        storage_for_resume(stored, None)
    assert storage_for_resume(stored, url) == url
    with pytest.raises(GenesisError, match="not the run's storage"):
        storage_for_resume(stored, "postgresql://genesis:s3cret@other/runs")

