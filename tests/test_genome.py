"""Properties of genomes and their operators (pure Python, no torch)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import genesis
from genesis.core.genome import Genome, trait_names
from genesis.core.operators import crossover_uniform, mutate
from genesis.core.space import load_search_space
from genesis.errors import GenesisError

SPACE = load_search_space("default")
RICH = load_search_space(Path(__file__).parent / "fixtures" / "rich_space.toml")
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def genomes(draw):
    """Random valid genomes of the default space, drawn through the space itself."""
    return SPACE.sample(random.Random(draw(seeds)))


@given(genomes(), seeds, st.floats(min_value=0.0, max_value=1.0))
def test_mutation_yields_a_valid_genome(genome, seed, trait_prob):
    child = mutate(genome, SPACE, random.Random(seed), trait_prob)
    assert SPACE.is_valid(child)


@given(genomes(), genomes(), seeds)
def test_crossover_yields_valid_children_whose_genes_come_from_the_parents(first, second, seed):
    children = crossover_uniform(first, second, SPACE, random.Random(seed))
    for child in children:
        assert SPACE.is_valid(child)
        for name in trait_names():
            value = getattr(child, name)
            if name == "n_head" and value not in (first.n_head, second.n_head):
                # repair moved it: only allowed when neither parent's value fits
                assert not any(SPACE.head_fits(child.d_model, h) for h in (first.n_head, second.n_head))
            else:
                assert value in (getattr(first, name), getattr(second, name))


@given(genomes(), genomes(), seeds)
def test_operators_are_deterministic_for_a_seed(first, second, seed):
    assert mutate(first, SPACE, random.Random(seed)) == mutate(first, SPACE, random.Random(seed))
    assert crossover_uniform(first, second, SPACE, random.Random(seed)) == crossover_uniform(
        first, second, SPACE, random.Random(seed)
    )


@given(seeds, seeds, st.floats(min_value=0.0, max_value=1.0))
def test_optional_traits_survive_mutation_and_crossover(first_seed, second_seed, trait_prob):
    rng = random.Random(first_seed)
    first, second = RICH.sample(rng), RICH.sample(random.Random(second_seed))
    assert RICH.is_valid(mutate(first, RICH, rng, trait_prob))
    for child in crossover_uniform(first, second, RICH, rng):
        assert RICH.is_valid(child)
        assert child.norm in (first.norm, second.norm) and child.ffn_mult in (first.ffn_mult, second.ffn_mult)


def test_optional_traits_at_their_default_leave_ids_unchanged():
    # ids recorded before the optional traits existed (run 20261123-134402-s0)
    assert Genome(1, 2, 64, "silu", 0.006895).id == "042fc274a429"
    assert Genome(1, 2, 64, "silu", 0.006895, norm="rmsnorm").id != "042fc274a429"
    assert Genome.from_dict({"n_layer": 1, "n_head": 2, "d_model": 64, "activation": "silu",
                             "sigma": 0.006895}).ffn_mult == 4


def test_a_space_that_does_not_search_a_trait_keeps_it_at_its_default():
    assert all(g.norm == "layernorm" and g.ffn_mult == 4
               for g in (SPACE.sample(random.Random(i)) for i in range(50)))
    with pytest.raises(GenesisError, match="norm is not searched"):
        SPACE.validate(Genome(2, 2, 128, "gelu", 0.01, norm="rmsnorm"))
    assert {RICH.sample(random.Random(i)).norm for i in range(50)} == {"layernorm", "rmsnorm"}


@given(genomes(), seeds)
def test_mutating_every_trait_changes_the_genome(genome, seed):
    assert mutate(genome, SPACE, random.Random(seed), trait_prob=1.0) != genome


@given(genomes())
def test_json_round_trip(genome):
    assert Genome.from_json(genome.to_json()) == genome
    assert Genome.from_dict(json.loads(json.dumps(genome.to_dict()))).id == genome.id


@given(genomes(), seeds)
def test_sigma_mutation_stays_in_its_log_range(genome, seed):
    domain = SPACE.domains["sigma"]
    value = domain.mutate(genome.sigma, random.Random(seed))
    assert domain.low <= value <= domain.high


@settings(max_examples=10, deadline=None)
@given(genomes())
def test_ids_are_stable_across_processes(genome):
    code = (
        "import sys, json; from genesis.core.genome import Genome; "
        "print(Genome.from_json(sys.stdin.read()).id)"
    )
    out = subprocess.run([sys.executable, "-c", code], input=genome.to_json(),
                         capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == genome.id


def test_ids_differ_for_different_genomes():
    a = Genome(2, 2, 128, "gelu", 0.01)
    assert a.id != Genome(2, 2, 128, "relu", 0.01).id
    assert a.id == Genome(2, 2, 128, "gelu", 0.01).id


def test_repair_moves_n_head_to_the_nearest_fitting_value():
    broken = Genome(2, 8, 64, "gelu", 0.01)  # heads of 8 < min_head_dim 16
    repaired = SPACE.repair(broken)
    assert repaired.n_head == 4 and SPACE.is_valid(repaired)


@pytest.mark.parametrize("data, message", [
    ({"n_layer": 1, "n_head": 1, "d_model": 64, "activation": "relu"}, "lacks trait 'sigma'"),
    ({"n_layer": 1, "n_head": 1, "d_model": 64, "activation": "relu", "sigma": 0.1, "wings": 2},
     "unknown trait 'wings'"),
    ({"n_layer": "1", "n_head": 1, "d_model": 64, "activation": "relu", "sigma": 0.1},
     "n_layer"),
])
def test_bad_genome_dicts_are_rejected(data, message):
    with pytest.raises(GenesisError, match=message):
        Genome.from_dict(data)


def test_the_pure_layers_do_not_import_torch():
    """Every module of core, search and report, the run reader and the package front
    import without torch (tokenizers and numpy are fine; torch loads only to train)."""
    package = Path(genesis.__file__).parent
    modules = [".".join(p.relative_to(package.parent).with_suffix("").parts)
               for layer in ("core", "search", "report") for p in sorted((package / layer).rglob("*.py"))]
    modules += ["genesis.runs.reader", "genesis.runs.store", "genesis.runs.sweep", "genesis.runs.table",
                "genesis.runs.retrain", "genesis.cli"]
    code = f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert len(modules) > 25 and out.stdout.strip() == "False"
