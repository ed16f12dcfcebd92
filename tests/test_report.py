"""Trait–fitness reports: the statistics find a planted effect, and every format renders."""

from __future__ import annotations

import itertools
import json
import random
import re
import shutil

import matplotlib.image
import pytest
from conftest import FIXTURES
from typer.testing import CliRunner

import genesis
from genesis.cli import app
from genesis.core.genome import Genome
from genesis.core.records import Outcome
from genesis.core.space import load_search_space
from genesis.report.build import build_report
from genesis.report.render import write_report
from genesis.runs.store import RunStore
from genesis.runs.study import StudyRecorder, default_storage
from genesis.search.loop import EvolutionConfig
from genesis.search.population import Candidate

runner = CliRunner()


def _synthetic_run(tmp_path):
    """A run folder whose fitness depends on d_model alone, over a full factorial design.

    Every other trait is balanced against d_model, so it carries no information about
    fitness at all: the report must find d_model and nothing else.
    """
    space = load_search_space()
    store = RunStore.create(tmp_path, "synthetic", {
        "seed": 0, "evolution": {"generations": 2, "population_size": 160},
        "search_space": space.describe(), "recipe": {"name": "synthetic", "steps": 1,
                                                      "batch_size": 1, "seq_len": 1},
        "data": {"source": "synthetic"}, "storage": None})
    recorder = StudyRecorder(default_storage(store.path), store.id, space)
    grid = itertools.product([1, 2, 3, 4], [1, 2], [64, 96, 128, 160, 192],
                             ["relu", "gelu", "silu", "swiglu"], [0.001, 0.01])
    for index, (n_layer, n_head, d_model, activation, sigma) in enumerate(grid):
        genome = Genome(n_layer, n_head, d_model, activation, sigma)
        loss = 7.0 - d_model / 100
        outcome = Outcome("ok", val_loss=loss, val_ppl=2.718281828 ** loss, params=d_model * 1000,
                          non_embedding_params=d_model * 800, init_grad_norm=float(n_layer))
        record = Candidate(index // 160, index % 160, genome).to_record(outcome)
        store.append(record)
        recorder.add(record)
    return store.path


def test_a_planted_effect_ranks_first_and_the_rest_are_not_significant(tmp_path):
    report = build_report(_synthetic_run(tmp_path), bootstrap_resamples=200)
    ranking = report["traits"]["ranking"]
    first = ranking[0]
    assert first["trait"] == "d_model" and first["significant"] and first["rho"] == pytest.approx(-1)
    assert first["rho_high"] < 0 and first["eta2_low"] > 0.9
    for row in ranking[1:]:
        assert row["significant"] is not True, row
        assert row["trait"] == "sigma" or row["p_value"] > 0.05, row
    fanova = {row["trait"]: row["fanova"] for row in ranking if row["fanova"] is not None}
    assert set(fanova) == {"n_layer", "n_head", "d_model", "activation"}  # σ does not train
    assert max(fanova, key=fanova.get) == "d_model"
    assert set(report["traits"]["ranking"][-1]) >= {"fanova", "effect", "n"}
    proxies = {row["proxy"]: row for row in report["proxies"]}
    assert proxies["non_embedding_params"]["rho"] == pytest.approx(-1)  # size ranks perfectly here
    assert proxies["init_grad_norm"]["rho"] == pytest.approx(0, abs=1e-9)  # depth carries nothing


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_folder):
    return genesis.evolve(population=4, generations=3, search_space=FIXTURES / "small_space.toml",
                          recipe=FIXTURES / "tiny.toml", data=data_folder, seed=4,
                          output=tmp_path_factory.mktemp("runs"))


def test_a_real_run_renders_every_format(tiny_run, tmp_path):
    report = build_report(tiny_run.path, bootstrap_resamples=100)
    paths = write_report(report, tmp_path / "report")
    for name in ("convergence", "diversity", "traits", "operators_sigma", "pareto"):
        png = paths[name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(png).shape
        assert height > 100 and width > 100
    page = paths["html"].read_text()
    assert "<script" not in page and not re.search(r"(src|href)=['\"]https?:", page)
    assert page.count("data:image/png;base64,") == 5

    saved = json.loads(paths["json"].read_text())
    assert saved == json.loads(json.dumps(report))
    markdown = paths["md"].read_text()
    for row in saved["convergence"]["generations"]:
        assert f"| {row['generation']} | {row['best']:.4g} | {row['best_ppl']:.4g} |" in markdown
    for champion in saved["champions"]:
        assert f"| {champion['rank']} | {champion['genome_id']} |" in markdown
    assert len(saved["convergence"]["generations"]) == 3


def test_too_few_samples_are_said_not_computed(tmp_path, data_folder):
    run = genesis.evolve(population=3, generations=1, search_space=FIXTURES / "small_space.toml",
                         recipe=FIXTURES / "tiny.toml", data=data_folder, output=tmp_path)
    report = build_report(run.path, bootstrap_resamples=100)
    for row in report["traits"]["ranking"]:
        assert row["effect"] is None and "rho" not in row
        assert "needs at least 5" in row["note"] or row["trait"] == "sigma"
    assert "fANOVA needs at least 5" in report["traits"]["fanova_note"]


def test_a_run_still_going_can_be_reported(tiny_run, tmp_path):
    import shutil

    partial = tmp_path / tiny_run.id
    shutil.copytree(tiny_run.path, partial)
    (partial / "summary.json").unlink()
    lines = (partial / "evaluations.jsonl").read_text().splitlines(keepends=True)
    (partial / "evaluations.jsonl").write_text("".join(lines[:6]))
    report = build_report(partial, bootstrap_resamples=100)
    assert report["run"]["status"] == "interrupted" and report["run"]["evaluations"] == 6


def test_a_negative_top_is_refused_and_nothing_is_written(tiny_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run.path, folder, ignore=shutil.ignore_patterns("report"))
    result = runner.invoke(app, ["report", str(folder), "--top", "-1"])
    assert result.exit_code == 2 and "--top must be 0 or more" in result.output
    assert not (folder / "report").exists()
    result = runner.invoke(app, ["export", str(folder), "--top", "0", "--out", str(tmp_path / "bundles")])
    assert result.exit_code == 2 and "--top must be at least 1" in result.output
    assert not (tmp_path / "bundles").exists()


def test_cli_report_text_json_and_comparison(tiny_run, tmp_path, data_folder):
    result = runner.invoke(app, ["report", str(tiny_run.path)])
    assert result.exit_code == 0, result.output
    assert "Trait importance" in result.output and "Seed noise" in result.output and (tiny_run.path / "report/report.html").exists()

    result = runner.invoke(app, ["report", str(tiny_run.path), "--format", "json"])
    assert json.loads(result.stdout)["run"]["id"] == tiny_run.id

    other = genesis.evolve(population=3, generations=2, search_space=FIXTURES / "small_space.toml",
                           recipe=FIXTURES / "tiny.toml", data=data_folder, seed=9,
                           output=tmp_path, evolution=EvolutionConfig(strategy="random"))
    result = runner.invoke(app, ["report", str(tiny_run.path), str(other.path), "--out",
                                 str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    comparison = json.loads((tmp_path / "cmp/comparison.json").read_text())
    assert comparison["runs"] == [tiny_run.id, other.id]
    assert comparison["strategies"] == {tiny_run.id: "evolution", other.id: "random"}
    spent = sum(r.compute_tokens for r in other.records)
    assert comparison["compute_tokens"][other.id] == spent == comparison["convergence"][other.id][-1][2]
    assert (tmp_path / "cmp/convergence.png").stat().st_size > 1000


def test_cli_report_on_a_folder_that_is_not_a_run_exits_2(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "is not a genesis run" in result.output


def test_the_pareto_front_is_over_the_objectives_a_run_searched():
    from genesis.report.build import pareto_front

    space = load_search_space()
    rng = random.Random(0)
    genomes = list(dict.fromkeys(space.sample(rng) for _ in range(60)))[:30]
    records = [Candidate(0, i, g).to_record(Outcome(
        "ok", val_loss=5.0 + rng.random(), val_ppl=0.0, non_embedding_params=rng.randrange(1000, 9000),
        latency_ms=rng.random(), size_bytes=rng.randrange(10_000))) for i, g in enumerate(genomes)]

    def dominated(record, objectives):
        mine = [record.outcome.objective(o) for o in objectives]
        return any(all(o.outcome.objective(n) <= m for n, m in zip(objectives, mine))
                   and [o.outcome.objective(n) for n in objectives] != mine for o in records)

    for objectives in (("val_loss", "params"), ("val_loss", "latency_ms", "size_bytes")):
        front = {p["genome_id"] for p in pareto_front(records, objectives)["front"]}
        assert front == {r.genome_id for r in records if not dominated(r, objectives)}
    two = pareto_front(records, ("val_loss", "params"))["front"]
    assert [p["params"] for p in two] == sorted(p["params"] for p in two)
    assert len(pareto_front(records, ("val_loss", "latency_ms", "size_bytes"))["front"]) > len(two)
