"""Champions as agents: bundles, generation, and a colony that divides and is selected."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil

import pytest
import torch
from typer.testing import CliRunner

import genesis
from genesis.cli import app
from genesis.colony.adapters import mutate_adapter
from genesis.colony.bundle import export_champions, load_bundle
from genesis.colony.colony import Colony
from genesis.colony.learning import mutate_weights
from genesis.colony.settings import ColonySettings
from genesis.colony.simulate import simulate
from genesis.train.generate import mixture, next_token_probs
from genesis.train.model import GPT, load_weights

runner = CliRunner()


def _state(model: GPT) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_bundles_round_trip_bit_exactly(run, bundles, tmp_path):
    first = load_bundle(bundles[0])
    kept = GPT(first.model.config)
    load_weights(kept, run.store.weights_path(first.genome.training_id))
    assert all(torch.equal(a, b) for a, b in zip(_state(kept).values(), _state(first.model).values()))
    assert first.genome == run.champions(1)[0].genome  # the confirmed ranking's first
    assert first.manifest["metrics"]["val_loss"] == run.champions(1)[0].outcome.val_loss
    exported = json.loads(runner.invoke(app, ["export", str(run.path), "--top", "1", "--out",
                                              str(tmp_path / "json"), "--json"]).stdout)
    assert exported[0]["weights"] == "kept by the run" and exported[0]["genome_id"] == first.genome.id
    again = export_champions(run.path, top=1, out=tmp_path)
    assert (again[0] / "model.safetensors").read_bytes() == (bundles[0] / "model.safetensors").read_bytes()



def test_bundles_take_the_hugging_face_layout(bundles):
    from safetensors import safe_open
    from tokenizers import Tokenizer

    assert sorted(p.name for p in bundles[0].iterdir()) == [
        "README.md", "config.json", "configuration_genesis.py", "genesis_ulm.py", "model.safetensors",
        "modeling_genesis.py", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((bundles[0] / "config.json").read_text())
    genome = genesis.Genome.from_dict(config["genesis"]["genome"])
    assert (config["n_layer"], config["n_head"], config["n_embd"], config["activation_function"]) == (
        genome.n_layer, genome.n_head, genome.d_model, genome.activation)
    assert config["vocab_size"] == Tokenizer.from_file(str(bundles[0] / "tokenizer.json")).get_vocab_size()
    with safe_open(str(bundles[0] / "model.safetensors"), framework="pt") as weights:
        assert weights.get_tensor("tok_emb.weight").shape == (config["vocab_size"], config["n_embd"])
    card = (bundles[0] / "README.md").read_text()
    metadata = card.split("---")[1]
    assert card.startswith("---\n") and "library_name: genesis" in metadata and "pipeline_tag: text-generation" in metadata
    import yaml

    assert yaml.safe_load(metadata)["model-index"][0]["results"][0]["metrics"][0]["value"] == pytest.approx(
        config["genesis"]["metrics"]["val_ppl"], abs=1e-3)
    assert genome.describe() in card


def test_a_bundle_of_the_older_layout_still_loads_and_seeds(bundles, tmp_path):
    from genesis.colony.bundle import sha256_file

    old = tmp_path / "old"
    old.mkdir()
    new = json.loads((bundles[0] / "config.json").read_text())["genesis"]
    for name in ("model.safetensors", "tokenizer.json"):
        shutil.copyfile(bundles[0] / name, old / name)
    (old / "genome.json").write_text(genesis.Genome.from_dict(new["genome"]).to_json() + "\n")
    (old / "card.md").write_text("# an agent\n")
    manifest = {k: v for k, v in new.items() if k not in ("genome", "format", "sha256")} | {
        "format": 1, "sha256": {n: sha256_file(old / n) for n in ("genome.json", "model.safetensors", "tokenizer.json")}}
    (old / "bundle.json").write_text(json.dumps(manifest))
    loaded, again = genesis.load_agent(old), genesis.load_agent(bundles[0])
    assert loaded.genome == again.genome and loaded.manifest["metrics"] == again.manifest["metrics"]
    assert all(torch.equal(a, b) for a, b in zip(_state(loaded.model).values(), _state(again.model).values()))
    assert Colony.seed(tmp_path / "c", [old]).agents()[0].fitness == -new["metrics"]["val_loss"]


@pytest.mark.parametrize("kind", ["adapter", "full"])
def test_an_agent_leaves_its_colony_as_a_bundle_that_loads_generates_and_seeds(tmp_path, bundles, kind):
    from genesis.train.generate import next_token_probs

    colony = _colony(tmp_path, bundles, agent_weights=kind, adapt_steps=2, learning_rate=1e-2)
    colony.teach("The history of the city", " is long and old")  # the agents learned: not their seed bundle
    agent = colony.agents()[0]
    out = tmp_path / "exported"
    result = runner.invoke(app, ["colony", "export", str(colony.folder), agent.id, "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = genesis.load_agent(out)
    assert torch.allclose(next_token_probs(exported.model, [1, 2, 3]), next_token_probs(colony.model(agent), [1, 2, 3]),
                          atol=1e-6)
    assert (out / "adapter" / "adapter_model.safetensors").is_file() == (kind == "adapter")
    import yaml

    card = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert card["library_name"] == "genesis" and "model-index" not in card  # no validation perplexity to report
    if kind == "adapter":
        assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == colony.settings.adapter_rank
        assert (out / "model.safetensors").read_bytes() in [(b / "model.safetensors").read_bytes() for b in bundles]
    assert runner.invoke(app, ["generate", str(out), "The", "--max-tokens", "3"]).exit_code == 0
    child = Colony.seed(tmp_path / "next", [out], ColonySettings(agent_weights=kind))
    assert child.agents()[0].fitness == pytest.approx(agent.fitness) and child.agents()[0].genome == agent.genome
    if kind == "adapter":  # an identity of its own: the exported adapter plus N(0, σ²)
        delta = torch.cat([(v - exported.adapter[k]).flatten() for k, v in child.weights.adapter(child.agents()[0]).items()])
        assert delta.std().item() == pytest.approx(agent.genome.sigma, rel=0.1)
        with pytest.raises(genesis.GenesisError, match="rank"):
            Colony.seed(tmp_path / "other", [out], ColonySettings(adapter_rank=8))
    assert runner.invoke(app, ["colony", "export", str(colony.folder), "a00000000", "--out",
                               str(tmp_path / "none")]).exit_code == 2


def test_export_retrains_missing_weights_exactly(run, tmp_path):
    copy = tmp_path / run.id
    shutil.copytree(run.path, copy)
    shutil.rmtree(copy / "weights")
    retrained = load_bundle(export_champions(copy, top=1, out=tmp_path / "out")[0])
    assert retrained.manifest["metrics"]["val_loss"] == run.champions(1)[0].outcome.val_loss


def _broken_copy(bundles, tmp_path, name="broken"):
    target = tmp_path / name
    shutil.copytree(bundles[0], target)
    return target


def _generate(path):
    return runner.invoke(app, ["generate", str(path), "The", "--max-tokens", "3"])


def test_corrupt_and_mismatched_bundles_exit_2(bundles, tmp_path, data_folder):
    truncated = _broken_copy(bundles, tmp_path, "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    result = _generate(truncated)
    assert result.exit_code == 2 and "is corrupt" in result.output

    other_tokenizer = _broken_copy(bundles, tmp_path, "tokenizer")
    from genesis.train.data import load_data

    load_data(data_folder, vocab_size=512, cache_dir=tmp_path / "cache").tokenizer.save(
        str(other_tokenizer / "tokenizer.json"))
    result = _generate(other_tokenizer)
    assert result.exit_code == 2 and "tokenizer.json is corrupt" in result.output

    # A consistent manifest over weights of another genome: the shapes give it away.
    mismatched = _broken_copy(bundles, tmp_path, "mismatched")
    config = json.loads((mismatched / "config.json").read_text())
    genome = genesis.Genome.from_dict(config["genesis"]["genome"])
    wider = genesis.Genome(**{**genome.to_dict(), "d_model": 96 if genome.d_model != 96 else 64})
    config["genesis"] |= {"genome": wider.to_dict(), "genome_id": wider.id}
    (mismatched / "config.json").write_text(json.dumps(config))
    result = _generate(mismatched)
    assert result.exit_code == 2 and "do not fit genome" in result.output

    # A manifest from someone else: a field missing, or hashes that would read outside the folder.
    for name, change in (("no-genome-id", lambda g: g.pop("genome_id")),
                         ("outside", lambda g: g.update(sha256={"../../secret": "0" * 64}))):
        broken = _broken_copy(bundles, tmp_path, name)
        config = json.loads((broken / "config.json").read_text())
        change(config["genesis"])
        (broken / "config.json").write_text(json.dumps(config))
        result = _generate(broken)
        assert result.exit_code == 2 and ("lacks a valid 'genome_id'" in result.output
                                          or "lacks the SHA-256 of model.safetensors" in result.output)

    result = _generate(tmp_path)
    assert result.exit_code == 2 and "not an agent bundle" in result.output


def test_generate_samples_text_from_a_bundle(bundles):
    result = runner.invoke(app, ["generate", str(bundles[0]), "The history of", "--max-tokens", "8",
                                 "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("The history of") and len(result.output.strip()) > len("The history of")
    again = runner.invoke(app, ["generate", str(bundles[0]), "The history of", "--max-tokens", "8",
                                "--seed", "3"])
    assert again.output == result.output


def _colony(tmp_path, bundles, **settings) -> Colony:
    return Colony.seed(tmp_path / "colony", bundles, ColonySettings(**settings))


@pytest.mark.parametrize("kind", ["adapter", "full"])
def test_division_adds_noise_of_scale_sigma_and_records_lineage(tmp_path, bundles, kind):
    colony = _colony(tmp_path, bundles, population_cap=10, agent_weights=kind, adapter_rank=8)
    parent = colony.agents()[0]
    child_id = colony.divide(parent.id)
    child = next(a for a in colony.agents() if a.id == child_id)
    assert child.parent == parent.id and child.genome == parent.genome
    difference = torch.cat([(c - p).flatten() for c, p in zip(
        _state(colony.model(child)).values(), _state(colony.model(parent)).values())])
    assert difference.std().item() == pytest.approx(parent.genome.sigma, rel=0.05)
    assert abs(difference.mean().item()) < parent.genome.sigma / 10
    if kind == "full":
        replayed = _state(mutate_weights(colony.model(parent), parent.genome.sigma, child.identity_seed))
    else:  # the adapter alone changes; the child replays from its identity seed
        replayed = mutate_adapter(colony.model(parent).tensors(), parent.genome.sigma, child.identity_seed)
        replayed = {"adapter." + k.replace(".", "__"): v for k, v in replayed.items()}
    assert replayed.keys() == _state(colony.model(child)).keys()
    assert all(torch.equal(replayed[k], v) for k, v in _state(colony.model(child)).items())
    kinds = [(e["kind"], e["agent"]) for e in colony.status()["events"]]
    assert ("division", parent.id) in kinds and ("birth", child_id) in kinds


def test_population_cap_holds_and_the_weakest_retire(tmp_path, bundles):
    colony = _colony(tmp_path, bundles, division_threshold=1, population_cap=3, adapt_steps=0, selection="fitness")
    for seed in range(3):
        colony.ask("The", max_tokens=2, seed=seed)
        assert len(colony.agents()) <= 3
    everyone = colony.agents(alive_only=False)
    retired = [a for a in everyone if a.status == "retired"]
    assert retired and len(everyone) > 3
    assert any(e["kind"] == "retirement" for e in colony.status(events=100)["events"])
    # without feedback fitness stays put, so selection must have kept the fittest
    assert max(a.fitness for a in retired) <= min(a.fitness for a in colony.agents())


def test_consensus_of_one_agent_is_that_agent_and_weights_sum_to_one(tmp_path, bundles):
    solo = Colony.seed(tmp_path / "solo", bundles[:1])
    agent = solo.agents()[0]
    assert solo.consensus_weights([agent]) == [1.0]
    probs = next_token_probs(solo.model(agent), [1, 2, 3])
    assert torch.allclose(mixture(probs[None], [1.0]), probs)
    pair = _colony(tmp_path, bundles)
    assert sum(pair.consensus_weights(pair.agents())) == pytest.approx(1.0)
    top = Colony.seed(tmp_path / "top", bundles, ColonySettings(consensus="top_k", consensus_top_k=1))
    assert top.consensus_weights(top.agents()) == [1.0, 0.0]  # fittest first
    sparse = Colony.seed(tmp_path / "sparse", bundles, ColonySettings(answering=1))
    fittest = max(sparse.agents(), key=lambda a: a.fitness)
    assert sparse.ask("The", max_tokens=2, seed=0).agents == (fittest.id,)  # only the one it keeps decodes
    mixed = mixture(torch.stack([probs, torch.roll(probs, 1)]), [3.0, 1.0])
    assert mixed.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_an_ask_reads_the_agents_again_when_one_vanished_under_it(tmp_path, bundles, monkeypatch):
    from genesis.errors import NotFound

    colony = _colony(tmp_path, bundles, adapt_steps=0)
    predictor, calls = colony.weights.predictor, []

    def racing(agents, temperature, races=1):  # the first reads find an agent another process just forgot
        calls.append(len(agents))
        if len(calls) <= races:
            raise NotFound("agent retired long ago; its weights are gone")
        return predictor(agents, temperature)

    monkeypatch.setattr(colony.weights, "predictor", racing)
    assert colony.ask("The", max_tokens=2, seed=0).text is not None and len(calls) == 2
    calls.clear()
    monkeypatch.setattr(colony.weights, "predictor", lambda agents, temperature: racing(agents, temperature, 99))
    with pytest.raises(NotFound):  # bounded: a race that never ends is an error, not a loop
        colony.ask("The", max_tokens=2, seed=0)


def test_feedback_moves_fitness_and_agents_learn(tmp_path, bundles):
    colony = _colony(tmp_path, bundles, fitness_smoothing=0.5, adapt_steps=2, learning_rate=1e-3)
    before = {a.id: a.fitness for a in colony.agents()}
    weights_before = {a.id: _state(colony.model(a)) for a in colony.agents()}
    received = colony.feedback("The history of the city", " is long and old")
    for agent in colony.agents():
        assert agent.fitness == pytest.approx(0.5 * before[agent.id] + 0.5 * received[agent.id])
        changed = [not torch.equal(a, b) for a, b in zip(weights_before[agent.id].values(),
                                                         _state(colony.model(agent)).values())]
        assert any(changed)
    answer = colony.ask("The", max_tokens=2, seed=0)
    colony.feedback("The", score=0.5, memory_id=answer.memory_id)
    assert colony.status()["memories"] == 2


@pytest.mark.parametrize("counts, message", [
    ({"chunks": 0}, "chunks must be in [1, 100000]"),
    ({"chunks": 10**9}, "chunks must be in [1, 100000]"),  # topic orders would allocate them all
    ({"prompt_tokens": 0}, "prompt tokens must be in"), ({"continuation_tokens": 10**6}, "continuation tokens"),
    ({"start": -1}, "the start must be 0 or more"),
    ({"start": 10**8}, "holds no chunk of 48 tokens from chunk 100000000 on"),
])
def test_simulate_refuses_counts_out_of_range_and_leaves_the_colony_as_it_was(tmp_path, bundles, data_folder,
                                                                              counts, message):
    colony = _colony(tmp_path, bundles, adapt_steps=0)
    before = colony.status()
    with pytest.raises(genesis.GenesisError, match=re.escape(message)):
        simulate(colony, data_folder, **{"prompt_tokens": 32, "continuation_tokens": 16, **counts})
    assert colony.status() == before and not (colony.folder / "simulation.json").exists()


def test_simulate_predicts_before_learning_and_writes_its_summary(tmp_path, bundles, data_folder):
    from genesis.train.data import load_data
    from genesis.train.generate import continuation_token_probs

    colony = _colony(tmp_path, bundles, division_threshold=3, population_cap=3, agent_weights="full")
    best = load_bundle(bundles[0]) if colony.agents()[0].genome == load_bundle(bundles[0]).genome \
        else load_bundle(bundles[1])  # the fittest agent at the start, as the replay freezes it
    summary = simulate(colony, data_folder, chunks=8, prompt_tokens=16, continuation_tokens=8)
    assert summary["chunks"] == 8 and summary["divisions"] >= 2
    online = summary["online_ppl"]
    assert set(online) == {"consensus", "frozen_best", "learning_best"}
    assert summary["colony_beats_frozen_best"] == (online["consensus"] < online["frozen_best"])
    # the frozen best is measured independently here: same chunks, its bundle's own weights
    stream = load_data(data_folder, best.tokenizer.get_vocab_size()).split("test")
    nll, counted = 0.0, 0
    for index in range(8):
        piece = stream[index * 24:(index + 1) * 24].tolist()
        context = best.tokenizer.encode(best.tokenizer.decode(piece[:16])).ids
        target = best.tokenizer.encode(best.tokenizer.decode(piece[16:])).ids
        nll -= float(continuation_token_probs(best.model, context, target).double().log().sum())
        counted += len(target)
    assert online["frozen_best"] == pytest.approx(math.exp(nll / counted), rel=1e-6)
    series = summary["series"]
    assert [p["chunk"] for p in series] == list(range(1, 9))
    assert all(p["agents"] <= 3 for p in series)
    saved = json.loads((colony.folder / "simulation.json").read_text())
    assert saved["online_ppl"] == summary["online_ppl"]
    assert (colony.folder / "simulation.png").read_bytes()[:4] == b"\x89PNG"


def test_colony_cli_seed_ask_status(tmp_path, bundles):
    folder = tmp_path / "cli-colony"
    result = runner.invoke(app, ["colony", "seed", str(folder), *map(str, bundles), "--theta", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["colony", "ask", str(folder), "The", "--max-tokens", "3", "--seed", "1",
                                 "--continuation", " city"])
    assert result.exit_code == 0 and "memory 1" in result.output
    result = runner.invoke(app, ["colony", "status", str(folder)], env={"COLUMNS": "160"})
    assert result.exit_code == 0 and "2 alive" in result.output and "birth" in result.output
    status = json.loads(runner.invoke(app, ["colony", "status", str(folder), "--json"]).stdout)
    assert status["memories"] == 1 and any(e["kind"] == "birth" for e in status["events"])
    result = runner.invoke(app, ["colony", "seed", str(folder), *map(str, bundles)])
    assert result.exit_code == 2 and "already holds a colony" in result.output


@pytest.mark.parametrize("option, value, message", [
    ("--max-tokens", "0", "max tokens must be in [1, 10000]"),
    ("--max-tokens", "100000000", "max tokens must be in [1, 10000]"),  # would sample for hours
    ("--temperature", "-1", "positive number"),
    ("--temperature", "nan", "positive number"),
    ("--top-k", "-3", "top-k must be 0"),
])
def test_generate_refuses_sampling_settings_out_of_range(bundles, option, value, message):
    result = runner.invoke(app, ["generate", str(bundles[0]), "The", option, value])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize("option, value, message", [
    ("--max-tokens", "100000000", "max tokens must be in [1, 10000]"),
    ("--recall", "100000000", "recall must be a finite int in [0, 64]"),  # the setting's own range
    ("--recall", "-1", "recall must be"),
])
def test_colony_ask_refuses_settings_out_of_range_and_stores_nothing(tmp_path, bundles, option, value, message):
    colony = _colony(tmp_path, bundles, adapt_steps=0)
    result = runner.invoke(app, ["colony", "ask", str(colony.folder), "The", option, value])
    assert result.exit_code == 2 and message in result.output
    assert json.loads(runner.invoke(app, ["colony", "status", str(colony.folder), "--json"]).stdout)["memories"] == 0


@pytest.mark.parametrize("column, value, message", [
    ("id", "../../x", "not an agent id"),
    ("block_size", 10**9, "block size"),
    ("genome", '{"n_layer": 200, "n_head": 1, "d_model": 20000, "activation": "relu", "sigma": 0.01}',
     "above the limit"),
    ("genome", '{"n_layer": -1, "n_head": 1, "d_model": 100000, "activation": "relu", "sigma": 0.01}',
     "must be in 1..256"),
    ("genome", "not json", "not valid JSON"),
])
def test_colony_rows_are_checked_before_any_model_is_built(tmp_path, bundles, column, value, message):
    import sqlite3

    colony = _colony(tmp_path, bundles, adapt_steps=0)
    with sqlite3.connect(colony.folder / "colony.db") as db:
        db.execute(f"UPDATE agents SET {column} = ? WHERE id = ?", (value, colony.agents()[0].id))
    result = runner.invoke(app, ["colony", "status", str(colony.folder)])
    assert result.exit_code == 2 and message in result.output


def test_a_lower_score_always_lowers_fitness_more(tmp_path, bundles):
    after = {}
    for score in (0.05, 0.3, 0.5, 0.9, 1.0):
        colony = _colony(tmp_path / str(score), bundles, fitness_smoothing=0.5, adapt_steps=0)
        answer = colony.ask("The", max_tokens=2, seed=0)
        before = {a.id: a.fitness for a in colony.agents()}
        colony.feedback("The", score=score, memory_id=answer.memory_id)
        after[score] = {a.id: a.fitness - before[a.id] for a in colony.agents() if a.id in answer.agents}
    changes = [sum(after[s].values()) / len(after[s]) for s in sorted(after)]
    assert changes == sorted(changes) and changes[0] < 0 < changes[-1]
    assert changes[2] == pytest.approx(0)  # 0.5 is neutral


def _adapter_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.tensors().items()}


def _blobs(colony, table):
    import sqlalchemy as sa

    with colony.store.read() as db:
        return dict(db.execute(sa.select(*list(table.c)[:1], table.c.data)).all())


def test_adapter_agents_share_one_frozen_base_and_stay_small(tmp_path, bundles):
    from genesis.colony.database import bases_table, weights_table

    colony = Colony.seed(tmp_path / "many", bundles[:1], ColonySettings(population_cap=50), copies=20)
    agents = colony.agents()
    bases = _blobs(colony, bases_table)
    assert len(agents) == 20 and len(bases) == 1
    assert next(iter(bases.values())) == (bundles[0] / "model.safetensors").read_bytes()
    sizes = [len(data) for data in _blobs(colony, weights_table).values()]
    assert len(sizes) == 20 and max(sizes) < len(next(iter(bases.values()))) / 10
    # distinct identities: no two agents predict the same distribution
    probs = colony.weights.predictor(agents, 1.0)([1, 2, 3])
    assert probs.shape == (20, colony.tokenizer.get_vocab_size())
    assert all(not torch.allclose(probs[0], probs[i]) for i in range(1, 20))
    # the batched pass gives what each agent's own model gives alone
    alone = torch.stack([next_token_probs(colony.model(a), [1, 2, 3]) for a in agents])
    assert torch.allclose(probs, alone, atol=1e-5)
    predict = colony.weights.predictor(agents, 1.0)  # decodes incrementally as the context grows
    for context in ([1, 2, 3], [1, 2, 3, 9], [1, 2, 3, 9, 4], [5, 6]):
        alone = torch.stack([next_token_probs(colony.model(a), context) for a in agents])
        assert torch.allclose(predict(context), alone, atol=1e-5)
    target = colony.tokenizer.encode(" is long").ids
    batched = colony.continuation_probs(agents, [1, 2, 3], target)
    from genesis.train.generate import continuation_token_probs
    assert torch.allclose(batched, torch.stack([continuation_token_probs(colony.model(a), [1, 2, 3], target)
                                                for a in agents]), atol=1e-5)


def test_adapter_learning_changes_adapters_only(tmp_path, bundles):
    colony = _colony(tmp_path, bundles, adapt_steps=3, learning_rate=1e-2)
    from genesis.colony.database import bases_table

    bases = _blobs(colony, bases_table)
    before = {a.id: _adapter_state(colony.model(a)) for a in colony.agents()}
    base_params = [p.clone() for p in colony.weights.base(colony.agents()[0])[0].parameters()]
    colony.teach("The history of the city", " is long and old")
    for agent in colony.agents():
        after = _adapter_state(colony.model(agent))
        assert any(not torch.equal(after[k], v) for k, v in before[agent.id].items())
        assert colony.version(agent) == 1
    assert _blobs(colony, bases_table) == bases
    reopened = Colony.open(colony.folder)
    assert all(torch.equal(a, b) for a, b in zip(base_params, reopened.weights.base(reopened.agents()[0])[0].parameters()))


@pytest.mark.parametrize("consensus", ["softmax", "posterior"])
def test_routed_learning_teaches_only_the_agents_the_consensus_listens_to_most(tmp_path, bundles, consensus):
    colony = Colony.seed(tmp_path / consensus, bundles, ColonySettings(
        consensus=consensus, learners=1, adapt_steps=2, learning_rate=1e-2), copies=2)
    prompt = "The history of the city"
    agents = colony.agents()
    shares = colony.consensus_weights(agents, colony.tokenizer.encode(prompt).ids)
    heard = agents[max(range(len(agents)), key=lambda i: shares[i])]
    colony.teach(prompt, " is long and old")
    assert {a.id for a in colony.agents() if colony.version(a) > 0} == {heard.id}
    everyone = Colony.seed(tmp_path / f"{consensus}-all", bundles, ColonySettings(
        consensus=consensus, adapt_steps=2, learning_rate=1e-2), copies=2)
    everyone.teach(prompt, " is long and old")
    assert all(everyone.version(a) == 1 for a in everyone.agents())


def test_a_colony_seeded_before_adapters_opens_as_full_weights(tmp_path, bundles):
    import sqlite3

    colony = _colony(tmp_path, bundles, agent_weights="full", adapt_steps=0)
    with sqlite3.connect(colony.folder / "colony.db") as db:
        stored = json.loads(db.execute("SELECT value FROM settings WHERE key = 'settings'").fetchone()[0])
        stored.pop("agent_weights"), stored.pop("adapter_rank")
        db.execute("UPDATE settings SET value = ? WHERE key = 'settings'", (json.dumps(stored),))
    old = Colony.open(colony.folder)
    assert old.settings.agent_weights == "full" and old.ask("The", max_tokens=2, seed=0).text is not None


@pytest.mark.parametrize("tamper, message", [
    ("rank", "wrong shape"), ("layers", "do not hold the adapter"), ("base", "not a base id"),
    ("bytes", "not a safetensors file")])
def test_adapter_weights_from_someone_else_are_checked(tmp_path, bundles, tamper, message):
    import sqlalchemy as sa
    from safetensors.torch import load, save

    from genesis.colony.database import weights_table

    colony = _colony(tmp_path, bundles, adapt_steps=0)
    agent = colony.agents()[0]
    tensors, base = load(_blobs(colony, weights_table)[agent.id]), colony.weights.base_of(agent)
    if tamper == "rank":
        tensors = {k: torch.zeros(100, v.shape[1]) if k.endswith(".a") else torch.zeros(v.shape[0], 100)
                   for k, v in tensors.items()}
    elif tamper == "layers":
        tensors.pop(next(iter(tensors)))
    elif tamper == "base":
        base = "../../outside"
    data = b"\xff" * 64 if tamper == "bytes" else save(tensors)
    with colony.store.write() as db:
        db.execute(sa.update(weights_table).where(weights_table.c.agent == agent.id).values(base=base, data=data))
    with pytest.raises(genesis.GenesisError, match=message):
        Colony.open(colony.folder).ask("The", max_tokens=1, seed=0)


def test_adapters_learning_together_make_the_updates_each_would_make_alone(tmp_path, bundles):
    from genesis.colony.adapters import AdaptedModel, learn_together
    from genesis.colony.learning import adapt_model, training_batch

    colony = Colony.seed(tmp_path / "c", bundles[:1], ColonySettings(population_cap=10), copies=3)
    agents = colony.agents()
    base, wrappers = colony.weights.base(agents[0])
    sequences = [colony.tokenizer.encode(t).ids for t in ("The history of the city is long", "A river runs")]
    batch = training_batch(sequences, base.config.block_size)
    together = learn_together(base, wrappers, [colony.weights.adapter(a) for a in agents], batch, 3, 1e-2)
    for agent, learned in zip(agents, together):
        start = colony.weights.adapter(agent)
        alone = AdaptedModel(base, wrappers, colony.weights.adapter(agent))
        adapt_model(alone, sequences, 3, 1e-2)
        # Adam divides by the gradient's own size, so where a gradient is ~0 (B starts at
        # zero) float noise between the batched and the single pass can turn an element's
        # step (seen on CI's CPU, not here: 4e-6 apart); compare whole updates by norm.
        # Mixing agents' rows or gradients would put them O(1) apart.
        for name, tensor in alone.tensors().items():
            update_alone, update_together = tensor - start[name], learned[name] - start[name]
            gap = (update_together - update_alone).norm() / update_alone.norm().clamp(min=1e-12)
            assert update_alone.norm() > 0 and gap < 0.05, (name, float(gap))


def test_memories_are_found_again_by_similarity_and_kept_bounded(tmp_path, bundles, monkeypatch):
    import genesis.colony.colony as colony_module

    colony = _colony(tmp_path, bundles, adapt_steps=0, memory_window=2, memory_limit=3, recall=1)
    texts = [("The river", " flows past the town"), ("Armies of the king", " marched to battle"),
             ("Rain fell on the hills", " all night")]
    for prompt, continuation in texts:
        colony.teach(prompt, continuation)
    # learning from the newest feedback draws on the memory most like it, not the most recent
    learned = []
    monkeypatch.setattr(colony.weights, "adapt", lambda agents, sequences, *_: learned.append(sequences))
    colony.settings = dataclasses.replace(colony.settings, adapt_steps=1)
    colony.teach("Armies of the king", " marched to war")
    assert colony.status()["memories"] == 3  # the limit: the oldest memory is forgotten
    assert [colony.tokenizer.decode(s) for s in learned[0]] == [
        "Armies of the king marched to battle", "Armies of the king marched to war"]  # not the rain
    # recall puts the most similar memory before the prompt
    prompts = []
    real = colony_module.generate_with
    monkeypatch.setattr(colony_module, "generate_with",
                        lambda predict, weights, tokenizer, prompt, *rest: prompts.append(prompt) or real(
                            predict, weights, tokenizer, prompt, *rest))
    colony.ask("Rain fell", max_tokens=2, seed=0)
    assert prompts == ["Rain fell on the hills all night\nRain fell"]
    colony.ask("Rain fell", max_tokens=2, seed=0, recall=0)
    assert prompts[-1] == "Rain fell"


def test_the_replay_measures_a_soup_and_forgetting_for_a_one_base_colony(tmp_path, bundles, data_folder):
    colony = Colony.seed(tmp_path / "one", bundles[:1], ColonySettings(population_cap=4, division_threshold=2),
                         copies=3)
    summary = simulate(colony, data_folder, chunks=4, prompt_tokens=16, continuation_tokens=8, start=2)
    assert set(summary["online_ppl"]) == {"consensus", "frozen_best", "learning_best", "soup"}
    forgetting = summary["forgetting"]
    assert all(math.isfinite(v) and v > 1 for v in forgetting.values())
    assert summary["start_chunk"] == 2 and summary["divisions"] >= 1
