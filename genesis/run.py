"""`evolve`: the Python entry point that wires data, trainer, evolution and run store.

    import genesis
    run = genesis.evolve(population=8, generations=4, data="path/to/wikitext", seed=0)
    for record in run.best(3):
        print(record.genome.describe(), record.outcome.val_ppl)
"""

from __future__ import annotations

import dataclasses
import logging
import platform
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Sequence

from genesis.data import TokenData, load_data
from genesis.errors import GenesisError
from genesis.evolution import Candidate, Evolution, EvolutionConfig, Observer
from genesis.records import Outcome, Record, training_seed
from genesis.recipe import DEFAULT_RECIPE, Recipe, load_recipe
from genesis.space import DEFAULT_SEARCH_SPACE, SearchSpace, load_search_space
from genesis.store import RunStore, best_records, new_run_id

log = logging.getLogger(__name__)


@dataclass
class Run:
    """A finished (or loaded) run: its folder, configuration and every evaluation."""

    store: RunStore
    config: dict[str, Any]
    records: list[Record]
    logbook: list[dict[str, Any]]

    @property
    def id(self) -> str:
        return self.store.id

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def population(self) -> list[Record]:
        """The records of the last generation."""
        last = max((r.generation for r in self.records), default=0)
        return [r for r in self.records if r.generation == last]

    def best(self, k: int = 5) -> list[Record]:
        """The `k` best distinct genomes over the whole run, best first."""
        return best_records(self.records, k)

    def generation_best(self) -> list[float | None]:
        """Best validation loss of each generation."""
        return [entry["best"] for entry in self.logbook]


def evolve(
    *,
    population: int = 8,
    generations: int = 4,
    search_space: str | Path | SearchSpace = DEFAULT_SEARCH_SPACE,
    recipe: str | Path | Recipe = DEFAULT_RECIPE,
    data: str | Path | TokenData | None = None,
    seed: int = 0,
    output: str | Path = "runs",
    evolution: EvolutionConfig | None = None,
    observers: Sequence[Observer] = (),
    device: str = "cpu",
    cache_dir: str | Path | None = None,
) -> Run:
    """Evolve a population of µLM genomes that really train on WikiText.

    Args:
        population: genomes per generation.
        generations: generations in all, the random initial one included.
        search_space: a `SearchSpace`, a TOML path, or a name in `genomes/`.
        recipe: a `Recipe`, a TOML path, or a name in `trainers/`.
        data: a local WikiText folder, a loaded `TokenData`, or None for the hub.
        seed: the run seed; same seed and config give the same records on CPU.
        output: the folder that receives the run folder.
        evolution: further loop settings (tournament size, rates, elites); its
            population size, generations and seed are replaced by the arguments above.
        observers: progress callbacks (see `genesis.evolution.Observer`).
        device: torch device to train on.
        cache_dir: tokenizer and token cache (default `~/.cache/genesis`).

    Returns:
        The `Run`, with every record and the folder it was written to.

    Raises:
        GenesisError: bad search space, recipe, data or output folder. Nothing is
            written before all inputs have loaded.
    """
    space = search_space if isinstance(search_space, SearchSpace) else load_search_space(search_space)
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    config = dataclasses.replace(
        evolution or EvolutionConfig(),
        population_size=population, generations=generations, seed=seed,
    )
    try:
        config.validate()
    except ValueError as error:
        raise GenesisError(str(error)) from None
    tokens = data if isinstance(data, TokenData) else load_data(data, recipe.vocab_size, cache_dir)

    store = RunStore.create(output, new_run_id(seed), {
        "seed": seed,
        "evolution": dataclasses.asdict(config),
        "search_space": space.describe(),
        "recipe": recipe.to_dict(),
        "data": {"source": tokens.source, "key": tokens.key, "vocab_size": tokens.vocab_size,
                 "tokens": {name: int(tokens.split(name).size) for name in ("train", "valid", "test")}},
        "device": device,
        "versions": _versions(),
    })
    log.info("run %s started in %s", store.id, store.path)
    evaluator = _CachingEvaluator(store, recipe, tokens, seed, device, observers)
    evolution_loop = Evolution(space, config, evaluator, observers)
    evolution_loop.run()
    records = store.records()
    logbook = list(evolution_loop.logbook)
    store.write_summary({
        "generations": logbook,
        "best": [r.to_dict() for r in best_records(records, 5)],
        "evaluations": len(records),
        "trained": sum(1 for r in records if not r.cached),
        "cache_hits": sum(1 for r in records if r.cached),
    })
    return Run(store, store.config(), records, logbook)


class _CachingEvaluator:
    """Trains candidates one by one, reusing the outcome of any genome seen before.

    A genome's training seed depends only on the run seed and the genome, so a repeat
    would reproduce the same outcome: reusing it is exact, not an approximation.
    """

    def __init__(self, store: RunStore, recipe: Recipe, tokens: TokenData, seed: int,
                 device: str, observers: Sequence[Observer]):
        self.store, self.recipe, self.tokens = store, recipe, tokens
        self.seed, self.device, self.observers = seed, device, observers
        self.known: dict[str, Outcome] = {}

    def __call__(self, candidates: Sequence[Candidate]) -> list[Record]:
        from genesis.train import train  # torch loads only when training starts

        records = []
        for candidate in candidates:
            genome_id = candidate.genome.id
            cached = genome_id in self.known
            if not cached:
                self.known[genome_id] = train(candidate.genome, self.recipe, self.tokens,
                                              training_seed(self.seed, genome_id), self.device)
            record = candidate.to_record(self.known[genome_id], cached=cached)
            self.store.append(record)
            for observer in self.observers:
                observer.on_evaluation(record)
            records.append(record)
        return records


def _versions() -> dict[str, str]:
    names = ("torch", "deap", "tokenizers", "numpy")
    return {"python": platform.python_version(), "genesis": version("genesis"),
            **{name: version(name) for name in names}}
