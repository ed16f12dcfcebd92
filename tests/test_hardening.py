"""Input from someone else: genomes, bundles, colonies and run folders that would make
genesis build nonsense, write outside a folder or lose a user's files are refused with
one line (the second review's items; each test failed before its fix)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from genesis.cli import app
from genesis.colony.bundle import load_agent
from genesis.colony.settings import ColonySettings
from genesis.core.genome import Genome
from genesis.errors import GenesisError

GOOD = {"n_layer": 1, "n_head": 2, "d_model": 64, "activation": "gelu", "sigma": 0.01}


@pytest.mark.parametrize("change", [
    {"n_layer": -1, "d_model": 100000},  # a negative depth made the parameter count negative
    {"n_layer": 0}, {"n_head": 0}, {"d_model": 0}, {"d_model": 10**9},
    {"activation": "bogus"}, {"norm": "batchnorm"}, {"position": "alibi"}, {"weight_precision": "int4"},
    {"n_head": 3},  # does not divide 64
    {"sigma": math.nan}, {"sigma": math.inf}, {"sigma": -0.1}, {"dropout": 1.5}, {"ffn_mult": 0},
    {"position": "rotary", "n_head": 64},  # a head size of 1: rotary needs even heads
])
def test_a_genome_that_no_model_can_be_built_from_is_refused(change):
    with pytest.raises(GenesisError):
        Genome.from_dict({**GOOD, **change})


@given(st.integers(-10, 10**6), st.integers(-10, 2000), st.integers(-10, 10**6))
def test_every_genome_from_dict_accepts_is_buildable(n_layer, n_head, d_model):
    try:
        genome = Genome.from_dict({**GOOD, "n_layer": n_layer, "n_head": n_head, "d_model": d_model})
    except GenesisError:
        return
    assert genome.n_layer >= 1 and genome.n_head >= 1 and genome.d_model % genome.n_head == 0


def _copy(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


def _edit_manifest(folder, edit):
    config = json.loads((folder / "config.json").read_text())
    edit(config["genesis"])
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("edit, says", [
    (lambda m: m["genome"].update(n_layer=-1, d_model=100000), "n_layer"),  # was a 1.6 GB embedding, then an error
    (lambda m: m["genome"].update(activation="bogus"), "activation"),
    (lambda m: m["genome"].update(n_head=0), "n_head"),
    (lambda m: m["genome"].update(sigma=math.nan), "sigma"),
    (lambda m: m["metrics"].update(val_loss=-math.inf), "val_loss"),
    (lambda m: m["metrics"].update(val_loss=math.nan), "val_loss"),
    (lambda m: m["metrics"].update(val_loss="abc"), "val_loss"),
    (lambda m: m.pop("metrics"), "metrics"),
    (lambda m: m.update(metrics={"params": 3}), "val_loss"),
    (lambda m: m.update(block_size=64.5), "block_size"),
    (lambda m: m.update(vocab_size="4096"), "vocab_size"),
])
def test_an_edited_bundle_is_one_line_and_never_seeds_a_colony(bundles, tmp_path, edit, says):
    from genesis.colony.colony import Colony

    bundle = _copy(bundles[0], tmp_path)

    def edit_consistently(manifest):  # the id follows the edited genome: only the value is wrong
        edit(manifest)
        manifest["genome_id"] = Genome(**{**GOOD, **manifest["genome"]}).id

    _edit_manifest(bundle, edit_consistently)
    with pytest.raises(GenesisError, match=says):
        load_agent(bundle)
    with pytest.raises(GenesisError):
        Colony.seed(tmp_path / "colony", [bundle])
    assert not (tmp_path / "colony" / "colony.db").exists()


def test_a_garbled_tokenizer_with_a_matching_hash_is_one_line(bundles, tmp_path):
    from genesis.colony.bundle import sha256_file

    bundle = _copy(bundles[0], tmp_path)
    (bundle / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    _edit_manifest(bundle, lambda m: m["sha256"].update({"tokenizer.json": sha256_file(bundle / "tokenizer.json")}))
    with pytest.raises(GenesisError, match="is not a tokenizer"):
        load_agent(bundle)


@pytest.mark.parametrize("stored", [
    {"consensus_temperature": math.nan}, {"consensus_temperature": math.inf}, {"adapt_steps": 10**9},
    {"memory_window": 10**9}, {"population_cap": 10**9}, {"learning_rate": math.nan},
    {"division_threshold": 2.5}, {"recall": -1}, {"unknown_setting": 1}, {"consensus": "vote"},
])
def test_colony_settings_from_a_database_must_be_finite_and_in_range(stored):
    with pytest.raises(GenesisError):
        ColonySettings.from_stored({"agent_weights": "adapter", **stored})


def test_a_colony_whose_stored_settings_were_edited_does_not_open(bundles, tmp_path):
    import sqlalchemy as sa

    from genesis.colony.colony import Colony

    Colony.seed(tmp_path / "colony", [bundles[0]])
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'colony' / 'colony.db'}")
    with engine.begin() as db:
        stored = json.loads(db.execute(sa.text("select value from settings where key = 'settings'")).scalar())
        db.execute(sa.text("update settings set value = :v where key = 'settings'"),
                   {"v": json.dumps({**stored, "consensus_temperature": "NaN", "adapt_steps": 10**9})})
    engine.dispose()
    with pytest.raises(GenesisError):
        Colony(tmp_path / "colony")


def test_colony_export_never_replaces_a_folder_of_someone_elses_files(bundles, tmp_path):
    from genesis.colony.colony import Colony

    Colony.seed(tmp_path / "colony", [bundles[0]])
    agent = Colony(tmp_path / "colony").agents()[0].id
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    result = CliRunner().invoke(app, ["colony", "export", str(tmp_path / "colony"), agent, "--out", str(mine)])
    assert result.exit_code == 2 and "is not an agent bundle" in result.output
    assert (mine / "thesis.tex").read_text() == "years of work" and sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    # an earlier bundle is replaced, and nothing of it or of the staging is left beside
    out = tmp_path / "agent"
    for _ in range(2):
        assert CliRunner().invoke(app, ["colony", "export", str(tmp_path / "colony"), agent,
                                        "--out", str(out)]).exit_code == 0
    load_agent(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent", "colony", "mine"]


def test_export_refuses_kept_weights_that_are_links(run, tmp_path):
    from genesis.runs.reader import Run

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    for kept in (copy / "weights").glob("*.safetensors"):
        kept.unlink()
        kept.symlink_to(secret)
    assert Run.load(copy).champions(1)
    result = CliRunner().invoke(app, ["export", str(copy), "--top", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "is a symbolic link" in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("model.safetensors"))


def test_error_lines_are_plain_text_brackets_and_all(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path / "runs[1]" / "[nothing]")])
    assert result.exit_code == 2 and "[nothing]" in result.output


def test_the_colony_stays_bounded_memories_retired_weights_and_status(bundles, tmp_path):
    import sqlalchemy as sa

    from genesis.colony.colony import Colony
    from genesis.colony.database import weights_table
    from genesis.colony.settings import ColonySettings

    colony = Colony.seed(tmp_path / "colony", bundles, ColonySettings(memory_limit=2, division_threshold=1,
                                                                      population_cap=2, adapt_steps=0))
    answers = [colony.ask(f"Prompt {i}", max_tokens=2, seed=i) for i in range(6)]
    colony.rate(answers[-1].memory_id, 0.7)
    status = colony.status(events=3, retired=2)
    assert status["memories"] == 2  # asks forget too, not only teachings
    assert len(status["events"]) == 3
    alive = [a for a in status["agents"] if a["status"] == "alive"]
    assert len(alive) == 2 and len(status["agents"]) == 4 and status["retired_total"] >= 6
    with colony.store.read() as db:
        rows = db.execute(sa.select(sa.func.count()).select_from(weights_table)).scalar_one()
    assert rows <= 2 + 2  # the living, and as many of the most recently retired


def test_agent_ids_carry_63_bits_and_a_clash_draws_again(bundles, tmp_path, monkeypatch):
    import os as os_module

    from genesis.colony import database
    from genesis.colony.colony import Colony

    colony = Colony.seed(tmp_path / "colony", [bundles[0]], copies=3)
    ids = [a.id for a in colony.agents()]
    assert all(len(i) == 17 and database.AGENT_ID.fullmatch(i) for i in ids) and len(set(ids)) == 3
    taken = int(ids[0][1:], 16).to_bytes(8, "big")
    draws = iter([bytes([taken[0] | 0x80]) + taken[1:], os_module.urandom(8)])  # >> 1 undoes the top bit
    monkeypatch.setattr(database.os, "urandom", lambda n: next(draws))
    with colony.store.write() as db:
        agent_id, _ = database.new_identity(db)
    assert agent_id not in ids


def test_one_tiny_rating_moves_fitness_a_bounded_step(bundles, tmp_path):
    from genesis.colony.colony import Colony
    from genesis.colony.settings import ColonySettings

    colony = Colony.seed(tmp_path / "colony", [bundles[0]], ColonySettings(adapt_steps=0, division_threshold=1000))
    answer = colony.ask("The", max_tokens=2, seed=1)
    before = colony.agents()[0].fitness
    moved = colony.rate(answer.memory_id, 1e-320)
    assert all(value >= before + math.log(0.02) - 1e-9 for value in moved.values())


def test_a_failed_seeding_leaves_no_database_file(bundles, tmp_path, monkeypatch):
    from genesis.colony import colony as colony_module
    from genesis.colony.colony import Colony

    def broken(*args, **kwargs):
        raise GenesisError("disk on fire")

    monkeypatch.setattr(colony_module, "insert_agent", broken)
    with pytest.raises(GenesisError, match="disk on fire"):
        Colony.seed(tmp_path / "colony", [bundles[0]])
    assert not (tmp_path / "colony").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(GenesisError):
        Colony.seed(tmp_path / "mine", [bundles[0]])
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_report_never_writes_through_a_link_in_the_run_folder(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(copy / "report", ignore_errors=True)
    (copy / "report").symlink_to(elsewhere)
    result = CliRunner().invoke(app, ["report", str(copy)])
    assert result.exit_code == 2 and "symbolic link" in result.output
    assert not any(elsewhere.iterdir())
    # a link planted at a file's name is replaced, not written through
    (copy / "report").unlink()
    (copy / "report").mkdir()
    target = tmp_path / "victim.txt"
    target.write_text("untouched")
    (copy / "report" / "report.md").symlink_to(target)
    assert CliRunner().invoke(app, ["report", str(copy)]).exit_code == 0
    assert target.read_text() == "untouched" and not (copy / "report" / "report.md").is_symlink()


def test_simulate_never_writes_through_a_link(bundles, tmp_path, data_folder):
    from genesis.colony.colony import Colony
    from genesis.colony.simulate import simulate

    colony = Colony.seed(tmp_path / "colony", [bundles[0]])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").symlink_to(elsewhere)
    with pytest.raises(GenesisError, match="symbolic link"):
        simulate(colony, data_folder, chunks=1, out=tmp_path / "out")
    assert not any(elsewhere.iterdir())


def test_a_last_record_without_its_newline_is_dropped_even_when_it_parses(run, tmp_path):
    from genesis.runs.store import RECORDS_FILE, RunStore

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    log = copy / RECORDS_FILE
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines))  # the crash came between the JSON and its newline
    store = RunStore(copy)
    assert len(store.records()) == len(lines) - 1
    store.drop_partial_record()
    assert log.read_text().endswith("\n") and len(log.read_text().splitlines()) == len(lines) - 1


@pytest.mark.parametrize("edit", [
    lambda r: r["metrics"].update(val_loss="abc"), lambda r: r["metrics"].update(tokens=1.5),
    lambda r: r.update(generation="0"), lambda r: r.update(parents="abc"),
    lambda r: r["metrics"].update(curve=["x"]), lambda r: r["metrics"].update(surprise=1),
])
def test_a_record_of_the_wrong_type_is_one_line(run, tmp_path, edit):
    from genesis.runs.store import RECORDS_FILE

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    log = copy / RECORDS_FILE
    records = [json.loads(line) for line in log.read_text().splitlines()]
    edit(records[0])
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    listed = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert listed.exit_code == 0 and "unreadable" in listed.output  # the other runs still list
    reported = CliRunner().invoke(app, ["report", str(copy)])
    assert reported.exit_code == 2 and "line 1 is corrupt" in reported.output


def test_a_model_whose_first_training_was_lost_still_counts_among_the_best():
    from genesis.core.records import Outcome, Record, best_records

    genome = Genome.from_dict(GOOD)
    lost = Record(0, 0, genome, (), "random", Outcome(status="lost", reason="worker died"))
    trained = Record(1, 0, genome, (), "elite", Outcome(status="ok", val_loss=5.0, val_ppl=math.exp(5.0), tokens=10))
    other = Record(1, 1, Genome.from_dict({**GOOD, "d_model": 128}), (), "random",
                   Outcome(status="ok", val_loss=6.0, val_ppl=math.exp(6.0), tokens=10))
    assert best_records([lost, trained, other], 2) == [trained, other]


def _interrupted_copy(run, tmp_path, edit):
    """A copy of a finished run, made to look interrupted, with its config.json edited."""
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    (copy / "summary.json").unlink(missing_ok=True)
    config = json.loads((copy / "config.json").read_text())
    edit(config)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize("edit, says", [
    (lambda c: c.update(storage=f"sqlite:///{c['_elsewhere']}/x.db"), "outside its folder"),
    (lambda c: c.update(storage="postgresql://someone@127.0.0.1:1/trials"), "outside its folder"),  # nothing listens
    (lambda c: c["recipe"].update(steps=-5), "steps"), (lambda c: c["recipe"].update(lr=float("nan")), "lr"),
    (lambda c: c["recipe"].update(surprise=1), "surprise"), (lambda c: c["evaluator"].update(workers=0), "workers"),
    (lambda c: c["evaluator"].update(backend="nonsense"), "backend"),
])
def test_resuming_someone_elses_run_trusts_none_of_its_settings(run, tmp_path, edit, says):
    import genesis

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def edit_with_a_place(config):
        config["_elsewhere"] = str(elsewhere)
        edit(config)
        del config["_elsewhere"]

    copy = _interrupted_copy(run, tmp_path, edit_with_a_place)
    with pytest.raises(GenesisError, match=says):
        genesis.resume(copy)
    assert not any(elsewhere.iterdir())  # nothing was created outside the run folder


def _edited_table(table, tmp_path, edit):
    import csv

    copy = tmp_path / "table"
    shutil.copytree(table, copy)
    path = copy / "table.csv"
    rows = list(csv.DictReader(path.open()))
    fields = list(rows[0])
    rows, fields = edit(rows, fields)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return copy


@pytest.mark.parametrize("edit", [
    lambda rows, f: ([{**rows[0], "val_loss": "nan"}, *rows[1:]], f),
    lambda rows, f: ([{**rows[0], "val_loss": "-1e308"}, *rows[1:]], f),
    lambda rows, f: ([{**rows[0], "params": "many"}, *rows[1:]], f),
    lambda rows, f: ([{**rows[0], "params": "inf"}, *rows[1:]], f),
    lambda rows, f: ([{**rows[0], "curve": "1 2 nan"}, *rows[1:]], f),
    lambda rows, f: ([{**rows[0], "status": "great"}, *rows[1:]], f),
    lambda rows, f: (rows, [c for c in f if c != "test_loss"]),
])
def test_a_garbled_table_is_refused_when_opened_and_leaves_no_run(table, tmp_path, edit):
    import genesis
    from conftest import SMALL_SPACE, TINY

    garbled = _edited_table(table, tmp_path, edit)
    with pytest.raises(GenesisError):
        genesis.evolve(population=2, generations=1, search_space=SMALL_SPACE, recipe=TINY,
                       backend=f"table:{garbled}", output=tmp_path / "runs", storage="memory")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_fresh_seeds_on_a_table_are_fresh_or_refused(table, tmp_path):
    import genesis
    from conftest import SMALL_SPACE, TINY

    one_seed = _edited_table(table, tmp_path, lambda rows, f: ([r for r in rows if r["seed"] == "0"], f))
    with pytest.raises(GenesisError, match="fresh"):  # probes and confirmation would redraw the one seed
        genesis.evolve(population=2, generations=1, search_space=SMALL_SPACE, recipe=TINY,
                       backend=f"table:{one_seed}", output=tmp_path / "runs", storage="memory")
    with pytest.raises(GenesisError, match="fresh"):  # 1 selecting + 4 confirming > 4 seeds
        genesis.evolve(population=2, generations=1, search_space=SMALL_SPACE, recipe=TINY, confirm_seeds=4,
                       backend=f"table:{table}", output=tmp_path / "runs", storage="memory")
    run = genesis.evolve(population=3, generations=2, search_space=SMALL_SPACE, recipe=TINY, confirm=2,
                         confirm_seeds=3, backend=f"table:{table}", output=tmp_path / "runs", storage="memory")
    for record in run.records:
        fresh = [r for r in run.retrainings if r.genome.training_id == record.genome.training_id
                 and r.outcome.status == "ok"]
        assert record.outcome.val_loss not in [r.outcome.val_loss for r in fresh]
        assert len({r.outcome.val_loss for r in fresh}) == len(fresh)


def test_the_summary_counts_every_replicate_as_a_training():
    from genesis.core.records import Outcome, Record
    from genesis.core.summary import summarize

    replicates = [{"status": "ok", "val_loss": 5.0}, {"status": "ok", "val_loss": 5.2}]
    records = [Record(0, i, Genome.from_dict({**GOOD, "d_model": 64 * (i + 1)}), (), "random",
                      Outcome(status="ok", val_loss=5.1, val_ppl=math.exp(5.1), tokens=10, replicates=replicates))
               for i in range(3)]
    summary = summarize(records)
    assert summary["trained"] == 3 and summary["trainings"] == 6


def test_a_table_records_its_search_space_by_name_never_by_path(table):
    meta = json.loads((table / "table.json").read_text())
    assert meta["search_space"]["source"] == "small_space" and "/" not in json.dumps(meta["search_space"])


def test_no_module_of_genesis_imports_itself_in_a_circle():
    """Each package reads bottom-up: the modules' genesis imports (type-only ones too)
    form no cycle. `from package import module` depends on that module, not the package."""
    import ast
    from pathlib import Path

    root = Path(__import__("genesis").__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        name = ".".join(("genesis", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        modules[name] = path
    imports = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genesis"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
        imports[name] = found & set(modules)
    state: dict[str, int] = {}

    def visit(module, trail):
        state[module] = 1
        for dependency in sorted(imports[module]):
            assert state.get(dependency) != 1, " -> ".join(trail[trail.index(dependency):] + [dependency])
            if dependency not in state:
                visit(dependency, trail + [dependency])
        state[module] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])


def test_the_noise_floor_counts_a_model_with_replicates_and_retrainings_once():
    from genesis.core.noise import PROBE, Retraining, noise_floor
    from genesis.core.records import Outcome, Record

    genome = Genome.from_dict(GOOD)
    ok = lambda loss: Outcome(status="ok", val_loss=loss, val_ppl=math.exp(loss), tokens=10)  # noqa: E731
    record = Record(0, 0, genome, (), "random", Outcome(
        status="ok", val_loss=5.1, val_ppl=math.exp(5.1), tokens=10,
        replicates=[{"status": "ok", "val_loss": 5.0}, {"status": "ok", "val_loss": 5.2}]))
    floor = noise_floor([Retraining(PROBE, 0, genome, 2, ok(5.4))], [record])
    assert floor["df"] == 2 and floor["architectures"] == 1  # one group of three, not 1 + 1 df
    assert floor["val_loss_sd"] == pytest.approx(0.2)


def test_margins_know_the_best_and_worst_were_picked_after_the_fact_and_averaged():
    from scipy import stats

    from genesis.core.noise import selection_margin
    from genesis.core.space import load_search_space
    from genesis.report.traitstats import trait_effects

    pairwise = float(stats.t.ppf(0.975, 30)) * math.sqrt(2)
    assert selection_margin(2, 30, 1.0, 1, 1) == pytest.approx(pairwise)
    assert selection_margin(4, 30, 1.0, 1, 1) > 1.3 * pairwise
    space = load_search_space()
    genomes = [Genome.from_dict({**GOOD, "n_layer": 1 + i % 4, "d_model": 64 + 32 * (i % 5), "n_head": 1,
                                 "activation": ["relu", "gelu", "silu", "swiglu"][i % 4]}) for i in range(40)]
    losses = [5.0 + 0.01 * (i % 7) for i in range(40)]
    once = {r["trait"]: r for r in trait_effects(genomes, losses, space, 0.05, 100, resamples=20)["ranking"]}
    four = {r["trait"]: r for r in trait_effects(genomes, losses, space, 0.05, 100, resamples=20,
                                                 trainings_per_loss=4)["ranking"]}
    assert four["activation"]["noise_margin"] == pytest.approx(once["activation"]["noise_margin"] / 2)
