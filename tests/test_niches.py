"""Context-routed consensus, the topic stream and niches: the posterior and niche policies,
the topic model, the topic-ordered replay and its specialization index, niche fitness,
division by niche leaders and selection that keeps specialists."""

from __future__ import annotations

import math

import numpy as np

import pytest
import sqlalchemy as sa
import torch
from hypothesis import given
from hypothesis import strategies as st

from genesis.colony import consensus
from genesis.colony.topics import TopicModel, articles, fit_topics, ordered, specialization

fitness = st.lists(st.floats(-12, -1), min_size=1, max_size=8)


@given(fitness, st.floats(0.01, 10))
def test_posterior_without_evidence_is_the_global_softmax(values, temperature):
    flat = consensus.Evidence(values, [0.0] * len(values))
    assert consensus.weights("posterior", flat, temperature, 1) == pytest.approx(
        consensus.weights("softmax", consensus.Evidence(values), temperature, 1))


@given(fitness, st.floats(0.01, 10), st.data())
def test_posterior_is_prior_times_likelihood(values, temperature, data):
    evidence = data.draw(st.lists(st.floats(-60, 0), min_size=len(values), max_size=len(values)))
    tau = data.draw(st.sampled_from([1.0, 4.0, 16.0]))
    shares = consensus.weights("posterior", consensus.Evidence(values, evidence), temperature, 1, tau)
    prior = consensus.weights("softmax", consensus.Evidence(values), temperature, 1)
    unnormalized = [p * math.exp(e / tau) for p, e in zip(prior, evidence)]
    assert sum(shares) == pytest.approx(1.0)
    assert shares == pytest.approx([u / sum(unnormalized) for u in unnormalized], abs=1e-9)


@given(fitness, st.floats(0.01, 10), st.data())
def test_sparse_routing_keeps_the_largest_shares_renormalized(values, temperature, data):
    policy = data.draw(st.sampled_from(["softmax", "posterior", "niche"]))
    evidence = consensus.Evidence(values, data.draw(st.lists(st.floats(-60, 0), min_size=len(values),
                                                             max_size=len(values))), values[::-1])
    answering = data.draw(st.integers(1, len(values)))
    full = consensus.weights(policy, evidence, temperature, 1, 4.0)
    sparse = consensus.weights(policy, evidence, temperature, 1, 4.0, answering)
    kept = [i for i, share in enumerate(sparse) if share > 0]
    assert len(kept) <= answering and sum(sparse) == pytest.approx(1.0)
    assert min(full[i] for i in kept) >= max((full[i] for i in range(len(full)) if i not in kept), default=0)
    total = sum(full[i] for i in kept)
    assert [sparse[i] for i in kept] == pytest.approx([full[i] / total for i in kept])


def test_routing_never_scores_the_first_token():
    assert consensus.routing_split([5], 16) == ([5], [])
    assert consensus.routing_split([1, 2, 3, 4], 2) == ([1, 2], [3, 4])
    assert consensus.routing_split([1, 2, 3], 16) == ([1], [2, 3])


def test_a_routed_colony_listens_to_the_agent_that_explains_the_prompt(tmp_path, bundles):
    from genesis.colony.colony import Colony
    from genesis.colony.settings import ColonySettings

    colony = Colony.seed(tmp_path / "c", bundles, ColonySettings(consensus="posterior", routing_tokens=8))
    agents = colony.agents()
    context = colony.tokenizer.encode("The history of the city is long and the people of the town").ids
    shares = colony.consensus_weights(agents, context)
    before, recent = consensus.routing_split(context, 8)
    log_likelihood = colony.continuation_probs(agents, before, recent).double().log().sum(dim=1)
    expected = torch.softmax(torch.tensor([a.fitness for a in agents], dtype=torch.float64)
                             / colony.settings.consensus_temperature
                             + log_likelihood / colony.settings.routing_temperature, dim=0)
    assert shares == pytest.approx(expected.tolist())
    answer = colony.ask("The history of the city", max_tokens=3, seed=1)
    assert len(answer.agents) == len(answer.weights) and sum(answer.weights) == pytest.approx(1.0)


def test_topics_cluster_articles_and_round_trip_exactly(data_folder):
    from genesis.train.data import read_texts

    texts, _ = read_texts(data_folder)
    train = articles(texts["train"])
    assert len(train) == 60 and all(a.startswith(" = ") for a in train)
    model = fit_topics(train, 4)
    labels = model.topics(train)
    assert sorted(labels.count(t) for t in range(4)) == [9, 11, 18, 22]  # every topic holds articles
    again = TopicModel.from_json(model.to_json())
    assert again == model and again.topics(articles(texts["test"])) == model.topics(articles(texts["test"]))
    with pytest.raises(ValueError):
        TopicModel.from_json('{"vocabulary": ["a"], "idf": [1.0], "centroids": [[1.0, 2.0]]}')


def test_topic_orders_take_equal_shares_in_blocks_or_in_turn():
    chunks = [[[t, i] for i in range(5)] for t in range(3)]
    blocks = ordered(chunks, 6, "blocks", 0)
    assert [t for _, t in blocks] == [0, 0, 1, 1, 2, 2]
    assert [t for _, t in ordered(chunks, 6, "interleaved", 0)] == [0, 1, 2, 0, 1, 2]
    later = ordered(chunks, 6, "blocks", 1)  # another replay: another first topic, further chunks
    assert [t for _, t in later] == [1, 1, 2, 2, 0, 0] and later[0][0] == [1, 2]
    assert ordered([[], []], 6, "blocks", 0) == []  # chunks wider than every article


def test_specialization_is_zero_for_one_mixture_and_the_topic_entropy_for_perfect_routing():
    assert specialization([{"a": 0.5, "b": 0.5}] * 4, [0, 1, 0, 1]) == pytest.approx(0.0)
    routed = [{"a": 1.0}, {"b": 1.0}, {"a": 1.0}, {"b": 1.0}]
    assert specialization(routed, [0, 1, 0, 1]) == pytest.approx(1.0)


def test_a_topic_replay_records_topics_and_specialization_and_keeps_its_clustering(tmp_path, bundles, data_folder):
    from genesis.colony.colony import Colony
    from genesis.colony.settings import ColonySettings
    from genesis.colony.simulate import simulate

    colony = Colony.seed(tmp_path / "c", bundles, ColonySettings(consensus="posterior"))
    summary = simulate(colony, data_folder, chunks=8, prompt_tokens=16, continuation_tokens=8, order="blocks",
                       topics=4)
    topics = [p["topic"] for p in summary["series"]]
    assert topics == sorted(topics) and len(set(topics)) == 4  # one topic after another
    assert all(sum(p["weights"].values()) == pytest.approx(1.0) for p in summary["series"])
    index = summary["specialization_bits"]
    assert index["whole"] >= 0 and len(index["cumulative_quarters"]) == 4
    assert index["cumulative_quarters"][0] == 0.0 and index["cumulative_quarters"][-1] == index["whole"]
    assert set(summary["fisher"]["by_topic"]) == {str(t) for t in topics}  # Fisher per topic, the stream's niches
    assert all(p["topic_fitness"][1] >= 0 for p in summary["series"])
    from genesis.errors import GenesisError

    with pytest.raises(GenesisError, match="saved clustering has 4 topics"):
        simulate(colony, data_folder, chunks=4, order="interleaved", topics=3)


@given(st.lists(st.lists(st.floats(-12, -1), min_size=2, max_size=2), min_size=1, max_size=6), st.floats(0.01, 1))
def test_topic_fitness_is_a_running_mean_from_each_agents_first_score(scores, smoothing):
    from types import SimpleNamespace

    from genesis.colony.simulate import _topic_fitness

    running, living = {}, [SimpleNamespace(id="a"), SimpleNamespace(id="b")]
    for a, b in scores:
        mean, variance = _topic_fitness(running, {"a": a, "b": b}, living, smoothing)
    expected = []
    for column in zip(*scores):
        value = column[0]
        for score in column[1:]:
            value = (1 - smoothing) * value + smoothing * score
        expected.append(value)
    assert mean == pytest.approx(np.mean(expected)) and variance == pytest.approx(np.var(expected), abs=1e-9)


@given(st.lists(st.sampled_from("abc"), min_size=1, max_size=12), st.integers(1, 12), st.booleans(), st.data())
def test_species_selection_keeps_every_species_while_the_cap_allows(species, cap, with_niches, data):
    from genesis.colony.niches import dominated, retiring

    alive = [(f"agent{i}", s) for i, s in enumerate(species)]  # weakest first
    table = (np.array(data.draw(st.lists(st.floats(-9, -1), min_size=2 * len(species), max_size=2 * len(species))))
             .reshape(len(species), 2) if with_niches else None)
    gone = retiring(alive, cap, "species", table)
    kept = [s for (a, s) in alive if a not in gone]
    assert len(kept) == min(cap, len(alive))
    assert len(set(kept)) == min(len(set(species)), cap)
    assert retiring(alive, cap, "fitness") == [a for a, _ in alive[:max(0, len(alive) - cap)]]
    if table is not None and len(gone) == 1:  # the one to go: dominated within the most populous species, if any is
        largest = max(species.count(s) for s in species)
        crowded = [i for i, s in enumerate(species) if species.count(s) == largest]
        assert int(gone[0][5:]) == (dominated(table, crowded) or crowded)[0]


def test_a_colony_with_species_selection_keeps_each_champion(tmp_path, bundles):
    from genesis.colony.colony import Colony
    from genesis.colony.settings import ColonySettings

    colony = Colony.seed(tmp_path / "c", bundles, ColonySettings(population_cap=2, selection="species"), copies=1)
    for _ in range(3):  # each division pushes the colony above its cap of 2
        colony.divide(colony.agents()[0].id)
    assert len({a.genome.training_id for a in colony.agents()}) == 2 == len(colony.agents())


def test_new_colonies_select_by_species_and_older_ones_keep_selecting_by_fitness():
    from genesis.colony.settings import ColonySettings

    assert ColonySettings().selection == "species"
    assert ColonySettings.from_stored({"division_threshold": 25}).selection == "fitness"
    older = ColonySettings.from_stored({"adapt_steps": 3, "learning_rate": 1e-3})  # before children had their own
    assert (older.child_steps, older.child_learning_rate) == (3, 1e-3)


@given(st.integers(2, 4), st.integers(0, 3))
def test_niches_separate_texts_of_disjoint_words_and_fit_the_same_every_time(groups, shift):
    from genesis.colony.niches import fit_niches

    texts = [[100 * g + (i + shift) % 7, 100 * g + (i * 3) % 7, 100 * g + 7, 999] for g in range(groups)
             for i in range(5)]  # every text shares token 999; each group has words of its own
    fitted = fit_niches(texts, 1000, groups)
    labels = fitted.assign(texts).tolist()
    assert len({tuple(labels[g * 5:(g + 1) * 5]) for g in range(groups)}) == groups  # one niche per group
    assert all(len(set(labels[g * 5:(g + 1) * 5])) == 1 for g in range(groups))
    again = fit_niches(texts, 1000, groups)
    assert np.array_equal(again.centroids, fitted.centroids) and fitted.assign([[1, 7]]).tolist() == [labels[0]]


@given(st.data())
def test_niche_fitness_is_the_running_mean_of_each_agents_scores_in_each_niche(data):
    from genesis.colony.niches import niche_fitness

    memories = data.draw(st.lists(st.tuples(st.integers(0, 2), st.dictionaries(
        st.sampled_from(["a", "b", "c"]), st.floats(-9, -1), max_size=3)), max_size=12))
    fallback = [-5.0, -6.0, -7.0]
    table = niche_fitness([n for n, _ in memories], [s for _, s in memories], ["a", "b", "c"], fallback, 3, 0.25)
    for row, agent in enumerate("abc"):
        for niche in range(3):
            seen = [s[agent] for n, s in memories if n == niche and agent in s]
            expected = fallback[row]
            for i, value in enumerate(seen):
                expected = value if i == 0 else 0.75 * expected + 0.25 * value
            assert table[row, niche] == pytest.approx(expected)


@given(st.integers(2, 4), st.integers(1, 8), st.data())
def test_niche_selection_keeps_every_niche_leader_and_retires_the_dominated_first(niches_count, agents, data):
    from genesis.colony.niches import dominated, retiring

    values = data.draw(st.lists(st.floats(-9, -1), min_size=agents * niches_count, max_size=agents * niches_count,
                                unique=True))
    table = np.array(values).reshape(agents, niches_count)
    cap = data.draw(st.integers(niches_count, niches_count + 2))
    alive = [(f"a{i}", "one species") for i in range(agents)]
    gone = retiring(alive, cap, "niche", table)
    kept = [i for i, (a, _) in enumerate(alive) if a not in gone]
    assert len(kept) == min(cap, agents)
    assert {int(np.argmax(table[:, n])) for n in range(niches_count)} <= set(kept)
    if len(dominated(table, range(agents))) >= len(gone):  # enough dominated ones: only they retire
        assert {int(a[1:]) for a in gone} <= set(dominated(table, range(agents)))
    assert retiring(alive, cap, "niche", None) == retiring(alive, cap, "fitness")


def _niche_colony(tmp_path, bundles, **fields):
    from genesis.colony.colony import Colony
    from genesis.colony.settings import ColonySettings

    settings = ColonySettings(niches=2, consensus="niche", selection="niche", division_threshold=1000, **fields)
    colony = Colony.seed(tmp_path / "c", bundles, settings, copies=2)
    for _ in range(2):  # two kinds of text, taught in turn
        colony.teach("The match ended when the team", " scored a goal in the final minute of the game")
        colony.teach("The album was recorded by the band", " and the song reached the top of the chart")
    return colony


def test_a_niche_colony_listens_to_each_agents_fitness_in_the_prompts_niche(tmp_path, bundles):
    from genesis.colony import lifecycle
    from genesis.colony.database import scores_table

    colony = _niche_colony(tmp_path, bundles)
    agents = colony.agents()
    with colony.store.read() as db:
        view = lifecycle.niche_view(colony, db)
        assert len(db.execute(scores_table.select()).all()) == 4 * len(agents)  # every agent on every memory
    prompt = colony.tokenizer.encode("The team scored a goal in the match").ids
    niche = int(view.niches.assign([prompt])[0])
    assert niche == view.labels[0] != view.labels[1]  # the sports niche, not the music one
    fitness = torch.tensor([view.fitness_in(niche)[a.id] for a in agents], dtype=torch.float64)
    expected = torch.softmax(fitness / colony.settings.consensus_temperature, dim=0)
    assert colony.consensus_weights(agents, prompt) == pytest.approx(expected.tolist())
    answer = colony.ask("The team scored a goal in the match", max_tokens=2, seed=3)
    assert sum(answer.weights) == pytest.approx(1.0)
    with colony.store.read() as db:  # an ask changes no score: the view is reused
        assert lifecycle.niche_view(colony, db) is view
    colony.teach("The team won the match", " with a goal in the last minute")
    with colony.store.read() as db:  # feedback does: computed again, as a fresh colony computes it
        again = lifecycle.niche_view(colony, db)
        fresh = lifecycle.niche_view(type(colony)(colony.location), db)
    assert again is not view and again.memory_ids == fresh.memory_ids and np.array_equal(again.table, fresh.table)


def test_in_a_niche_colony_only_niche_leaders_divide_and_their_children_learn_the_niche(tmp_path, bundles):
    from genesis.colony import lifecycle

    colony = _niche_colony(tmp_path, bundles, population_cap=100)
    with colony.store.read() as db:
        leaders = lifecycle.niche_view(colony, db).leads()
    with colony.store.write() as db:  # every agent is past Θ at once
        db.execute(sa.text("UPDATE agents SET interactions = 1000"))
    colony.interact([])
    divisions = [e for e in colony.status(events=100)["events"] if e["kind"] == "division"]
    assert {e["agent"] for e in divisions} == set(leaders) and 1 <= len(leaders) <= 2
    assert all(e["detail"]["niche"] == leaders[e["agent"]] for e in divisions)
    children = [a for a in colony.agents() if a.parent is not None]
    assert len(children) == len(leaders) and all(colony.version(c) == 1 for c in children)  # learned its niche
    forced = colony.divide(colony.agents()[0].id)  # a division by hand learns nothing yet
    assert colony.version(next(a for a in colony.agents() if a.id == forced)) == 0


def test_a_niche_colony_forgets_the_scores_of_forgotten_memories(tmp_path, bundles):
    from genesis.colony.database import scores_table

    colony = _niche_colony(tmp_path, bundles, memory_limit=3)
    with colony.store.read() as db:
        kept = {m for (m,) in db.execute(sa.text("SELECT id FROM memories")).all()}
        scored = {m for (m, _, _) in db.execute(scores_table.select()).all()}
    assert len(kept) == 3 and scored == kept


def test_niche_policies_need_niches():
    from genesis.colony.settings import ColonySettings
    from genesis.errors import GenesisError

    for fields in ({"consensus": "niche"}, {"selection": "niche"}):
        with pytest.raises(GenesisError, match="need niches"):
            ColonySettings(**fields).validate()
    assert ColonySettings.from_stored({}).niches == 0


def test_the_cli_seeds_a_niche_colony_and_refuses_niche_policies_without_niches(tmp_path, bundles):
    from typer.testing import CliRunner

    from genesis.cli import app
    from genesis.colony.colony import Colony

    runner = CliRunner()
    folder = tmp_path / "niched"
    done = runner.invoke(app, ["colony", "seed", str(folder), *map(str, bundles), "--niches", "4",
                               "--consensus", "niche", "--selection", "niche"])
    assert done.exit_code == 0, done.output
    settings = Colony.open(folder).settings
    assert (settings.niches, settings.consensus, settings.selection) == (4, "niche", "niche")
    refused = runner.invoke(app, ["colony", "seed", str(tmp_path / "not"), *map(str, bundles), "--consensus", "niche"])
    assert refused.exit_code == 2 and "need niches" in refused.output and not (tmp_path / "not").exists()
