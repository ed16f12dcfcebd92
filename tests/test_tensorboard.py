"""`genesis evolve --log-dir`: TensorBoard event files of a run, read back with
TensorBoard's own reader."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES, missing
from typer.testing import CliRunner

import genesis
from genesis.cli import app


def test_a_run_logs_its_genomes_curves_and_generations_to_tensorboard(tmp_path, data_folder):
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        missing("tensorboard is not installed (pip install -e '.[tensorboard]')")
    recipe = tmp_path / "curves.toml"  # 16 steps: long enough for learning curves
    recipe.write_text((FIXTURES / "tiny.toml").read_text().replace("steps = 4", "steps = 16"))
    result = CliRunner().invoke(app, [
        "evolve", "--population", "3", "--generations", "2", "--search-space", str(FIXTURES / "small_space.toml"),
        "--recipe", str(recipe), "--data", str(data_folder), "--output", str(tmp_path / "runs"),
        "--log-dir", str(tmp_path / "logs"), "--noise-probes", "1", "--confirm", "1", "--confirm-seeds", "1",
        "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    run = genesis.Run.load(summary["path"])
    [folder] = list((tmp_path / "logs").iterdir())
    assert folder.name == run.id
    events = EventAccumulator(str(folder))
    events.Reload()
    tags = events.Tags()["scalars"]
    best = [e.value for e in events.Scalars("generation/best")]
    assert best == pytest.approx([entry["best"] for entry in run.logbook])
    assert len(events.Scalars("genome/val_loss")) == len([r for r in run.records if r.outcome.status == "ok"])
    trained = next(r for r in run.records if not r.cached and r.outcome.status == "ok")
    curve = events.Scalars(f"curve/{trained.genome_id}")
    assert [e.value for e in curve] == pytest.approx(trained.outcome.curve)
    assert curve[-1].step == run.config["recipe"]["steps"]  # points at their training step
    assert {"generation/diversity", "generation/unique", "retraining/probe_test_loss"} <= set(tags)


def test_log_dir_needs_a_search_space_it_can_read(tmp_path):
    result = CliRunner().invoke(app, ["evolve", "--search-space", str(tmp_path / "nothing.toml"),
                                      "--log-dir", str(tmp_path / "logs")])
    assert result.exit_code == 2 and not (tmp_path / "logs").exists()
