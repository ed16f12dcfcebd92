"""Ground truth: sweeps write a resumable table, and the table backend replays searches."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import CURVES, SMALL_SPACE, TINY
from typer.testing import CliRunner

import genesis
from genesis.cli import app
from genesis.core.records import TIMING_FIELDS
from genesis.core.space import load_search_space
from genesis.errors import GenesisError
from genesis.runs.sweep import architectures, stratified_sample

runner = CliRunner()


def test_the_default_space_holds_288_architectures_once_sigma_is_set_aside():
    genomes = architectures(load_search_space())
    assert len(genomes) == 288 == len({g.training_id for g in genomes})
    sample = stratified_sample(genomes, 36)
    cells = {(g.n_layer, g.activation) for g in sample}
    assert len(sample) == 36 == len({g.training_id for g in sample}) and len(cells) == 16


def test_a_sweep_table_loads_as_one_row_per_architecture_and_seed(table):
    frame = genesis.load_table(table)
    assert len(frame) == 32 * 4 and frame.groupby("training_id").size().eq(4).all()
    assert frame["test_loss"].notna().all() and (frame["test_loss"] != frame["val_loss"]).any()
    assert frame.loc[0, "tokens"] == 4 * 4 * 32
    meta = json.loads((table / "table.json").read_text())
    assert meta["recipe"]["name"] == "tiny" and meta["seeds"] == 4 and meta["data_key"]
    assert {"torch", "genesis"} <= set(meta["versions"])


def test_an_interrupted_sweep_resumes_to_the_same_table(table, tmp_path, data_folder):
    folder = tmp_path / "again"
    seen = []

    def stop_after_five(genome, index, outcome):
        seen.append(genome)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        genesis.sweep(search_space=SMALL_SPACE, recipe=TINY, data=data_folder, seeds=4, output=folder,
                      device="cpu", threads=1, on_row=stop_after_five)
    with (folder / "table.csv").open("a") as out:
        out.write("deadbeef,1,1,3")  # a line torn by a kill
    genesis.sweep(search_space=SMALL_SPACE, recipe=TINY, data=data_folder, seeds=4, output=folder,
                  device="cpu", threads=1)
    columns = [c for c in genesis.load_table(table).columns if c not in TIMING_FIELDS]
    key = ["training_id", "seed"]
    resumed = genesis.load_table(folder)[columns].sort_values(key).reset_index(drop=True)
    whole = genesis.load_table(table)[columns].sort_values(key).reset_index(drop=True)
    assert resumed.drop(columns="curve").equals(whole.drop(columns="curve"))


def test_a_sweep_folder_of_another_plan_is_refused(table, data_folder):
    with pytest.raises(GenesisError, match="another"):
        genesis.sweep(search_space=SMALL_SPACE, recipe=TINY, data=data_folder, seeds=3, output=table)


@pytest.mark.parametrize("counts, message", [({"seeds": 0}, "at least one seed"),
                                             ({"seeds": 1, "sample": 0}, "--sample must be at least 1")])
def test_a_sweep_refuses_bad_counts_before_reading_any_corpus(tmp_path, counts, message):
    with pytest.raises(GenesisError, match=message):  # the folder holds no corpus: it is never read
        genesis.sweep(search_space=SMALL_SPACE, recipe=TINY, data=tmp_path / "no-corpus",
                      output=tmp_path / "sweep", **counts)
    assert not any(tmp_path.iterdir())


def test_a_table_begun_before_a_recipe_option_existed_still_resumes(table, tmp_path, data_folder):
    folder = tmp_path / "older"
    shutil.copytree(table, folder)
    meta = json.loads((folder / "table.json").read_text())
    for option in ("optimizer", "muon_lr", "lr_base_width"):  # written before these existed
        del meta["recipe"][option]
    (folder / "table.json").write_text(json.dumps(meta))
    rows = (folder / "table.csv").read_text()
    genesis.sweep(search_space=SMALL_SPACE, recipe=TINY, data=data_folder, seeds=4, output=folder,
                  device="cpu", threads=1)
    assert (folder / "table.csv").read_text() == rows  # nothing left to train, nothing refused


def test_a_table_begun_before_a_trait_existed_loads_resumes_and_refuses_the_new_trait(table, tmp_path,
                                                                                     data_folder):
    import csv
    import io

    from genesis.core.genome import Genome
    from genesis.core.records import Outcome
    from genesis.runs.sweep import append_row

    folder = tmp_path / "before-qk-norm"
    shutil.copytree(table, folder)
    frame = list(csv.DictReader(io.StringIO((folder / "table.csv").read_text())))
    header = [c for c in frame[0] if c != "qk_norm"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(frame[:-3])  # three trainings short, written before the column existed
    (folder / "table.csv").write_text(buffer.getvalue())
    genesis.sweep(search_space=SMALL_SPACE, recipe=TINY, data=data_folder, seeds=4, output=folder,
                  device="cpu", threads=1)
    resumed = genesis.load_table(folder)
    assert len(resumed) == len(frame) and set(resumed["qk_norm"]) == {"off"}
    assert (folder / "table.csv").read_text().splitlines()[0] == ",".join(header)
    outcome = Outcome(status="ok", val_loss=5.0, test_loss=5.0, train_loss=5.0, params=1, tokens=1)
    with pytest.raises(GenesisError, match="predates the trait 'qk_norm'"):
        append_row(folder, Genome(1, 1, 32, "relu", 0.01, qk_norm="on"), 0, 1, outcome)
    assert len(genesis.load_table(folder)) == len(frame)


def test_a_sweep_gives_its_top_architectures_more_seeds(table, tmp_path, data_folder):
    folder = tmp_path / "top"
    shutil.copytree(table, folder)
    base = genesis.load_table(folder)
    means = base[base["status"] == "ok"].groupby("training_id")["val_loss"].mean()
    best = sorted(means.index, key=lambda tid: (means[tid], tid))[:2]
    kwargs = dict(search_space=SMALL_SPACE, recipe=TINY, data=data_folder, seeds=4, output=folder,
                  device="cpu", threads=1)
    genesis.sweep(top=2, top_seeds=6, **kwargs)
    frame = genesis.load_table(folder)
    extra = frame[frame["seed"] >= 4]
    assert sorted(extra["training_id"]) == sorted(best * 2) and set(extra["seed"]) == {4, 5}
    assert len(set(frame["training_seed"])) == len(frame)  # every training its own seed
    assert frame[frame["seed"] < 4].drop(columns="curve").equals(base.drop(columns="curve"))
    assert json.loads((folder / "table.json").read_text())["top"]["training_ids"] == best
    rows = (folder / "table.csv").read_text()
    genesis.sweep(top=2, top_seeds=6, **kwargs)  # resumed: nothing left to train
    assert (folder / "table.csv").read_text() == rows
    with pytest.raises(GenesisError, match="same --top"):
        genesis.sweep(top=3, top_seeds=6, **kwargs)
    with pytest.raises(GenesisError, match="more than --seeds"):
        genesis.sweep(top=2, top_seeds=4, **{**kwargs, "output": tmp_path / "new"})
    assert not (tmp_path / "new").exists()
    # a replay confirms on as many fresh seeds as the top holds; others on what they have
    run = _table_run(tmp_path / "runs", folder, confirm=3, confirm_seeds=5)
    for retraining in run.retrainings:
        holds = 6 if retraining.genome.training_id in best else 4
        assert (retraining.outcome.status == "ok") == (retraining.replicate < holds)
    with pytest.raises(GenesisError, match="its best 6"):
        _table_run(tmp_path / "more", folder, confirm=3, confirm_seeds=6)


def _table_run(tmp_path, table, seed=0, **kwargs):
    return genesis.evolve(population=4, generations=3, search_space=SMALL_SPACE, recipe=TINY,
                          backend=f"table:{table}", output=tmp_path, seed=seed, **kwargs)


def test_the_table_backend_answers_by_lookup_and_counts_compute(table, tmp_path):
    run = _table_run(tmp_path, table, confirm=2, confirm_seeds=2)
    frame = genesis.load_table(table).set_index(["training_id", "seed"])
    for record in run.records:
        losses = frame.loc[record.genome.training_id, "val_loss"].tolist()
        assert record.outcome.val_loss in losses and record.outcome.test_loss is None
    assert sum(r.compute_tokens for r in run.records) == 512 * sum(not r.cached for r in run.records)
    summary = run.summary()
    # confirmation draws table seeds the selecting training did not use
    selecting = {r.genome.training_id: r.outcome.val_loss for r in run.records if not r.cached}
    for champion in summary["confirmed"]:
        rows = frame.loc[champion["training_id"]]
        fresh = [r for r in run.retrainings if r.genome.training_id == champion["training_id"]]
        assert champion["seeds"] == 2 == len({r.outcome.val_loss for r in fresh})
        assert all(r.outcome.val_loss != selecting[champion["training_id"]] for r in fresh)
        assert all(r.outcome.test_loss in rows["test_loss"].tolist() for r in fresh)
    again = _table_run(tmp_path, table, confirm=2, confirm_seeds=2)
    assert [r.to_dict() for r in again.records] == [r.to_dict() for r in run.records]


def test_the_table_backend_stops_early_from_the_tables_curves(tmp_path, curve_table):
    recipe = CURVES
    run = genesis.evolve(population=8, generations=4, search_space=SMALL_SPACE, recipe=recipe,
                         backend=f"table:{curve_table}", output=tmp_path / "runs", early_stop=0.25,
                         confirm=0, noise_probes=0)
    stopped = [r for r in run.records if r.outcome.stopped_at is not None and not r.cached]
    assert stopped, "a quarter-quantile rule gives some training up"
    for record in stopped:
        assert record.outcome.tokens == record.outcome.stopped_at * 4 * 32 < 16 * 4 * 32
        assert record.compute_tokens == record.outcome.tokens


def test_a_table_of_another_recipe_or_space_is_refused_with_exit_2(table, tmp_path):
    result = runner.invoke(app, ["evolve", "--backend", f"table:{table}", "--output", str(tmp_path),
                                 "--search-space", str(SMALL_SPACE)])  # the quick recipe
    assert result.exit_code == 2 and "recipe" in result.output
    result = runner.invoke(app, ["evolve", "--backend", f"table:{table}", "--output", str(tmp_path),
                                 "--recipe", str(TINY)])  # the default space
    assert result.exit_code == 2 and "lacks" in result.output
    result = runner.invoke(app, ["evolve", "--backend", f"table:{tmp_path}", "--output", str(tmp_path),
                                 "--recipe", str(TINY)])
    assert result.exit_code == 2 and "not a sweep table" in result.output
    assert not any(p.is_dir() for p in tmp_path.iterdir())


def test_cli_sweep_writes_a_table(tmp_path, data_folder):
    result = runner.invoke(app, ["sweep", "--output", str(tmp_path / "t"), "--search-space", str(SMALL_SPACE),
                                 "--recipe", str(TINY), "--seeds", "1", "--sample", "3",
                                 "--data", str(data_folder), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(genesis.load_table(tmp_path / "t")) == 3
    result = runner.invoke(app, ["sweep", "--output", str(tmp_path / "t"), "--search-space", str(SMALL_SPACE),
                                 "--recipe", str(TINY), "--seeds", "1", "--sample", "3", "--top", "2",
                                 "--data", str(data_folder), "--device", "cpu"])
    assert result.exit_code == 2 and "go together" in result.output


FIDELITIES = {"halving": {"rungs": (0.25, 0.5, 1.0)}, "early-stop": {"early_stop": 0.5},
              "racing": {"replicates": 2, "race": True, "confirm_seeds": 2}}


@pytest.mark.parametrize("strategy", ["evolution", "aging", "random", "nsga2", "tpe", "nsga2-optuna"])
@pytest.mark.parametrize("fidelity", sorted(FIDELITIES))
def test_a_run_interrupted_anywhere_resumes_to_the_same_records(tmp_path, curve_table, monkeypatch,
                                                                 strategy, fidelity):
    """Successive halving, early stopping, racing and every strategy: interrupted after the first
    training, a third and two thirds of the way, and at the last one (in the confirmation),
    resumed, equal to an uninterrupted run."""
    from genesis.runs.table import TableBackend

    settings = dict(population=6, generations=4, search_space=SMALL_SPACE, recipe=CURVES,
                    backend=f"table:{curve_table}", storage="memory", seed=3, noise_probes=1, confirm=2,
                    evolution=genesis.EvolutionConfig(strategy=strategy), **FIDELITIES[fidelity])
    real_run = TableBackend.run
    total = 0

    def counting(self, jobs):
        nonlocal total
        for item in real_run(self, jobs):
            total += 1
            yield item

    monkeypatch.setattr(TableBackend, "run", counting)
    whole = genesis.evolve(output=tmp_path / "whole", **settings)
    expected = [r.to_dict() for r in whole.records], [r.to_dict() for r in whole.retrainings]
    assert any(r.rung == 0 for r in whole.records) or fidelity != "halving"
    trainings = {len(r.outcome.replicates) for r in whole.records if not r.cached}
    assert trainings == {0, 2} or fidelity != "racing"  # raced: some genomes got 1 training, some 2
    for kill_after in sorted({1, total // 3, 2 * total // 3, total - 1}):
        answered = 0

        def interrupted(self, jobs):
            nonlocal answered
            for item in real_run(self, jobs):
                if answered == kill_after:
                    raise KeyboardInterrupt
                answered += 1
                yield item

        monkeypatch.setattr(TableBackend, "run", interrupted)
        output = tmp_path / f"killed-{kill_after}"
        with pytest.raises(KeyboardInterrupt):
            genesis.evolve(output=output, **settings)
        monkeypatch.setattr(TableBackend, "run", real_run)
        [folder] = list(output.iterdir())
        resumed = genesis.resume(folder)
        assert ([r.to_dict() for r in resumed.records], [r.to_dict() for r in resumed.retrainings]) == expected
