"""Sweeps: every architecture of a search space trained under one recipe with K seeds.

The result is a *table* (as NAS-Bench-101/201 are for vision): ground truth that a
search can be replayed against by lookup (`genesis.runs.table.TableBackend`) and that the
effect of each trait can be read from without search bias. A sweep folder holds:

    table.json   what produced the table: search space, recipe, data key, seeds, threads,
                 library versions; a resumed sweep must match it. With `top`, the
                 architectures that were given more seeds, too
    table.csv    one row per (architecture, seed), appended and flushed as trainings
                 finish, so a sweep killed at any moment resumes where it was

A sweep can then give its `top` best architectures (by mean validation loss over the
first `seeds` seeds) more seeds, up to `top_seeds`: where the ranking is close a replay
can confirm a champion on as many fresh seeds as it asks for, and the top's true quality
is known to a fraction of the seed noise.

Architectures are the distinct *training identities* of the space (`Genome.training_id`):
σ and other colony-only genes do not change training, so they are set aside.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from genesis.core.genome import OPTIONAL_DEFAULTS, TRAINING_NEUTRAL, Genome
from genesis.core.recipe import DEFAULT_RECIPE, parse_recipe
from genesis.core.records import Outcome, training_seed
from genesis.core.space import DEFAULT_SEARCH_SPACE, ChoiceDomain, IntDomain, SearchSpace
from genesis.errors import GenesisError
from genesis.runs.settings import EvaluatorSettings
from genesis.runs.store import drop_torn_line, read_json, write_json_atomic

TABLE_FILE = "table.csv"
META_FILE = "table.json"
TABLE_FORMAT = 1
DEFAULT_SEEDS = 3  # trainings per architecture: enough for a within-architecture sd
TRAIT_COLUMNS = ("n_layer", "n_head", "d_model", "activation", "norm", "ffn_mult", "position",
                 "dropout", "weight_precision", "qk_norm")
METRIC_COLUMNS = ("status", "val_loss", "test_loss", "train_loss", "params", "non_embedding_params",
                  "init_grad_norm", "tokens", "latency_ms", "size_bytes", "wall_s", "curve")
COLUMNS = ("training_id", *TRAIT_COLUMNS, "seed", "training_seed", *METRIC_COLUMNS)


def architectures(space: SearchSpace) -> list[Genome]:
    """Every distinct architecture of `space` (one genome per training identity), in a
    fixed order. Colony-only traits such as σ take their domain's lowest value.

    Raises:
        GenesisError: a trait that changes training has a continuous domain, which
            cannot be enumerated.
    """
    names, values = [], []
    for name, domain in space.domains.items():
        if name in TRAINING_NEUTRAL:
            names.append(name)
            values.append([getattr(domain, "low", None) or domain.values[0]])
        elif isinstance(domain, (IntDomain, ChoiceDomain)):
            names.append(name)
            values.append(list(domain.values))
        else:
            raise GenesisError(f"trait {name} has a continuous domain; a sweep enumerates "
                               "integer and choice traits only")
    seen: dict[str, Genome] = {}
    for combination in itertools.product(*values):
        genome = Genome(**dict(zip(names, combination)))  # values of a checked space; heads may not fit
        if space.is_valid(genome):
            seen.setdefault(genome.training_id, genome)
    return list(seen.values())


def stratified_sample(genomes: Sequence[Genome], count: int, seed: int = 0) -> list[Genome]:
    """`count` architectures spread evenly over the cells of (n_layer, activation): cells
    are visited in turn and each gives a random member not taken yet."""
    rng = random.Random(seed)
    cells: dict[tuple[int, str], list[Genome]] = {}
    for genome in genomes:
        cells.setdefault((genome.n_layer, genome.activation), []).append(genome)
    for members in cells.values():
        rng.shuffle(members)
    order = sorted(cells)
    taken: list[Genome] = []
    while len(taken) < min(count, len(genomes)):
        for cell in order:
            if cells[cell] and len(taken) < count:
                taken.append(cells[cell].pop())
    return taken


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep trains: architectures × seeds under a recipe, on a corpus."""

    genomes: tuple[Genome, ...]
    seeds: int
    seed: int  # the sweep seed: with an architecture and a seed index, it fixes the training seed
    meta: dict[str, Any]
    top: tuple[Genome, ...] = ()  # architectures given seeds up to top_seeds
    top_seeds: int = 0

    def jobs(self) -> list[tuple[Genome, int]]:
        """(architecture, seed index) pairs, seed by seed, so a partial table already
        covers every architecture once; then the top's further seeds."""
        return ([(genome, index) for index in range(self.seeds) for genome in self.genomes]
                + [(genome, index) for index in range(self.seeds, self.top_seeds) for genome in self.top])


def open_sweep(folder: str | Path, plan: SweepPlan) -> set[tuple[str, int]]:
    """Create a sweep folder, or check that an existing one was made by the same plan.

    Returns:
        The (training id, seed index) pairs already in its table.

    Raises:
        GenesisError: the folder holds a sweep of another plan, or cannot be written.
    """
    folder = Path(folder)
    meta_path = folder / META_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if meta_path.exists():
            if _plan_key(read_meta(folder)) != _plan_key(plan.meta):
                raise GenesisError(f"{folder} holds a sweep of another space, recipe, data or seeds; "
                                   "choose another --output")
        else:
            write_json_atomic(meta_path, plan.meta)
        drop_torn_line(folder / TABLE_FILE)
    except OSError as error:
        raise GenesisError(f"cannot write the sweep folder {folder}: {error.strerror}") from None
    return {(row["training_id"], int(row["seed"])) for row in _read_rows(folder / TABLE_FILE)}


def _plan_key(meta: dict[str, Any]) -> dict[str, Any]:
    """What makes two sweeps the same: everything but library versions and where the
    search space file happened to live (and the corpus's baselines, which older tables lack).
    The recipe is compared with today's defaults filled in, so a table begun before a recipe
    option existed still resumes."""
    key = {k: v for k, v in meta.items() if k not in ("versions", "baselines", "top")}
    key["search_space"] = {k: v for k, v in meta["search_space"].items() if k != "source"}
    key["recipe"] = parse_recipe(meta["recipe"], "the sweep's recipe").to_dict()
    return key


def append_row(folder: str | Path, genome: Genome, seed_index: int, seed: int, outcome: Outcome) -> None:
    """Append one training's row to the table and flush it to disk."""
    path = Path(folder) / TABLE_FILE
    row = {"training_id": genome.training_id, **{k: getattr(genome, k) for k in TRAIT_COLUMNS},
           "seed": seed_index, "training_seed": seed, "curve": " ".join(f"{v:.5f}" for v in outcome.curve),
           **{k: getattr(outcome, k) for k in METRIC_COLUMNS if k != "curve"}}
    new = not path.exists() or path.stat().st_size == 0
    columns = COLUMNS if new else _header(path)
    lacking = [k for k in TRAIT_COLUMNS if k not in columns and row[k] != OPTIONAL_DEFAULTS[k]]
    if lacking:
        raise GenesisError(f"{path} predates the trait '{lacking[0]}'; sweep into a new --output")
    buffer = io.StringIO()
    # a table begun before a trait existed keeps its columns: its rows hold the default
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    if new:
        writer.writeheader()
    writer.writerow({k: "" if v is None else v for k, v in row.items()})
    with path.open("a") as out:
        out.write(buffer.getvalue())
        out.flush()
        os.fsync(out.fileno())


def plan_sweep(space: SearchSpace, recipe, data_key: str, seeds: int, seed: int = 0,
               sample: int | None = None, threads: int = 1, baselines: dict[str, float] | None = None) -> SweepPlan:
    """The plan of a sweep of `space` (or a stratified `sample` of it) under `recipe`;
    `sweep` has checked the counts."""
    from genesis.runs.settings import versions

    genomes = architectures(space)
    if sample is not None:
        genomes = stratified_sample(genomes, sample, seed)
    described = {**space.describe(), "source": Path(space.source).stem if space.source else ""}  # a name, never a path
    meta = {"format": TABLE_FORMAT, "search_space": described, "recipe": recipe.to_dict(),
            "data_key": data_key, "seeds": seeds, "seed": seed, "sample": sample,
            "architectures": len(genomes), "threads": threads, "versions": versions(),
            "baselines": baselines}
    return SweepPlan(tuple(genomes), seeds, seed, meta)


def plan_top(plan: SweepPlan, folder: str | Path, top: int, top_seeds: int) -> SweepPlan:
    """`plan` extended by seeds up to `top_seeds` for its `top` best architectures, by mean
    validation loss over the plan's seeds in the table at `folder` (failed trainings left
    out), and recorded in the folder's metadata; a folder whose top was chosen before must
    be asked for the same.

    Raises:
        GenesisError: top or top_seeds out of range, or a top other than the recorded one.
    """
    recorded = _check_top(folder, plan.seeds, top, top_seeds)
    losses: dict[str, list[float]] = {}
    for row in _read_rows(Path(folder) / TABLE_FILE):
        if row["status"] == "ok" and int(row["seed"]) < plan.seeds:
            losses.setdefault(row["training_id"], []).append(float(row["val_loss"]))
    by_id = {genome.training_id: genome for genome in plan.genomes}
    if recorded is None:
        ranked = sorted((tid for tid in losses if tid in by_id),
                        key=lambda tid: (sum(losses[tid]) / len(losses[tid]), tid))
        chosen = {"architectures": top, "seeds": top_seeds, "training_ids": ranked[:top]}
        write_json_atomic(Path(folder) / META_FILE, {**read_meta(folder), "top": chosen})
    else:
        chosen = recorded  # the top chosen when the base was complete, not today's order
    genomes = tuple(by_id[tid] for tid in chosen["training_ids"] if tid in by_id)
    return replace(plan, meta={**plan.meta, "top": chosen}, top=genomes, top_seeds=top_seeds)


def _check_top(folder: str | Path, seeds: int, top: int, top_seeds: int) -> dict[str, Any] | None:
    """The top the sweep at `folder` recorded (None: not chosen yet), after checking that
    `top` and `top_seeds` are in range and the same as the recorded ones."""
    _check_top_range(seeds, top, top_seeds)
    recorded = read_meta(folder).get("top")
    if recorded is not None and not (isinstance(recorded, dict) and isinstance(recorded.get("training_ids"), list)
                                     and all(isinstance(tid, str) for tid in recorded["training_ids"])):
        raise GenesisError(f"{folder}/{META_FILE}: its top is corrupt")
    if recorded is not None and (recorded.get("architectures"), recorded.get("seeds")) != (top, top_seeds):
        raise GenesisError(f"{folder} gave its top {recorded.get('architectures')} architectures "
                           f"{recorded.get('seeds')} seeds; ask for the same --top and --top-seeds")
    return recorded


def _check_counts(seeds: int, sample: int | None) -> None:
    if seeds < 1:
        raise GenesisError("a sweep needs at least one seed")
    if sample is not None and sample < 1:
        raise GenesisError("--sample must be at least 1")


def _check_top_range(seeds: int, top: int, top_seeds: int) -> None:
    if top < 1:
        raise GenesisError("--top must be at least 1")
    if top_seeds <= seeds:
        raise GenesisError(f"--top-seeds must be more than --seeds ({seeds})")


def run_sweep(plan: SweepPlan, folder: str | Path, backend, done: set[tuple[str, int]],
              on_row: Callable[[Genome, int, Outcome], None] | None = None) -> int:
    """Train every (architecture, seed) of `plan` not in `done` on `backend`, appending
    each row as it finishes. Returns the number of trainings run."""
    from genesis.runs.backends import Job

    jobs = [Job(genome, training_seed(plan.seed, genome.training_id, index), measure_test=True,
                replicate=index)
            for genome, index in plan.jobs() if (genome.training_id, index) not in done]
    for job, outcome in backend.run(jobs):
        append_row(folder, job.genome, job.replicate, job.seed, outcome)
        if on_row is not None:
            on_row(job.genome, job.replicate, outcome)
    return len(jobs)


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The metadata of a sweep folder.

    Raises:
        GenesisError: not a sweep folder, or a corrupt one.
    """
    path = Path(folder) / META_FILE
    meta = read_json(path, f"{folder} is not a sweep table (no {META_FILE})")
    if not isinstance(meta, dict) or meta.get("format") != TABLE_FORMAT:
        raise GenesisError(f"{path} is not a genesis table of format {TABLE_FORMAT}")
    return meta


def load_table(folder: str | Path):
    """A sweep's table as a pandas DataFrame: one row per (architecture, seed), traits
    and metrics as columns, `curve` as a list of floats."""
    import pandas as pd

    read_meta(folder)
    # a trait column added after the table was begun holds the trait's default
    defaults = {k: str(v) for k, v in OPTIONAL_DEFAULTS.items() if k in TRAIT_COLUMNS}
    rows = [defaults | row for row in _read_rows(Path(folder) / TABLE_FILE)]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in ("n_layer", "n_head", "d_model", "ffn_mult", "seed", "training_seed", "tokens"):
        frame[column] = pd.to_numeric(frame[column]).astype("int64")
    for column in ("dropout", "val_loss", "test_loss", "train_loss", "params", "non_embedding_params",
                   "init_grad_norm", "latency_ms", "size_bytes", "wall_s"):
        frame[column] = pd.to_numeric(frame[column].replace("", math.nan))
    frame["curve"] = [[float(v) for v in text.split()] for text in frame["curve"]]
    return frame


def _header(path: Path) -> list[str]:
    """The column names of an existing table."""
    with path.open(newline="") as table_file:
        return next(csv.reader(table_file), [])


def _read_rows(path: Path) -> list[dict[str, str]]:
    """The table's rows; a last line cut short by a crash is left out (it will be redone)."""
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.DictReader(io.StringIO(text)))
    for number, row in enumerate(rows, start=2):
        if None in row or any(v is None for v in row.values()):
            raise GenesisError(f"{path}: line {number} is corrupt")
    return rows




def sweep(
    *,
    search_space=DEFAULT_SEARCH_SPACE,
    recipe=DEFAULT_RECIPE,
    data=None,
    seeds: int = DEFAULT_SEEDS,
    seed: int = 0,
    sample: int | None = None,
    top: int | None = None,
    top_seeds: int | None = None,
    output: str | Path = "tables/quick",
    device: str = EvaluatorSettings.device,
    cache_dir: str | Path | None = None,
    backend: str = EvaluatorSettings.backend,
    workers: int = EvaluatorSettings.workers,
    threads: int | None = EvaluatorSettings.threads,
    on_start: Callable[[int, int], None] | None = None,
    on_row: Callable[[Genome, int, Outcome], None] | None = None,
) -> Path:
    """Train every architecture of a search space (or a stratified sample) with `seeds`
    seeds each, and write the table; an interrupted sweep continues where it stopped.

    Args:
        search_space: a `SearchSpace`, a TOML path or a built-in name (the project's `genomes/`).
        recipe: a `Recipe`, a TOML path or a built-in name (the project's `trainers/`).
        data: a local WikiText folder, a loaded `TokenData`, or None for the hub.
        seeds: trainings per architecture, each with its own seed.
        seed: the sweep seed (fixes every training seed, and the sample).
        sample: train only this many architectures, spread evenly over the
            (n_layer, activation) cells; None: all of them.
        top, top_seeds: once every architecture has its `seeds`, give the `top` best
            (by mean validation loss) seeds up to `top_seeds` (both or neither).
        output: the sweep folder (created; an existing one must hold the same sweep).
        device, cache_dir, backend, workers, threads: as for `genesis.evolve`.
        on_start: called once with (trainings to run, trainings already in the table).
        on_row: called with (architecture, seed index, outcome) as each training ends.

    Returns:
        The sweep folder; `load_table` reads it.
    """
    from genesis.core.recipe import Recipe, load_recipe
    from genesis.core.space import load_search_space
    from genesis.runs.backends import TrainingSetup, make_backend
    from genesis.train.data import TokenData, check_fits, default_cache_dir, load_data
    from genesis.train.model import check_size, largest_genome

    _check_counts(seeds, sample)  # every setting before the corpus is read (or the hub asked for it)
    if (top is None) != (top_seeds is None):
        raise GenesisError("--top and --top-seeds go together")
    if top is not None:
        _check_top_range(seeds, top, top_seeds)
    space = search_space if isinstance(search_space, SearchSpace) else load_search_space(search_space)
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    check_size(largest_genome(space.domains), recipe.vocab_size, recipe.seq_len, "the search space")
    evaluator = EvaluatorSettings(backend, workers, threads, None, device).resolved()
    tokens = data if isinstance(data, TokenData) else load_data(data, recipe.vocab_size, cache_dir)
    check_fits(tokens, recipe.seq_len, recipe.batch_size)
    plan = plan_sweep(space, recipe, tokens.key, seeds, seed, sample, evaluator.threads, tokens.baselines)
    done = open_sweep(output, plan)
    if top is not None:
        _check_top(output, seeds, top, top_seeds)  # before the base, which may take hours
    if on_start is not None:
        on_start(len(plan.jobs()) - len(done), len(done))
    setup = TrainingSetup(recipe, tokens.key, str(cache_dir or default_cache_dir()),
                          evaluator.device, evaluator.threads)
    runner = make_backend(backend, setup, tokens, workers)
    try:
        run_sweep(plan, output, runner, done, on_row)
        if top is not None:
            done |= {(genome.training_id, index) for genome, index in plan.jobs()}  # the base is complete
            plan = plan_top(plan, output, top, top_seeds)
            if on_start is not None:
                on_start(len(plan.jobs()) - len(done), len(done))
            run_sweep(plan, output, runner, done, on_row)
    finally:
        runner.close()
    return Path(output)
