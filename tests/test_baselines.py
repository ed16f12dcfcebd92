"""Count-based baselines of the text: what a genome's loss is read against."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from genesis.cli import app
from genesis.train.ngram import bigram_loss, unigram_loss


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=2, max_size=60), st.integers(0, 5))
def test_the_bigram_model_is_a_distribution_after_every_context(train, context):
    train = np.array(train)
    total = sum(math.exp(-bigram_loss(train, np.array([context, token]), 6)) for token in range(6))
    assert total == pytest_approx(1.0)


def pytest_approx(value):
    import pytest

    return pytest.approx(value, rel=1e-9)


def test_word_pairs_beat_word_counts_on_text_with_structure():
    pattern = np.array([0, 1, 2, 3] * 50)
    assert unigram_loss(pattern, pattern, 4) == pytest_approx(math.log(4))
    assert bigram_loss(pattern, pattern, 4) < 0.5


def test_every_run_reads_its_best_against_the_baselines(run, tokens):
    assert tokens.baselines["bigram_val"] < tokens.baselines["unigram_val"]
    summary = run.summary()
    assert summary["baselines"] == tokens.baselines
    assert summary["best_minus_bigram"] == pytest_approx(run.best(1)[0].outcome.val_loss
                                                         - tokens.baselines["bigram_val"])
    listed = CliRunner().invoke(app, ["runs", str(run.path.parent)])
    assert listed.exit_code == 0 and "vs bigram" in listed.output
    reported = CliRunner().invoke(app, ["report", str(run.path)])
    assert reported.exit_code == 0
    assert "Kneser-Ney bigram" in (run.path / "report" / "report.md").read_text()
