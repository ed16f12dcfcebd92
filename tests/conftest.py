"""Shared fixtures: where the offline WikiText copy lives, a tiny recipe, a token cache.

Only the tests (and CI) know where the shared data folder is: `$GENESIS_DATA`, else the
`shared/data/wikitext-2-offline` folder beside the checkout. Tests that need it are
skipped when neither exists.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from genesis.core.recipe import Recipe

# Every Ray node and driver the tests start takes the loopback address as its own: Ray
# otherwise resolves 127.0.0.1 to the machine's network address and announces itself
# there. Read by Ray when it is first imported, so it is set before any test imports it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES.parent.parent))  # the checkout: tests share helpers of `benchmarks.common`


def _data_folder() -> Path | None:
    candidates = [os.environ.get("GENESIS_DATA"), REPO.parent / "shared/data/wikitext-2-offline"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train.txt").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_folder() -> Path:
    """The offline WikiText-2 folder (train/valid/test.txt)."""
    folder = _data_folder()
    if folder is None:
        pytest.skip("no WikiText folder: set GENESIS_DATA to a folder with train/valid/test.txt")
    return folder


@pytest.fixture(scope="session", autouse=True)
def token_cache(tmp_path_factory) -> Path:
    """One tokenizer cache for the whole session, never the user's own."""
    cache = tmp_path_factory.mktemp("genesis-cache")
    os.environ["GENESIS_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tokens(data_folder, token_cache):
    """The tokenized offline WikiText (BPE-4096), built once per session."""
    from genesis.train.data import load_data

    return load_data(data_folder, vocab_size=4096, cache_dir=token_cache)


@pytest.fixture
def tiny_recipe() -> Recipe:
    """A recipe of a few small steps: real training, in well under a second a genome."""
    return Recipe(name="tiny", steps=4, batch_size=4, seq_len=32, warmup_steps=1,
                  eval_batches=2, eval_batch_size=4)


SMALL_SPACE = FIXTURES / "small_space.toml"
TINY = FIXTURES / "tiny.toml"
CURVES = Recipe(name="curves", steps=16, batch_size=4, seq_len=32, warmup_steps=1,
                eval_batches=2, eval_batch_size=4)


def _sweep(tmp_path_factory, data_folder, name: str, recipe):
    """Every architecture of the small space, 4 seeds, under `recipe`: a table fixture
    (one seed selects, three are fresh for the default confirmation)."""
    import genesis

    folder = tmp_path_factory.mktemp("tables") / name
    genesis.sweep(search_space=SMALL_SPACE, recipe=recipe, data=data_folder, seeds=4, output=folder,
                  device="cpu", threads=1)
    return folder


@pytest.fixture(scope="session")
def table(tmp_path_factory, data_folder):
    """The small space under the tiny recipe."""
    return _sweep(tmp_path_factory, data_folder, "tiny", TINY)


@pytest.fixture(scope="session")
def curve_table(tmp_path_factory, data_folder):
    """The small space under a 16-step recipe: trainings long enough to have learning curves."""
    return _sweep(tmp_path_factory, data_folder, "curves", CURVES)


@pytest.fixture(scope="session")
def run(tmp_path_factory, data_folder):
    """A small finished run (3 genomes, 2 generations) whose champions the colony tests use."""
    import genesis

    return genesis.evolve(population=3, generations=2, search_space=FIXTURES / "small_space.toml",
                          recipe=FIXTURES / "tiny.toml", data=data_folder, seed=6,
                          output=tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def bundles(run, tmp_path_factory):
    """The run's two best champions as agent bundles."""
    from genesis.colony.bundle import export_champions

    return export_champions(run.path, top=2, out=tmp_path_factory.mktemp("champions"))


def missing(reason: str) -> None:
    """Skip a test for a missing system tool, except in CI, which installs them all."""
    if os.environ.get("CI"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on loopback (`benchmarks.common.throwaway_postgres`);
    returns a function that creates a fresh database and gives its URL."""
    import shutil

    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        missing("PostgreSQL's initdb and pg_ctl are not installed")
    pytest.importorskip("psycopg")
    from benchmarks.common import throwaway_postgres

    with throwaway_postgres() as new_database:
        yield new_database
