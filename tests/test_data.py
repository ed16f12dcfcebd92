"""WikiText loading, tokenizer cache and the errors users see."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import FIXTURES

import genesis.train.data as data_module
from genesis.errors import GenesisError
from genesis.train.data import load_data


def test_local_folder_tokenizes_all_splits(tokens):
    assert tokens.vocab_size == 4096
    for name in ("train", "valid", "test"):
        split = tokens.split(name)
        assert split.dtype == np.uint16 and split.size > 100_000
        assert split.max() < tokens.vocab_size
    text = tokens.tokenizer.decode(tokens.train[:200].tolist())
    assert "Homarus gammarus" in text  # the first article of the offline train split


def test_second_load_reads_the_cache_instead_of_tokenizing(data_folder, tmp_path, monkeypatch):
    first = load_data(data_folder, vocab_size=512, cache_dir=tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(data_module, "train_tokenizer", refuse)
    second = load_data(data_folder, vocab_size=512, cache_dir=tmp_path)
    assert second.key == first.key and np.array_equal(second.train, first.train)


def test_tokenizer_training_is_deterministic(data_folder, tmp_path):
    a = load_data(data_folder, vocab_size=512, cache_dir=tmp_path / "a")
    b = load_data(data_folder, vocab_size=512, cache_dir=tmp_path / "b")
    assert np.array_equal(a.valid, b.valid)


def test_missing_folder_and_missing_split_fail_clearly(tmp_path):
    with pytest.raises(GenesisError, match="does not exist"):
        load_data(tmp_path / "nowhere")
    (tmp_path / "train.txt").write_text("some text\n")
    (tmp_path / "valid.txt").write_text("some text\n")
    with pytest.raises(GenesisError, match="no test.txt"):
        load_data(tmp_path)


def test_unreachable_hub_fails_within_seconds_and_names_the_option(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    started = time.monotonic()
    with pytest.raises(GenesisError, match="--data PATH"):
        load_data(None)
    assert time.monotonic() - started < 10


def _corpus(folder, train, valid="valid words here. " * 50, test="test words here. " * 50):
    folder.mkdir()
    for name, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{name}.txt").write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


@pytest.mark.parametrize("train, valid, message", [
    (b"caf\xe9 au lait " * 200, "valid words here. " * 50, "not UTF-8 text (byte 3"),
    ("one short line\n", "valid words here. " * 50, "the train split"),
    ("plenty of training words. " * 400, "short", "the valid split"),
])
def test_data_a_recipe_cannot_use_is_refused_with_exit_2_and_no_run(tmp_path, train, valid, message):
    from typer.testing import CliRunner

    from genesis.cli import app

    folder = _corpus(tmp_path / "corpus", train, valid)
    result = CliRunner().invoke(app, ["evolve", "--data", str(folder), "--output", str(tmp_path / "runs"),
                                      "--recipe", str(FIXTURES / "tiny.toml")],
                                env={"GENESIS_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 2 and message in result.output, result.output
    assert sum("error:" in line for line in result.output.splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_vocabulary_beyond_16_bit_token_ids_is_refused(tmp_path):
    from genesis.core.recipe import load_recipe
    from genesis.errors import GenesisError

    recipe = tmp_path / "big.toml"
    recipe.write_text("vocab_size = 70000\n")
    with pytest.raises(GenesisError, match="at most 65536"):
        load_recipe(recipe)
