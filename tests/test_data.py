"""WikiText loading, tokenizer cache and the errors users see."""

from __future__ import annotations

import time

import numpy as np
import pytest

import genesis.data as data_module
from genesis.data import load_data
from genesis.errors import GenesisError


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
