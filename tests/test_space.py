"""Loading search spaces and recipes: good files load, bad ones fail with one clear line."""

from __future__ import annotations

import random

import pytest
from conftest import FIXTURES

from genesis.core.recipe import load_recipe
from genesis.core.space import load_search_space
from genesis.errors import GenesisError


def test_default_space_loads_and_samples_valid_genomes():
    space = load_search_space()
    rng = random.Random(0)
    for _ in range(100):
        assert space.is_valid(space.sample(rng))
    assert set(space.domains["activation"].values) >= {"relu", "gelu", "silu", "swiglu"}


@pytest.mark.parametrize("name, message", [
    ("malformed.toml", "malformed TOML"),
    ("unknown_trait.toml", "unknown trait 'n_wings'"),
    ("empty_domain.toml", "empty domain"),
    ("impossible_domain.toml", "impossible domain"),
    ("missing.toml", "no such file"),
])
def test_bad_search_spaces_fail_clearly(name, message):
    with pytest.raises(GenesisError, match=message):
        load_search_space(FIXTURES / name)


def test_recipes_load_by_name_and_path():
    assert load_recipe().name == "quick"
    tiny = load_recipe(FIXTURES / "tiny.toml")
    assert tiny.steps == 4 and tiny.name == "tiny"


def test_recipe_with_unknown_key_is_rejected(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("stepz = 10\n")
    with pytest.raises(GenesisError, match="unknown key 'stepz'"):
        load_recipe(path)


@pytest.mark.parametrize("line, message", [('data_order = "sorted"', "data_order must be one of seeded, common"),
                                           ("init_scale = 0.0", r"init_scale must be in \(0, 10\]")])
def test_recipe_with_an_unknown_data_order_or_init_scale_is_rejected(tmp_path, line, message):
    path = tmp_path / "bad.toml"
    path.write_text(line + "\n")
    with pytest.raises(GenesisError, match=message):
        load_recipe(path)


def test_recipe_with_a_wrong_type_is_rejected(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('steps = "many"\n')
    with pytest.raises(GenesisError, match="steps must be int"):
        load_recipe(path)


def test_built_in_spaces_and_recipes_are_the_top_level_data_folders():
    from pathlib import Path

    import genesis
    from genesis.core.config import resolve_data_file
    from genesis.core.recipe import load_recipe

    project = Path(genesis.__file__).resolve().parent.parent  # a checkout: the top-level data folders
    assert resolve_data_file("default", "genomes") == project / "genomes" / "default.toml"
    assert load_recipe("long").steps == 8 * load_recipe("quick").steps
    assert load_search_space("default").source == str(project / "genomes" / "default.toml")


def test_the_default_before_the_recipe_study_stays_selectable_and_replays_the_published_tables():
    import json

    from conftest import REPO

    quick, old = load_recipe("quick"), load_recipe("quick-adamw")
    assert quick.optimizer == "muon" and old.optimizer == "adamw"
    assert quick.tokens <= 1.25 * old.tokens and load_recipe("long").steps == 8 * quick.steps
    for table, name in (("table-quick", "quick-adamw"), ("table-long", "long-adamw")):
        published = json.loads((REPO / "benchmarks" / "results" / table / "table.json").read_text())["recipe"]
        assert {**load_recipe(name).to_dict()} == {**load_recipe(name).to_dict(), **published}
