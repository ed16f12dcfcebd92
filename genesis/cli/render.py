"""How the command line shows things: the consoles, one-line errors, progress, and the
tables of runs, champions and reports. Library code never prints; this module does."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Sequence

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from genesis.core.records import Record
from genesis.core.summary import baseline_note
from genesis.errors import GenesisError
from genesis.search.loop import Observer
from genesis.search.population import Candidate

# Piped output (logs, CI) gets room for a genome per line instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

DATA_HELP = (
    "Local WikiText folder with train.txt, valid.txt and test.txt. "
    "Without it, WikiText-2 is downloaded from the Hugging Face hub."
)


def fail(message: str) -> None:
    """Print one error line and exit with code 2."""
    # the message is plain text: brackets in it (pip extras, paths) are not markup
    errors.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(2)




def run_with_progress(generations: int, as_json: bool, start) -> None:
    """Run `start(progress)` under a progress display and render the result (as JSON on
    stdout, with the progress on stderr, for scripts)."""
    with EvolveProgress(generations, errors if as_json else console) as progress:
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
        f"best validation perplexity at selection: generation 0 [bold]{ppl(bests[0])}[/], "
        f"last generation [bold]{ppl(bests[-1])}[/]; "
        f"{summary['trainings']} trainings ({summary['trained']} models), "
        f"{summary['cache_hits']} saved by the fitness cache, "
        f"{summary['given_up']} given up early; {compute['search_tokens'] / 1e6:.2f}M training "
        f"tokens for the search, {(compute['noise_probe_tokens'] + compute['confirmation_tokens']) / 1e6:.2f}M "
        f"for {compute['retrainings']} fresh-seed retrainings"
    )
    console.print(noise_line(summary["noise"]))
    if summary["baselines"]:
        console.print(baseline_note(summary["baselines"], summary["best_minus_bigram"]).strip())
    console.print(f"run folder: {run.path}")


def print_report(built: dict) -> None:
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


def comparison_table(comparison: dict) -> Table:
    table = Table(title="Trait rankings side by side")
    table.add_column("rank")
    for run_id in comparison["runs"]:
        table.add_column(run_id)
    depth = max(len(v) for v in comparison["rankings"].values())
    for rank in range(depth):
        table.add_row(str(rank + 1), *[comparison["rankings"][r][rank] for r in comparison["runs"]])
    table.add_row("best ppl", *[num(comparison["final_best_ppl"][r]) for r in comparison["runs"]])
    table.add_row("strategy", *[comparison["strategies"][r] for r in comparison["runs"]])
    table.add_row("compute", *[f"{comparison['compute_tokens'][r] / 1e6:.2f}M tokens" for r in comparison["runs"]])
    return table


def num(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def fractions(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--rungs takes comma-separated fractions such as 0.25,0.5,1, not {text!r}")


def token_count(text: str) -> int:
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
                      confirmed_ppl(champion), str(champion["seeds"]),
                      f"{champion['selection_val_ppl']:.1f}",
                      "within noise of #1" if champion["within_noise_of_best"] else "")
    return table


def confirmed_ppl(champion: dict) -> str:
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


def ppl(loss: float | None) -> str:
    return f"{math.exp(loss):.1f}" if loss is not None else "-"


def stop_progress(progress: Progress) -> None:
    """Stop a progress display; one never started prints nothing (rich would print a
    blank line)."""
    if progress.live.is_started:
        progress.stop()


class EvolveProgress(Observer):
    """Renders a run: a bar over generations, one over genomes, a line per genome. The
    bars appear once the run has started, so a refused setting prints its error alone."""

    def __init__(self, generations: int, out: Console):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=out)
        self.generations = self.progress.add_task("generations", total=generations)
        self.genomes = self.progress.add_task("genomes", total=None)
        self.run_path: Path | None = None

    def __enter__(self) -> EvolveProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        stop_progress(self.progress)

    def on_run_start(self, run_id: str, path: Path) -> None:
        self.run_path = path
        self.progress.start()
        self.progress.console.print(f"run {run_id} in {path}", highlight=False)

    def on_generation_start(self, generation: int, candidates: Sequence[Candidate]) -> None:
        self.progress.reset(self.genomes, total=len(candidates),
                            description=f"generation {generation}")

    def on_evaluation(self, record: Record) -> None:
        outcome = record.outcome
        result = (f"ppl {outcome.val_ppl:8.1f}" if outcome.status == "ok"
                  else f"[red]{outcome.status}[/] {escape(outcome.reason or '')}")
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
            f"[bold]generation {generation}[/]: best ppl {ppl(stats['best'])}, "
            f"mean ppl {ppl(stats['mean'])}, {stats['unique']} unique, {stats['failed']} failed")
        self.progress.advance(self.generations)
