"""`evolve` and `resume`: the Python entry points that wire data, trainer, evolution and
the run store.

    import genesis
    run = genesis.evolve(population=8, generations=4, data="path/to/wikitext", seed=0)
    champion = run.best(1)[0]          # champion.genome, champion.outcome.val_ppl

A run checkpoints after every generation and records every evaluation as it finishes,
so `genesis.resume(run.path)` continues a run killed at any moment and reaches the same
result as an uninterrupted one; finished evaluations are not redone. Reading a run back
is `genesis.runs.reader.Run`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any, Sequence

from genesis.core.recipe import DEFAULT_RECIPE, Recipe, load_recipe, parse_recipe
from genesis.core.records import SEEDING
from genesis.core.space import (
    DEFAULT_SEARCH_SPACE,
    SearchSpace,
    load_search_space,
)
from genesis.core.summary import summarize
from genesis.errors import GenesisError
from genesis.runs.backends import TABLE_PREFIX, TrainingSetup, make_backend, start_ray
from genesis.runs.evaluator import CachingEvaluator
from genesis.runs.reader import Run, space_of, tokens_of
from genesis.runs.retrain import Retrainer
from genesis.runs.settings import EvaluatorSettings, NoiseSettings, device_for, versions
from genesis.runs.store import RunStore, new_run_id
from genesis.runs.study import StudyRecorder, default_storage, redact, storage_for_resume
from genesis.runs.table import Table, TableBackend, open_table_backend
from genesis.search.loop import Evolution, EvolutionConfig, Observer
from genesis.train.data import TokenData, check_fits, default_cache_dir, load_data

log = logging.getLogger(__name__)




def evolve(
    *,
    population: int = EvolutionConfig.population_size,
    generations: int = EvolutionConfig.generations,
    search_space: str | Path | SearchSpace = DEFAULT_SEARCH_SPACE,
    recipe: str | Path | Recipe = DEFAULT_RECIPE,
    data: str | Path | TokenData | None = None,
    seed: int = 0,
    output: str | Path = "runs",
    evolution: EvolutionConfig | None = None,
    storage: str | None = None,
    observers: Sequence[Observer] = (),
    device: str = EvaluatorSettings.device,
    cache_dir: str | Path | None = None,
    backend: str = EvaluatorSettings.backend,
    workers: int = EvaluatorSettings.workers,
    threads: int | None = EvaluatorSettings.threads,
    ray_address: str | None = EvaluatorSettings.ray_address,
    rungs: Sequence[float] = EvaluatorSettings.rungs,
    budget_tokens: int = EvolutionConfig.budget_tokens,
    early_stop: float = EvaluatorSettings.early_stop,
    replicates: int = EvaluatorSettings.replicates,
    race: bool = EvaluatorSettings.race,
    noise_probes: int = NoiseSettings.probes,
    confirm: int = NoiseSettings.confirm,
    confirm_seeds: int = NoiseSettings.confirm_seeds,
) -> Run:
    """Evolve a population of µLM genomes that really train on WikiText.

    Args:
        population: genomes per generation.
        generations: generations in all, the random initial one included.
        search_space: a `SearchSpace`, a TOML path, or a built-in name (the project's `genomes/`).
        recipe: a `Recipe`, a TOML path, or a built-in name (the project's `trainers/`).
        data: a local WikiText folder, a loaded `TokenData`, or None for the hub.
        seed: the run seed; same seed and config give the same records on CPU.
        output: the folder that receives the run folder.
        evolution: further loop settings (tournament size, rates, elites); its
            population size, generations and seed are replaced by the arguments above.
        storage: an Optuna storage URL for the run's study; default a SQLite file in
            the run folder.
        observers: progress callbacks (see `genesis.search.loop.Observer`).
        device: torch device to train on ("auto": CUDA when available).
        cache_dir: tokenizer and token cache (default `~/.cache/genesis`).
        backend: where trainings run: "inprocess", "processes" or "ray".
        workers: worker processes (processes) or local Ray CPUs (ray).
        threads: torch threads per evaluation; default all cores in process, else
            cores divided among the workers.
        ray_address: a Ray cluster to join instead of starting a local instance.
        rungs: multi-fidelity successive halving inside each generation, as increasing
            fractions of the recipe's steps ending at 1: every new genome trains at the
            first, the better half goes on to the next. (1.0,) trains everything fully.
        budget_tokens: stop once this many training tokens are spent (0: no budget):
            after the generation that spends it, or after `generations`, whichever is
            first. Cached evaluations are free; rungs count every rung they trained.
        early_stop: give up full-budget trainings whose learning curve is hopeless:
            worse than this quantile of earlier generations' curves at the same step
            (0.5: Vizier's median stopping rule; 0: never). See `genesis.search.fidelity`.
        replicates: trainings per genome, each with its own seed; the fitness is their
            mean, the record keeps each one's metrics.
        race: with `replicates` > 1, race each generation against the incumbent (the
            best genome that has every replicate): a genome gets its next training only
            while the mean of its trainings is no worse than the incumbent's, so seeds
            are spent where the ranking is uncertain; every training counts as compute.
        noise_probes: after each generation, retrain this many best models with a fresh
            seed to measure the run's seed noise (0: none). See `genesis.core.noise`.
        confirm: at the end, confirm this many best models on the held-out test split
            with fresh seeds (0: none).
        confirm_seeds: fresh-seed trainings per confirmed model, probes included.

    Returns:
        The finished `Run`.

    Raises:
        GenesisError: bad search space, recipe, data, storage or output folder; no run
            folder is left behind.
        KeyboardInterrupt: the run was interrupted; it is recorded up to the last
            finished evaluation and `resume` continues it.
    """
    space = search_space if isinstance(search_space, SearchSpace) else load_search_space(search_space)
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    config = dataclasses.replace(evolution or EvolutionConfig(),
                                 population_size=population, generations=generations, seed=seed,
                                 budget_tokens=budget_tokens)
    try:
        config.validate()
    except ValueError as error:
        raise GenesisError(str(error)) from None
    from genesis.train.model import check_size, largest_genome  # torch: imported when a run starts
    from genesis.train.optim import check_available

    if (missing := check_available(recipe)) is not None:
        raise GenesisError(missing)

    check_size(largest_genome(space.domains), recipe.vocab_size, recipe.seq_len,
               f"the search space {space.source or ''}".strip())
    noise = NoiseSettings(noise_probes, confirm, confirm_seeds).checked()
    # every setting is checked before the corpus is read (or the hub asked for it)
    evaluator = EvaluatorSettings(backend, workers, threads, ray_address, device, tuple(rungs), early_stop,
                                  replicates, race).resolved()
    table = open_table_backend(backend, space, recipe, replicates, noise.fresh_seeds_per_model())
    if table is not None:  # lookups need no corpus: the table names the one it was trained on
        tokens, data_config = None, {"source": f"table:{table.folder}", "key": table.meta["data_key"],
                                     "baselines": table.meta.get("baselines")}
    else:
        tokens = data if isinstance(data, TokenData) else load_data(data, recipe.vocab_size, cache_dir)
        check_fits(tokens, recipe.seq_len, recipe.batch_size)
        data_config = {"source": tokens.source, "key": tokens.key, "vocab_size": tokens.vocab_size,
                       "tokens": {name: int(tokens.split(name).size) for name in ("train", "valid", "test")},
                       "baselines": tokens.baselines}
    if backend == "ray":
        start_ray(ray_address, workers)  # a missing Ray or a bad address: no run folder yet

    store = RunStore.create(output, new_run_id(seed), {
        "seed": seed,
        "seeding": SEEDING,
        "evolution": dataclasses.asdict(config),
        "search_space": space.describe(),
        "recipe": recipe.to_dict(),
        "data": data_config,
        "storage": redact(storage),
        "device": evaluator.device,
        "evaluator": evaluator.to_config(),
        "noise": noise.to_config(),
        "versions": versions(),
    })
    try:
        recorder = StudyRecorder(storage or default_storage(store.path), store.id, space,
                                 config.objectives, recipe.tokens)
    except GenesisError:
        store.discard()
        raise
    log.info("run %s started in %s", store.id, store.path)
    return _drive(store, space, recipe, tokens, config, recorder, observers, evaluator.to_config(), cache_dir)


def resume(
    path: str | Path,
    *,
    data: str | Path | TokenData | None = None,
    search_space: str | Path | SearchSpace | None = None,
    observers: Sequence[Observer] = (),
    device: str | None = None,
    cache_dir: str | Path | None = None,
    storage: str | None = None,
    force: bool = False,
) -> Run:
    """Continue an interrupted run from its last checkpoint and recorded evaluations.

    Args:
        path: the run folder.
        data: the WikiText folder, if it moved since the run started; its content
            must be the same.
        search_space: optional; when given it must equal the run's own.
        observers: progress callbacks.
        device: torch device; default the run's.
        cache_dir: tokenizer and token cache.
        storage: the study's storage URL again, needed when it had a password (run
            folders keep URLs without their passwords).
        force: take the run even if its lock names a live process or another host
            (for a lock left behind by a machine that died).

    Raises:
        GenesisError: not a genesis run, another format version, a running or
            finished run, a different search space or different data.
    """
    store = RunStore.open(path)
    config = store.config()
    if store.status() == "finished":
        raise GenesisError(f"{store.path} has already finished")
    space = space_of(config)
    if search_space is not None:
        given = search_space if isinstance(search_space, SearchSpace) else load_search_space(search_space)
        if given != space:
            raise GenesisError(f"the search space {given.source} differs from the one "
                               f"{store.path} was started with; resume it without --search-space")
    # a run folder may come from someone else: its settings pass the checks a new run's do
    recipe = parse_recipe(config["recipe"], f"{store.path / 'config.json'} [recipe]")
    try:
        evolution = EvolutionConfig(**config["evolution"])
        evolution.validate()
        EvaluatorSettings(**{**config["evaluator"], "rungs": tuple(config["evaluator"]["rungs"])}).resolved()
    except (TypeError, ValueError) as error:
        raise GenesisError(f"{store.path / 'config.json'}: {error}".splitlines()[0]) from None
    if config["evaluator"]["backend"].startswith("table:"):
        tokens = None
    else:
        tokens = data if isinstance(data, TokenData) else tokens_of(config, data, cache_dir)
    storage = storage_for_resume(config["storage"], storage)
    recorder = StudyRecorder(storage or default_storage(store.path), store.id, space,
                             evolution.objectives, recipe.tokens)
    evaluator = dict(config["evaluator"])
    if device is not None:
        evaluator["device"] = device_for(evaluator["backend"], device)
    return _drive(store, space, recipe, tokens, evolution, recorder, observers, evaluator,
                  cache_dir, checkpoint=store.checkpoint(), force=force)


def _drive(store, space, recipe, tokens, config, recorder, observers, settings, cache_dir,
           checkpoint: dict[str, Any] | None = None, force: bool = False) -> Run:
    store.lock(force)
    stored = store.config()
    for observer in observers:
        observer.on_run_start(store.id, store.path)
    setup = TrainingSetup(recipe, stored["data"]["key"], str(cache_dir or default_cache_dir()),
                          settings["device"], settings["threads"])
    backend = None
    try:
        name = settings["backend"]
        backend = (TableBackend(Table(name[len(TABLE_PREFIX):]), config.seed) if name.startswith(TABLE_PREFIX)
                   else make_backend(name, setup, tokens, settings["workers"], settings["ray_address"]))
        previous = store.drop_partial_record()
        for record in previous:  # a kill between the log and the study leaves a gap
            recorder.add(record)
        rung_steps = [max(1, round(f * recipe.steps)) for f in settings.get("rungs", [1.0])]
        replicates = settings.get("replicates", 1)
        evaluator = CachingEvaluator(store, recorder, backend, config.seed, observers, previous,
                                      rung_steps, recipe.tokens, settings.get("early_stop", 0.0),
                                      replicates=replicates, race=settings.get("race", False))
        noise = {"probes": 0, "confirm": 0, "confirm_seeds": 0, **stored.get("noise", {})}
        retrainer = Retrainer(store.path, backend, config.seed, replicates, noise["probes"],
                              noise["confirm"], noise["confirm_seeds"], observers)
        loop = Evolution(space, config, evaluator, observers)
        if checkpoint is not None:
            loop.restore(checkpoint["evolution"])
            _set_global_rng_states(checkpoint["global_rng"])
        while not loop.done:
            generation = loop.step()
            if generation and all(r.outcome.status != "ok" for r in generation):
                reason = generation[0].outcome.reason
                raise GenesisError(f"every genome of generation {generation[0].generation} failed to "
                                   f"train (e.g. {generation[0].outcome.status}: {reason}); the run stops. "
                                   f"Its records are in {store.path}")
            records = store.records()
            retrainer.probe(max(r.generation for r in records), records)
            store.write_checkpoint({"evolution": loop.state(), "global_rng": _global_rng_states()})
        records = store.records()
        retrainer.confirm_champions(loop.generation, records)
        logbook = list(loop.logbook)
        store.write_summary(summarize(records, retrainer.done, logbook, noise["confirm"],
                                      stored["data"].get("baselines")))
    finally:
        if backend is not None:
            backend.close()
        store.unlock()
    return Run(store, stored, records, logbook)


def _global_rng_states() -> dict[str, Any]:
    """The global python, numpy and torch RNG states, JSON-ready, for checkpoints.

    genesis draws from its own seeded generators; these are kept so that user code
    (a custom trainer, say) that uses the global ones also resumes where it was.
    """
    import numpy as np
    import torch

    version_, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version_, list(internal), gauss],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state().tolist(),
    }


def _set_global_rng_states(states: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version_, internal, gauss = states["python"]
    random.setstate((version_, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
