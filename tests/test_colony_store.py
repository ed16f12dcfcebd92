"""Where a colony lives: one database (a SQLite file in a folder, or PostgreSQL shared by
processes on many machines) that concurrent writers use without losing anything, and
the upgrade of colonies made by an older genesis."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import genesis
from genesis.cli import app
from genesis.colony.bundle import load_bundle
from genesis.colony.colony import Colony
from genesis.colony.database import recently_retired, scores_table
from genesis.colony.settings import ColonySettings
from genesis.errors import NotFound

runner = CliRunner()


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """Where a test's colony goes: a folder, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "colony")
    return request.getfixturevalue("postgres")()


def _run_together(tmp_path, code: str, arguments: list[list[str]]) -> None:
    """Run `code` in one process per argument list, all released at once from a barrier
    (so their work overlaps), and check every one succeeded."""
    go = tmp_path / "go"
    barrier = ("import pathlib, sys, time; pathlib.Path(sys.argv[1]).touch(); "
               "exec('while not pathlib.Path(sys.argv[2]).exists(): time.sleep(0.01)'); ")
    processes = [subprocess.Popen([sys.executable, "-c", barrier + code, str(tmp_path / f"ready{i}"), str(go), *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i, args in enumerate(arguments)]
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready{i}").exists() for i in range(len(arguments))):
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), "a process died early"
        time.sleep(0.05)
    go.touch()
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr


NICHES = {"niches": 2, "consensus": "niche", "selection": "niche"}


@pytest.mark.parametrize("niches", [False, True], ids=["global", "niches"])
def test_concurrent_learners_lose_no_memory_and_no_update(location, tmp_path, bundles, niches):
    colony = Colony.seed(location, bundles, ColonySettings(adapt_steps=5, division_threshold=1000,
                                                           learning_rate=1e-3, **(NICHES if niches else {})))
    code = ("from genesis.colony.colony import Colony; c = Colony.open(sys.argv[3]); "
            "a = c.ask('The history of', max_tokens=2, seed=int(sys.argv[4])); "
            "c.feedback('The history of', ' the city', memory_id=a.memory_id); "
            "c.feedback('A river', ' runs to the sea'); c.rate(a.memory_id, 0.9)")
    _run_together(tmp_path, code, [[location, str(i)] for i in range(4)])
    # two teachings per process, each one learning update of every agent: none lost
    assert [colony.version(agent) for agent in colony.agents()] == [8, 8]
    status = colony.status(events=100)
    assert status["memories"] == 8 and all(a["total_interactions"] == 4 for a in status["agents"])
    if niches:  # every agent's score on every taught memory, none lost
        with colony.store.read() as db:
            assert len(db.execute(scores_table.select()).all()) == 8 * 2


def test_concurrent_niche_colonies_divide_and_select_without_losing_anything(location, tmp_path, bundles):
    colony = Colony.seed(location, bundles, ColonySettings(division_threshold=1, population_cap=4, adapt_steps=1,
                                                           **NICHES))
    code = ("from genesis.colony.colony import Colony; c = Colony.open(sys.argv[3]); "
            "[c.feedback(f'Prompt {sys.argv[4]}', f' continued {i}', memory_id=c.ask(f'Prompt {sys.argv[4]}', "
            "max_tokens=2, seed=i).memory_id) for i in range(2)]")
    _run_together(tmp_path, code, [[location, str(i)] for i in range(4)])
    status = colony.status(events=10_000)
    events = status["events"]
    divisions = [e for e in events if e["kind"] == "division"]
    assert status["memories"] == 8 and divisions and len(colony.agents()) <= 4
    assert len(colony.agents(alive_only=False)) == 2 + len(divisions) == sum(e["kind"] == "birth" for e in events)
    with colony.store.read() as db:
        scored = {m for (m, _, _) in db.execute(scores_table.select()).all()}
    assert scored == set(range(1, 9))  # every taught answer scored


def test_concurrent_asks_lose_no_memory_and_no_agent(location, tmp_path, bundles):
    colony = Colony.seed(location, bundles, ColonySettings(division_threshold=1, population_cap=5, adapt_steps=0))
    code = ("from genesis.colony.colony import Colony; c = Colony.open(sys.argv[3]); "
            "[c.ask(f'Prompt {sys.argv[4]}', max_tokens=2, seed=i) for i in range(2)]")
    _run_together(tmp_path, code, [[location, str(i)] for i in range(6)])
    status = colony.status(events=10_000)
    assert status["memories"] == 12
    agents = colony.agents(alive_only=False)
    births = [e for e in status["events"] if e["kind"] == "birth"]
    divisions = [e for e in status["events"] if e["kind"] == "division"]
    assert len(divisions) >= 12 and len(agents) == len(births) == 2 + len(divisions)
    assert {e["detail"]["child"] for e in divisions} <= {a.id for a in agents}
    with colony.store.read() as db:
        kept = {a.id for a in agents if a.status == "alive"} | set(recently_retired(db, 5))
    for agent in agents:  # the living and the last retired keep their weights; older ones are dropped
        if agent.id in kept:
            colony.model(agent)
        else:
            with pytest.raises(NotFound, match="weights are gone"):
                colony.model(agent)
    assert len(colony.agents()) <= 5


def test_the_cli_seeds_asks_and_reports_a_colony_at_a_database_url(postgres, bundles):
    url = postgres()
    assert runner.invoke(app, ["colony", "seed", url, *map(str, bundles)]).exit_code == 0
    result = runner.invoke(app, ["colony", "ask", url, "The", "--max-tokens", "2", "--seed", "1"])
    assert result.exit_code == 0 and "memory 1" in result.output
    assert json.loads(runner.invoke(app, ["colony", "status", url, "--json"]).stdout)["memories"] == 1
    result = runner.invoke(app, ["colony", "seed", url, *map(str, bundles)])
    assert result.exit_code == 2 and "already holds a colony" in result.output


def test_an_unreachable_or_unknown_database_is_one_line(tmp_path):
    result = runner.invoke(app, ["colony", "status", "postgresql://nobody@127.0.0.1:1/none"])
    assert result.exit_code == 2 and "cannot reach the database" in result.output
    result = runner.invoke(app, ["colony", "status", "nosuchdb://x"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    result = runner.invoke(app, ["colony", "status", str(tmp_path)])
    assert result.exit_code == 2 and "is not a colony" in result.output


# What genesis before colony format 2 wrote: weights in files named by the agents rows.
FORMAT_1_SCHEMA = """
CREATE TABLE agents (
    id TEXT PRIMARY KEY, parent TEXT, genome TEXT NOT NULL, weights TEXT NOT NULL,
    block_size INTEGER NOT NULL, fitness REAL NOT NULL, interactions INTEGER NOT NULL DEFAULT 0,
    total_interactions INTEGER NOT NULL DEFAULT 0, identity_seed TEXT NOT NULL,
    born TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'alive', retired TEXT);
CREATE TABLE memories (
    id INTEGER PRIMARY KEY AUTOINCREMENT, prompt TEXT NOT NULL, response TEXT,
    continuation TEXT, score REAL, agents TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, agent TEXT NOT NULL,
    detail TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _format_1_colony(folder, bundle_path, kind: str) -> dict[str, torch.Tensor]:
    """A colony folder as genesis wrote it before format 2, with one agent; returns the
    agent's adapter (or nothing, for a whole-model agent)."""
    from genesis.colony.adapters import attach, new_adapter

    bundle = load_bundle(bundle_path)
    (folder / "agents").mkdir(parents=True)
    shutil.copyfile(bundle_path / "tokenizer.json", folder / "tokenizer.json")
    settings = {"division_threshold": 25, "population_cap": 6} | ({"agent_weights": "adapter"} if kind == "adapter"
                                                                   else {})
    agent = "a0123abcd"
    adapter = {}
    if kind == "adapter":
        (folder / "bases").mkdir()
        shutil.copyfile(bundle_path / "model.safetensors", folder / "bases" / "b01234567.safetensors")
        adapter = new_adapter(attach(bundle.model), 4, 0.01, 7)
        save_file(adapter, str(folder / "agents" / f"{agent}.safetensors"), metadata={"version": "3", "base": "b01234567"})
    else:
        shutil.copyfile(bundle_path / "model.safetensors", folder / "agents" / f"{agent}.safetensors")
    with sqlite3.connect(folder / "colony.db") as db:
        db.executescript(FORMAT_1_SCHEMA)
        db.execute("INSERT INTO settings VALUES ('settings', ?)", (json.dumps(settings),))
        db.execute("INSERT INTO agents (id, genome, weights, block_size, fitness, identity_seed, born) VALUES "
                   "(?, ?, ?, ?, ?, ?, ?)", (agent, bundle.genome.to_json(), f"agents/{agent}.safetensors",
                                             bundle.manifest["block_size"], -5.0, "7", "2026-11-01T00:00:00"))
    return adapter


@pytest.mark.parametrize("kind", ["adapter", "full"])
def test_a_colony_made_by_an_older_genesis_upgrades_once_and_keeps_every_weight(tmp_path, bundles, kind):
    folder = tmp_path / "old"
    adapter = _format_1_colony(folder, bundles[0], kind)
    result = runner.invoke(app, ["colony", "status", str(folder)])
    assert result.exit_code == 2 and f"genesis colony upgrade {folder}" in result.output
    result = runner.invoke(app, ["colony", "upgrade", str(folder)])
    assert result.exit_code == 0 and "1 agents" in result.output, result.output
    assert not (folder / "agents").exists() and not (folder / "tokenizer.json").exists()
    colony = Colony.open(folder)
    agent = colony.agents()[0]
    if kind == "adapter":
        assert colony.version(agent) == 3
        assert all(torch.equal(adapter[k], v) for k, v in colony.model(agent).tensors().items())
    else:
        assert colony.settings.agent_weights == "full"
        expected = load_bundle(bundles[0]).model.state_dict()
        assert all(torch.equal(expected[k], v) for k, v in colony.model(agent).state_dict().items())
    assert colony.ask("The", max_tokens=2, seed=0).memory_id == 1
    assert runner.invoke(app, ["colony", "upgrade", str(folder)]).exit_code == 2  # once


@pytest.mark.parametrize("tamper", ["outside", "symlink"])
def test_an_upgrade_never_reads_outside_the_folder_and_changes_nothing_when_refused(tmp_path, bundles, tamper):
    folder = tmp_path / "old"
    _format_1_colony(folder, bundles[0], "full")
    secret = tmp_path / "secret.safetensors"
    shutil.copyfile(bundles[0] / "model.safetensors", secret)
    if tamper == "outside":
        with sqlite3.connect(folder / "colony.db") as db:
            db.execute("UPDATE agents SET weights = '../secret.safetensors'")
    else:
        path = folder / "agents" / "a0123abcd.safetensors"
        path.unlink()
        path.symlink_to(secret)
    before = _dump(folder)
    result = runner.invoke(app, ["colony", "upgrade", str(folder)])
    assert result.exit_code == 2 and ("weights path" in result.output or "symbolic link" in result.output)
    assert _dump(folder) == before and (folder / "tokenizer.json").exists()
    with pytest.raises(genesis.GenesisError, match="older genesis"):
        Colony.open(folder)


def _dump(folder) -> list[str]:
    with sqlite3.connect(folder / "colony.db") as db:
        return list(db.iterdump())


def test_a_seeding_that_fails_leaves_no_colony_behind(location, tmp_path, bundles):
    from genesis.colony.export import export_agent

    source = Colony.seed(tmp_path / "source", bundles[:1])
    exported = export_agent(source, source.agents()[0].id, tmp_path / "agent")  # an adapter of rank 4
    with pytest.raises(genesis.GenesisError, match="rank"):  # raised halfway through filling the database
        Colony.seed(location, [bundles[1], exported], ColonySettings(adapter_rank=8))
    with pytest.raises(genesis.GenesisError, match="not a colony"):
        Colony.open(location)
    assert len(Colony.seed(location, [bundles[1], exported]).agents()) == 2
