"""The `genesis` command line: thin commands over the Python API, rendered with rich."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from genesis.cli import runs
from genesis.cli.colony import colony_app
from genesis.cli.render import (
    DATA_HELP,
    console,
    errors,
    fail,
    fractions,
    num,
    run_with_progress,
    stop_progress,
    token_count,
)
from genesis.core.recipe import DEFAULT_RECIPE
from genesis.core.space import DEFAULT_SEARCH_SPACE
from genesis.errors import GenesisError
from genesis.runs.settings import EvaluatorSettings, NoiseSettings
from genesis.runs.sweep import DEFAULT_SEEDS
from genesis.search.loop import EvolutionConfig
from genesis.search.strategies import strategy_names

app = typer.Typer(
    help="Neuroevolution of tiny transformer language models (µLMs) on WikiText.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"genesis {version('genesis')}")
        raise typer.Exit()


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log library details."),
         show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                           help="Print the version and exit.")):
    """genesis: evolve µLM genomes, read what made them good, put champions to work."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    import optuna

    optuna.logging.set_verbosity(logging.INFO if verbose else logging.WARNING)


@app.command()
def evolve(
    population: int = typer.Option(EvolutionConfig.population_size, help="Genomes per generation.", rich_help_panel="Search"),
    generations: int = typer.Option(EvolutionConfig.generations, help="Generations, the random initial one included.", rich_help_panel="Search"),
    recipe: str = typer.Option(DEFAULT_RECIPE, help="Training recipe: a built-in name (quick, long) or a TOML path.", rich_help_panel="Training"),
    search_space: Optional[str] = typer.Option(
        None, help="Search space: a built-in name (default) or a TOML path (default: default)."
    , rich_help_panel="Search"),
    data: Optional[Path] = typer.Option(None, envvar="GENESIS_DATA", help=DATA_HELP, rich_help_panel="Training"),
    seed: int = typer.Option(EvolutionConfig.seed, help="Run seed: same seed and config, same records.", rich_help_panel="Search"),
    output: Path = typer.Option(Path("runs"), help="Folder that receives the run folder.", rich_help_panel="Storage"),
    elites: int = typer.Option(EvolutionConfig.elites, help="Best genomes kept unchanged.", rich_help_panel="Search"),
    tournament_size: int = typer.Option(EvolutionConfig.tournament_size, help="Tournament size.", rich_help_panel="Search"),
    crossover_rate: float = typer.Option(EvolutionConfig.crossover_rate, help="Crossover probability.", rich_help_panel="Search"),
    mutation_rate: float = typer.Option(EvolutionConfig.mutation_rate, help="Mutation probability.", rich_help_panel="Search"),
    strategy: str = typer.Option(
        EvolutionConfig.strategy, help="evolution (generational), aging (regularized evolution), random, "
        "nsga2 (DEAP's NSGA-II survival), tpe or nsga2-optuna (Optuna samplers); registered: "
        f"{', '.join(strategy_names())}.", rich_help_panel="Search"),
    aging_batch: int = typer.Option(EvolutionConfig.aging_batch, help="Children per generation of aging evolution (0: half the population).", rich_help_panel="Search"),
    objectives: str = typer.Option(
        "val_loss", help="What the search minimizes, comma-separated: val_loss, params (non-embedding), "
        "latency_ms, size_bytes; several need nsga2, nsga2-optuna or tpe.", rich_help_panel="Search"),
    storage: Optional[str] = typer.Option(
        None, help="Optuna storage URL for the run's study (e.g. postgresql://...), or 'memory' to "
        "keep no study (fastest with a table backend). Default: study.db in the run folder.", rich_help_panel="Storage"),
    resume_path: Optional[Path] = typer.Option(
        None, "--resume", help="Continue this interrupted run folder instead of starting one.", rich_help_panel="Storage"),
    device: str = typer.Option(EvaluatorSettings.device, help="Torch device: cpu, cuda, or auto (CUDA when available).", rich_help_panel="Training"),
    backend: str = typer.Option(
        EvaluatorSettings.backend, help="Where trainings run: inprocess, processes, ray, or table:PATH to look "
        "them up in a sweep table (genesis sweep) instead of training.", rich_help_panel="Compute"),
    workers: int = typer.Option(EvaluatorSettings.workers, help="Worker processes (processes) or local Ray CPUs (ray).", rich_help_panel="Compute"),
    threads: Optional[int] = typer.Option(
        None, help="Torch threads per evaluation (default: all cores in process, else cores / workers).", rich_help_panel="Compute"),
    ray_address: Optional[str] = typer.Option(None, help="Join this Ray cluster instead of a local one.", rich_help_panel="Compute"),
    rungs: str = typer.Option(
        "1", help="Successive halving: fractions of the recipe's steps, e.g. 0.25,0.5,1; the better "
        "half of each rung trains on at the next.", rich_help_panel="Training"),
    budget_tokens: str = typer.Option(
        "0", help="Compute budget in training tokens, e.g. 2.5M (0: none); the run stops after "
        "the generation that spends it, or after --generations, whichever comes first.", rich_help_panel="Compute"),
    early_stop: float = typer.Option(
        EvaluatorSettings.early_stop, help="Give up trainings whose learning curve is worse than this quantile of earlier "
        "generations' curves at the same step (0.5: the median stopping rule; 0: never).", rich_help_panel="Training"),
    replicates: int = typer.Option(
        EvaluatorSettings.replicates, help="Trainings per genome, each with its own seed; fitness is their mean.", rich_help_panel="Noise and confirmation"),
    race: bool = typer.Option(
        EvaluatorSettings.race, "--race", help="With --replicates above 1: a genome gets its next training only while "
        "the mean of its trainings is no worse than the best genome's (racing, as SMAC intensifies).",
        rich_help_panel="Noise and confirmation"),
    noise_probes: int = typer.Option(
        NoiseSettings.probes, help="Best models retrained with a fresh seed after each generation, to measure "
        "the run's seed noise (0: none).", rich_help_panel="Noise and confirmation"),
    confirm: int = typer.Option(
        NoiseSettings.confirm, help="Best models confirmed at the end with fresh seeds on the held-out test split (0: none).", rich_help_panel="Noise and confirmation"),
    confirm_seeds: int = typer.Option(NoiseSettings.confirm_seeds, help="Fresh-seed trainings per confirmed model.", rich_help_panel="Noise and confirmation"),
    log_dir: Optional[Path] = typer.Option(
        None, help="Also write TensorBoard event files into LOG_DIR/<run id>/ (learning curves, losses, "
        "generations); W&B and MLflow import them.", rich_help_panel="Storage"),
    as_json: bool = typer.Option(False, "--json", help="Print the run's summary as JSON at the end (progress goes to stderr)."),
) -> None:
    """Evolve a population of µLM genomes; each one really trains on WikiText."""
    if resume_path is not None:
        resume(resume_path, data=data, search_space=search_space, device=None, storage=storage, force=False)
        return
    from genesis.runs.api import evolve as run_evolve

    settings = EvolutionConfig(elites=elites, tournament_size=tournament_size,
                               crossover_rate=crossover_rate, mutation_rate=mutation_rate,
                               strategy=strategy, aging_batch=aging_batch,
                               objectives=tuple(o.strip() for o in objectives.split(",") if o.strip()))
    logger = _tensorboard(log_dir, search_space or DEFAULT_SEARCH_SPACE, recipe) if log_dir else None
    try:
        run_with_progress(generations, as_json, lambda progress: run_evolve(
            population=population, generations=generations, recipe=recipe,
            search_space=search_space or DEFAULT_SEARCH_SPACE, data=data, seed=seed, output=output,
            evolution=settings, storage=storage, observers=[progress, *([logger] if logger else [])],
            device=device, backend=backend, workers=workers, threads=threads, ray_address=ray_address,
            rungs=fractions(rungs), budget_tokens=token_count(budget_tokens), early_stop=early_stop,
            replicates=replicates, race=race, noise_probes=noise_probes, confirm=confirm,
            confirm_seeds=confirm_seeds))
    finally:
        if logger is not None:
            logger.close()


def _tensorboard(log_dir: Path, search_space: str, recipe: str):
    """The TensorBoard observer of `--log-dir`, or a clear error (exit 2)."""
    from genesis.core.recipe import load_recipe
    from genesis.core.space import load_search_space
    from genesis.report.tensorboard import TensorBoardLogger

    try:
        return TensorBoardLogger(log_dir, load_search_space(search_space), load_recipe(recipe).steps)
    except GenesisError as error:
        fail(str(error))


@app.command()
def resume(
    run_path: Path = typer.Argument(..., metavar="RUN", help="The run folder, e.g. runs/<id>."),
    data: Optional[Path] = typer.Option(
        None, envvar="GENESIS_DATA", help="The WikiText folder, if it moved since the run started."),
    search_space: Optional[str] = typer.Option(
        None, help="Only as a check: resuming refuses a search space other than the run's."),
    device: Optional[str] = typer.Option(None, help="Torch device; default the run's."),
    storage: Optional[str] = typer.Option(
        None, help="The study's storage URL again, when it had a password (run folders keep "
        "URLs without passwords)."),
    force: bool = typer.Option(
        False, "--force", help="Break the run's lock (left by a process or machine that died)."),
) -> None:
    """Continue an interrupted run; finished evaluations are not redone."""
    from genesis.runs.api import resume as run_resume
    from genesis.runs.reader import Run

    try:
        generations = Run.load(run_path).config["evolution"]["generations"]
    except GenesisError as error:
        fail(str(error))
    run_with_progress(generations, False, lambda progress: run_resume(
        run_path, data=data, search_space=search_space, observers=[progress], device=device,
        storage=storage, force=force))


@app.command()
def sweep(
    output: Path = typer.Option(..., help="The sweep folder (an existing one is continued)."),
    recipe: str = typer.Option(DEFAULT_RECIPE, help="Training recipe: a built-in name (quick, long) or a TOML path."),
    search_space: str = typer.Option(DEFAULT_SEARCH_SPACE, help="Search space: a built-in name (default) or a TOML path."),
    seeds: int = typer.Option(DEFAULT_SEEDS, help="Trainings per architecture, each with its own seed."),
    sample: Optional[int] = typer.Option(
        None, help="Train only this many architectures, spread over (n_layer, activation) cells."),
    top: Optional[int] = typer.Option(
        None, help="Then give this many best architectures (by mean validation loss) more seeds."),
    top_seeds: Optional[int] = typer.Option(None, help="The seeds each of the --top architectures ends with."),
    seed: int = typer.Option(0, help="Sweep seed: fixes every training seed and the sample."),
    data: Optional[Path] = typer.Option(None, envvar="GENESIS_DATA", help=DATA_HELP),
    device: str = typer.Option(EvaluatorSettings.device, help="Torch device: cpu, cuda, or auto."),
    backend: str = typer.Option(EvaluatorSettings.backend, help="Where trainings run: inprocess or processes."),
    workers: int = typer.Option(EvaluatorSettings.workers, help="Worker processes of the processes backend."),
    threads: Optional[int] = typer.Option(None, help="Torch threads per training."),
) -> None:
    """Train every architecture of a search space with several seeds: a ground-truth table."""
    from genesis.runs.sweep import sweep as run_sweep

    progress = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=console)
    task = progress.add_task("", total=0)

    def started(todo: int, done: int) -> None:  # the bar appears once every setting is checked
        progress.start()
        progress.update(task, total=todo + done, completed=done)

    def finished(genome, index: int, outcome) -> None:
        progress.update(task, advance=1, description=f"{genome.describe()} seed {index}: "
                        f"val {num(outcome.val_loss)} test {num(outcome.test_loss)}")

    try:
        try:
            folder = run_sweep(search_space=search_space, recipe=recipe, data=data, seeds=seeds,
                               seed=seed, sample=sample, top=top, top_seeds=top_seeds, output=output,
                               device=device, backend=backend, workers=workers, threads=threads,
                               on_start=started, on_row=finished)
        finally:
            stop_progress(progress)
    except GenesisError as error:
        fail(str(error))
    except KeyboardInterrupt:
        errors.print(f"interrupted; run the same command again to continue {output}")
        raise typer.Exit(130)
    console.print(f"table: {folder}  (genesis.load_table reads it)")


# Reading runs, and the colony: commands of their own modules, in the order of `--help`.
app.command("runs")(runs.list_runs)
app.command()(runs.report)
app.command()(runs.export)
app.command()(runs.generate)
app.command("eval-task")(runs.eval_task)
app.add_typer(colony_app, name="colony")
