"""The `genesis` command line: thin commands over the Python API, rendered with rich."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from genesis.core.records import Record
from genesis.errors import GenesisError
from genesis.search.loop import EvolutionConfig, Observer
from genesis.search.population import Candidate
from genesis.search.strategies import strategy_names

app = typer.Typer(
    help="Neuroevolution of tiny transformer language models (µLMs) on WikiText.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Piped output (logs, CI) gets room for a genome per line instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

DATA_HELP = (
    "Local WikiText folder with train.txt, valid.txt and test.txt. "
    "Without it, WikiText-2 is downloaded from the Hugging Face hub."
)


def fail(message: str) -> None:
    """Print one error line and exit with code 2."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


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
    population: int = typer.Option(8, help="Genomes per generation.", rich_help_panel="Search"),
    generations: int = typer.Option(4, help="Generations, the random initial one included.", rich_help_panel="Search"),
    recipe: str = typer.Option("quick", help="Training recipe: a built-in name (quick, long) or a TOML path.", rich_help_panel="Training"),
    search_space: Optional[str] = typer.Option(
        None, help="Search space: a built-in name (default) or a TOML path (default: default)."
    , rich_help_panel="Search"),
    data: Optional[Path] = typer.Option(None, envvar="GENESIS_DATA", help=DATA_HELP, rich_help_panel="Training"),
    seed: int = typer.Option(0, help="Run seed: same seed and config, same records.", rich_help_panel="Search"),
    output: Path = typer.Option(Path("runs"), help="Folder that receives the run folder.", rich_help_panel="Storage"),
    elites: int = typer.Option(EvolutionConfig.elites, help="Best genomes kept unchanged.", rich_help_panel="Search"),
    tournament_size: int = typer.Option(EvolutionConfig.tournament_size, help="Tournament size.", rich_help_panel="Search"),
    crossover_rate: float = typer.Option(EvolutionConfig.crossover_rate, help="Crossover probability.", rich_help_panel="Search"),
    mutation_rate: float = typer.Option(EvolutionConfig.mutation_rate, help="Mutation probability.", rich_help_panel="Search"),
    strategy: str = typer.Option(
        EvolutionConfig.strategy, help="evolution (generational), aging (regularized evolution), random, "
        "nsga2 (DEAP's NSGA-II survival), tpe or nsga2-optuna (Optuna samplers); registered: "
        f"{', '.join(strategy_names())}.", rich_help_panel="Search"),
    aging_batch: int = typer.Option(0, help="Children per generation of aging evolution (0: half the population).", rich_help_panel="Search"),
    objectives: str = typer.Option(
        "val_loss", help="What the search minimizes, comma-separated: val_loss, params (non-embedding), "
        "latency_ms, size_bytes; several need nsga2, nsga2-optuna or tpe.", rich_help_panel="Search"),
    storage: Optional[str] = typer.Option(
        None, help="Optuna storage URL for the run's study (e.g. postgresql://...), or 'memory' to "
        "keep no study (fastest with a table backend). Default: study.db in the run folder.", rich_help_panel="Storage"),
    resume_path: Optional[Path] = typer.Option(
        None, "--resume", help="Continue this interrupted run folder instead of starting one.", rich_help_panel="Storage"),
    device: str = typer.Option("auto", help="Torch device: cpu, cuda, or auto (CUDA when available).", rich_help_panel="Training"),
    backend: str = typer.Option(
        "inprocess", help="Where trainings run: inprocess, processes, ray, or table:PATH to look "
        "them up in a sweep table (genesis sweep) instead of training.", rich_help_panel="Compute"),
    workers: int = typer.Option(2, help="Worker processes (processes) or local Ray CPUs (ray).", rich_help_panel="Compute"),
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
        0.0, help="Give up trainings whose learning curve is worse than this quantile of earlier "
        "generations' curves at the same step (0.5: the median stopping rule; 0: never).", rich_help_panel="Training"),
    replicates: int = typer.Option(
        1, help="Trainings per genome, each with its own seed; fitness is their mean.", rich_help_panel="Noise and confirmation"),
    noise_probes: int = typer.Option(
        1, help="Best models retrained with a fresh seed after each generation, to measure "
        "the run's seed noise (0: none).", rich_help_panel="Noise and confirmation"),
    confirm: int = typer.Option(
        3, help="Best models confirmed at the end with fresh seeds on the held-out test split (0: none).", rich_help_panel="Noise and confirmation"),
    confirm_seeds: int = typer.Option(3, help="Fresh-seed trainings per confirmed model.", rich_help_panel="Noise and confirmation"),
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
    _run_with_progress(generations, as_json, lambda progress: run_evolve(
        population=population, generations=generations, recipe=recipe,
        search_space=search_space or "default", data=data, seed=seed, output=output,
        evolution=settings, storage=storage, observers=[progress], device=device, backend=backend,
        workers=workers, threads=threads, ray_address=ray_address, rungs=_fractions(rungs),
        budget_tokens=_token_count(budget_tokens), early_stop=early_stop, replicates=replicates,
        noise_probes=noise_probes, confirm=confirm, confirm_seeds=confirm_seeds))


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
    _run_with_progress(generations, False, lambda progress: run_resume(
        run_path, data=data, search_space=search_space, observers=[progress], device=device,
        storage=storage, force=force))


def _run_with_progress(generations: int, as_json: bool, start) -> None:
    """Run `start(progress)` under a progress display and render the result (as JSON on
    stdout, with the progress on stderr, for scripts)."""
    with _EvolveProgress(generations, errors if as_json else console) as progress:
        try:
            run = start(progress)
        except GenesisError as error:
            progress.stop()
            fail(str(error))
        except KeyboardInterrupt:
            progress.stop()
            where = progress.run_path or "the run folder"
            errors.print(f"interrupted: finished evaluations are recorded. "
                         f"Continue with: genesis resume {where}", highlight=False)
            raise typer.Exit(130)
        except OSError as error:  # a full disk or a vanished folder: the run so far is safe
            progress.stop()
            where = progress.run_path or "the run folder"
            errors.print(f"[bold red]error:[/] cannot write the run: {error.strerror or error}. "
                         f"Finished evaluations are recorded; when fixed, continue with: "
                         f"genesis resume {where}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
    summary = run.summary()
    if as_json:
        typer.echo(json.dumps({"run": run.id, "path": str(run.path), **summary}, indent=2, default=str))
        return
    console.print(best_table(run.best(5), title=f"Best genomes of run {run.id} at selection"))
    if summary["confirmed"]:
        console.print(confirmed_table(summary["confirmed"], title="Confirmed champions"))
    bests = run.generation_best()
    compute = summary["compute"]
    console.print(
        f"best validation perplexity at selection: generation 0 [bold]{_ppl(bests[0])}[/], "
        f"last generation [bold]{_ppl(bests[-1])}[/]; "
        f"{summary['trained']} trainings, {summary['cache_hits']} saved by the fitness cache, "
        f"{summary['given_up']} given up early; {compute['search_tokens'] / 1e6:.2f}M training "
        f"tokens for the search, {(compute['noise_probe_tokens'] + compute['confirmation_tokens']) / 1e6:.2f}M "
        f"for {compute['retrainings']} fresh-seed retrainings"
    )
    console.print(noise_line(summary["noise"]))
    console.print(f"run folder: {run.path}")


@app.command()
def sweep(
    output: Path = typer.Option(..., help="The sweep folder (an existing one is continued)."),
    recipe: str = typer.Option("quick", help="Training recipe: a built-in name (quick, long) or a TOML path."),
    search_space: str = typer.Option("default", help="Search space: a built-in name (default) or a TOML path."),
    seeds: int = typer.Option(3, help="Trainings per architecture, each with its own seed."),
    sample: Optional[int] = typer.Option(
        None, help="Train only this many architectures, spread over (n_layer, activation) cells."),
    seed: int = typer.Option(0, help="Sweep seed: fixes every training seed and the sample."),
    data: Optional[Path] = typer.Option(None, envvar="GENESIS_DATA", help=DATA_HELP),
    device: str = typer.Option("auto", help="Torch device: cpu, cuda, or auto."),
    backend: str = typer.Option("inprocess", help="Where trainings run: inprocess or processes."),
    workers: int = typer.Option(2, help="Worker processes of the processes backend."),
    threads: Optional[int] = typer.Option(None, help="Torch threads per training."),
) -> None:
    """Train every architecture of a search space with several seeds: a ground-truth table."""
    from genesis.runs.sweep import sweep as run_sweep

    progress = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=console)
    task = progress.add_task("", total=0)

    def started(todo: int, done: int) -> None:
        progress.update(task, total=todo + done, completed=done)

    def finished(genome, index: int, outcome) -> None:
        progress.update(task, advance=1, description=f"{genome.describe()} seed {index}: "
                        f"val {_num(outcome.val_loss)} test {_num(outcome.test_loss)}")

    try:
        with progress:
            folder = run_sweep(search_space=search_space, recipe=recipe, data=data, seeds=seeds,
                               seed=seed, sample=sample, output=output, device=device,
                               backend=backend, workers=workers, threads=threads,
                               on_start=started, on_row=finished)
    except GenesisError as error:
        fail(str(error))
    except KeyboardInterrupt:
        errors.print(f"interrupted; run the same command again to continue {output}")
        raise typer.Exit(130)
    console.print(f"table: {folder}  (genesis.load_table reads it)")


@app.command("runs")
def list_runs(
    folder: Path = typer.Argument(Path("runs"), help="The folder that holds run folders."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (for scripts) instead of tables."),
) -> None:
    """List the runs in a folder: progress, confirmed and selection perplexity, status."""
    from genesis.runs.reader import Run
    from genesis.runs.store import list_runs as find_runs

    try:
        stores = find_runs(folder)
    except GenesisError as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps([_run_entry(store) for store in stores], indent=2))
        return
    table = Table(title=f"Runs in {folder}")
    for column in ("run", "started", "gens", "evals", "test ppl [95% CI]", "val ppl", "status"):
        table.add_column(column, no_wrap=True)
    for store in stores:
        try:
            run = Run.load(store.path)
        except GenesisError as error:
            table.add_row(store.id, "-", "-", "-", "-", "-", f"[red]unreadable[/]: {error}")
            continue
        best = run.best(1)
        confirmed = run.summary()["confirmed"]
        done = len(run.logbook)
        status = run.status
        colour = {"finished": "green", "running": "yellow", "interrupted": "red"}[status]
        table.add_row(run.id, run.config.get("started", "-")[:16].replace("T", " "),
                      f"{done}/{run.config['evolution']['generations']}",
                      str(len(run.records)),
                      _confirmed_ppl(confirmed[0]) if confirmed else "-",
                      f"{best[0].outcome.val_ppl:.1f}" if best and best[0].outcome.val_ppl else "-",
                      f"[{colour}]{status}[/]")
    console.print(table)


def _run_entry(store) -> dict:
    """One run as `genesis runs --json` lists it."""
    from genesis.runs.reader import Run

    try:
        run = Run.load(store.path)
    except GenesisError as error:
        return {"run": store.id, "path": str(store.path), "error": str(error)}
    best = run.best(1)
    confirmed = run.summary()["confirmed"]
    return {"run": run.id, "path": str(run.path), "started": run.config.get("started"),
            "generations_done": len(run.logbook), "generations": run.config["evolution"]["generations"],
            "evaluations": len(run.records), "status": run.status,
            "best_val_ppl": best[0].outcome.val_ppl if best else None,
            "confirmed": confirmed[0] if confirmed else None}


@app.command()
def report(
    runs: list[Path] = typer.Argument(..., metavar="RUN...", help="One or more run folders."),
    output_format: str = typer.Option("text", "--format", help="text (rich tables) or json (stdout)."),
    top: int = typer.Option(5, help="Champions to list."),
    out: Optional[Path] = typer.Option(
        None, help="Folder for the comparison of several runs (default: <runs folder>/comparison)."),
) -> None:
    """Trait–fitness report of a run (finished or running): tables, plots, HTML, JSON.

    Writes RUN/report/ with report.md, report.html, report.json and PNG plots. With several
    runs, also a side-by-side comparison.
    """
    from genesis.report.build import build_report
    from genesis.report.render import compare, write_comparison, write_report

    if output_format not in ("text", "json"):
        fail(f"--format must be text or json, not {output_format!r}")
    reports = []
    for path in runs:
        try:
            built = build_report(path, top=top)
        except GenesisError as error:
            fail(str(error))
        written = write_report(built, Path(path) / "report")
        reports.append(built)
        if output_format == "text":
            _print_report(built)
            console.print(f"written: {written['html']} (and report.md, report.json, "
                          f"{len(written) - 3} plots)")
    comparison = None
    if len(reports) > 1:
        comparison = compare(reports)
        written = write_comparison(comparison, out or Path(runs[0]).parent / "comparison")
        if output_format == "text":
            console.print(_comparison_table(comparison))
            console.print(f"comparison written: {written['md']}")
    if output_format == "json":
        payload = reports[0] if comparison is None else {"runs": reports, "comparison": comparison}
        typer.echo(json.dumps(payload, indent=2, sort_keys=True))


def _print_report(built: dict) -> None:
    """Render every section of a report (`genesis.report.render.report_sections`) as a rich table."""
    from genesis.report.render import report_sections

    run = built["run"]
    console.rule(f"run {run['id']} ({run['status']}, {run['generations_seen']}/"
                 f"{run['generations_planned']} generations, {run['evaluations']} evaluations)")
    for title, _, header, rows, note in report_sections(built):
        if title == "Run":
            continue
        table = Table(title=title, caption=note, caption_justify="left")
        for column in header:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        console.print(table)


def _comparison_table(comparison: dict) -> Table:
    table = Table(title="Trait rankings side by side")
    table.add_column("rank")
    for run_id in comparison["runs"]:
        table.add_column(run_id)
    depth = max(len(v) for v in comparison["rankings"].values())
    for rank in range(depth):
        table.add_row(str(rank + 1), *[comparison["rankings"][r][rank] for r in comparison["runs"]])
    table.add_row("best ppl", *[_num(comparison["final_best_ppl"][r]) for r in comparison["runs"]])
    table.add_row("strategy", *[comparison["strategies"][r] for r in comparison["runs"]])
    table.add_row("compute", *[f"{comparison['compute_tokens'][r] / 1e6:.2f}M tokens" for r in comparison["runs"]])
    return table


def _num(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@app.command()
def export(
    run_path: Path = typer.Argument(..., metavar="RUN", help="The run folder."),
    top: int = typer.Option(3, help="How many of the best genomes to export."),
    out: Optional[Path] = typer.Option(None, help="Destination (default genomes/champions/<run-id>/)."),
    recipe: Optional[str] = typer.Option(
        None, help="Train the champions again with this (longer) recipe instead of using the run's weights."),
    data: Optional[Path] = typer.Option(None, envvar="GENESIS_DATA", help=DATA_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (for scripts) instead of tables."),
) -> None:
    """Export champions as agent bundles: genome.json, model.safetensors, tokenizer.json, card.md."""
    from genesis.colony.bundle import export_champions, load_bundle

    try:
        with console.status("exporting champions..."):
            paths = export_champions(run_path, top=top, out=out, recipe=recipe, data=data)
    except GenesisError as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps([{"bundle": str(p), **{k: load_bundle(p).manifest.get(k) for k in
                                ("genome_id", "metrics", "recipe", "weights", "lineage")}} for p in paths],
                              indent=2))
        return
    table = Table(title="Exported agent bundles")
    for column in ("bundle", "traits", "val ppl", "recipe", "weights"):
        table.add_column(column, no_wrap=True)
    for path in paths:
        bundle = load_bundle(path)  # also checks what was just written
        weights = bundle.manifest.get("weights", "kept by the run")
        table.add_row(str(path), bundle.genome.describe(), f"{bundle.manifest['metrics']['val_ppl']:.1f}",
                      bundle.manifest["recipe"]["name"],
                      f"[yellow]{weights}[/]" if weights == "retrained" else weights)
    console.print(table)
    retrained = [p for p in paths if load_bundle(p).manifest.get("weights") == "retrained"]
    if retrained and recipe is None:
        console.print(f"[yellow]{len(retrained)} champion(s) had no kept weights and were retrained with "
                      "the run's recipe and seed[/]")


@app.command()
def generate(
    bundle: Path = typer.Argument(..., help="An agent bundle folder."),
    prompt: str = typer.Argument(..., help="Text to continue."),
    max_tokens: int = typer.Option(50, help="Tokens to generate."),
    temperature: float = typer.Option(0.8, help="Sampling temperature."),
    top_k: int = typer.Option(40, help="Sample among the k most likely tokens (0: all)."),
    seed: int = typer.Option(0, help="Sampling seed."),
) -> None:
    """Sample text from one agent bundle."""
    from genesis.colony.bundle import load_bundle
    from genesis.train.generate import generate as sample_text

    try:
        agent = load_bundle(bundle)
    except GenesisError as error:
        fail(str(error))
    text = sample_text([agent.model], [1.0], agent.tokenizer, prompt, max_tokens, temperature, top_k, seed)
    console.print(f"[bold]{prompt}[/]{text}", highlight=False)


def _fractions(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--rungs takes comma-separated fractions such as 0.25,0.5,1, not {text!r}")


def _token_count(text: str) -> int:
    """A count such as 2500000, 2.5M, 800k or 1e6."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text.strip()[-1:].lower(), 1)
    number = text.strip()[:-1] if scale != 1 else text.strip()
    try:
        return int(float(number) * scale)
    except ValueError:
        fail(f"--budget-tokens takes a token count such as 2500000 or 2.5M, not {text!r}")


def best_table(records: Sequence[Record], title: str) -> Table:
    """A rich table of records: rank, genome, perplexity, size and origin."""
    table = Table(title=title)
    for column in ("#", "genome", "traits", "val ppl", "params", "gen", "made by"):
        table.add_column(column, no_wrap=True,
                         justify="right" if column in ("#", "val ppl", "params", "gen") else "left")
    for rank, record in enumerate(records, 1):
        outcome = record.outcome
        table.add_row(str(rank), record.genome_id, record.genome.describe(),
                      f"{outcome.val_ppl:.1f}" if outcome.val_ppl else outcome.status,
                      f"{outcome.params:,}" if outcome.params else "-",
                      str(record.generation), record.operator)
    return table


def confirmed_table(confirmed: Sequence[dict], title: str) -> Table:
    """A rich table of confirmed champions: test perplexity over fresh seeds with its
    interval, beside the validation perplexity that selected them."""
    table = Table(title=title)
    for column in ("#", "genome", "traits", "test ppl [95% CI]", "seeds", "val ppl at selection", "note"):
        table.add_column(column, no_wrap=True)
    for champion in confirmed:
        table.add_row(str(champion["rank"]), champion["genome_id"], champion["traits"],
                      _confirmed_ppl(champion), str(champion["seeds"]),
                      f"{champion['selection_val_ppl']:.1f}",
                      "within noise of #1" if champion["within_noise_of_best"] else "")
    return table


def _confirmed_ppl(champion: dict) -> str:
    """Confirmed test perplexity and its interval, e.g. `301.6 [296-307]`."""
    if champion["test_ppl_low"] is None:
        return f"{champion['test_ppl']:.1f}"
    digits = 0 if champion["test_ppl"] >= 100 else 1
    return (f"{champion['test_ppl']:.1f} [{champion['test_ppl_low']:.{digits}f}-"
            f"{champion['test_ppl_high']:.{digits}f}]")


def noise_line(noise: dict) -> str:
    """One line on a run's measured seed noise."""
    if noise["val_loss_sd"] is None:
        return "seed noise: not measured (no model was trained with two fresh seeds)"
    return (f"seed noise: validation-loss sd {noise['val_loss_sd']:.4f} (about "
            f"{noise['ppl_percent']:.1f}% in perplexity; {noise['df']} degrees of freedom over "
            f"{noise['architectures']} architectures); differences smaller than this are not results")


def _ppl(loss: float | None) -> str:
    return f"{math.exp(loss):.1f}" if loss is not None else "-"


class _EvolveProgress(Observer):
    """Renders a run: a bar over generations, one over genomes, a line per genome."""

    def __init__(self, generations: int, out: Console):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=out)
        self.generations = self.progress.add_task("generations", total=generations)
        self.genomes = self.progress.add_task("genomes", total=None)
        self.run_path: Path | None = None

    def __enter__(self) -> _EvolveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def stop(self) -> None:
        self.progress.stop()

    def on_run_start(self, run_id: str, path: Path) -> None:
        self.run_path = path
        self.progress.console.print(f"run {run_id} in {path}", highlight=False)

    def on_generation_start(self, generation: int, candidates: Sequence[Candidate]) -> None:
        self.progress.reset(self.genomes, total=len(candidates),
                            description=f"generation {generation}")

    def on_evaluation(self, record: Record) -> None:
        outcome = record.outcome
        result = (f"ppl {outcome.val_ppl:8.1f}" if outcome.status == "ok"
                  else f"[red]{outcome.status}[/] {outcome.reason}")
        if outcome.stopped_at is not None:
            result += f" [yellow](given up at step {outcome.stopped_at})[/]"
        size = f"{outcome.params / 1e6:5.2f}M" if outcome.params else "     -"
        timing = "cached" if record.cached else f"{outcome.wall_s:5.1f}s"
        self.progress.console.print(
            f"  g{record.generation} #{record.index:<2} {record.genome.describe():<30} "
            f"{result}  {size}  {timing}  [dim]{record.operator}[/]", highlight=False)
        self.progress.advance(self.genomes)

    def on_generation_end(self, generation: int, records: Sequence[Record], stats: dict) -> None:
        self.progress.console.print(
            f"[bold]generation {generation}[/]: best ppl {_ppl(stats['best'])}, "
            f"mean ppl {_ppl(stats['mean'])}, {stats['unique']} unique, {stats['failed']} failed")
        self.progress.advance(self.generations)


from genesis.cli.colony import colony_app  # noqa: E402 (it uses the helpers above)

app.add_typer(colony_app, name="colony")
