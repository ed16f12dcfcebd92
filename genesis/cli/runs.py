"""`genesis runs`, `report`, `export` and `generate`: reading runs and their champions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from genesis.cli.render import (
    DATA_HELP,
    comparison_table,
    confirmed_ppl,
    console,
    fail,
    print_report,
)
from genesis.errors import GenesisError


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
    for column in ("run", "started", "gens", "evals", "test ppl [95% CI]", "val ppl", "vs bigram", "status"):
        table.add_column(column, no_wrap=True)
    for store in stores:
        try:
            run = Run.load(store.path)
        except GenesisError as error:
            table.add_row(store.id, "-", "-", "-", "-", "-", "-", f"[red]unreadable[/]: {escape(str(error))}")
            continue
        best = run.best(1)
        summary = run.summary()
        confirmed, past = summary["confirmed"], summary["best_minus_bigram"]
        done = len(run.logbook)
        status = run.status
        colour = {"finished": "green", "running": "yellow", "interrupted": "red"}[status]
        table.add_row(run.id, run.config.get("started", "-")[:16].replace("T", " "),
                      f"{done}/{run.config['evolution']['generations']}",
                      str(len(run.records)),
                      confirmed_ppl(confirmed[0]) if confirmed else "-",
                      f"{best[0].outcome.val_ppl:.1f}" if best and best[0].outcome.val_ppl else "-",
                      "-" if past is None else f"{past:+.3f} nats",
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
    summary = run.summary()
    confirmed = summary["confirmed"]
    return {"run": run.id, "path": str(run.path), "started": run.config.get("started"),
            "generations_done": len(run.logbook), "generations": run.config["evolution"]["generations"],
            "evaluations": len(run.records), "status": run.status,
            "best_val_ppl": best[0].outcome.val_ppl if best else None,
            "confirmed": confirmed[0] if confirmed else None,
            "baselines": summary["baselines"], "best_minus_bigram": summary["best_minus_bigram"]}


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
            written = write_report(built, Path(path) / "report")
        except GenesisError as error:
            fail(str(error))
        reports.append(built)
        if output_format == "text":
            print_report(built)
            console.print(f"written: {written['html']} (and report.md, report.json, "
                          f"{len(written) - 3} plots)")
    comparison = None
    if len(reports) > 1:
        comparison = compare(reports)
        try:
            written = write_comparison(comparison, out or Path(runs[0]).parent / "comparison")
        except GenesisError as error:
            fail(str(error))
        if output_format == "text":
            console.print(comparison_table(comparison))
            console.print(f"comparison written: {written['md']}")
    if output_format == "json":
        payload = reports[0] if comparison is None else {"runs": reports, "comparison": comparison}
        typer.echo(json.dumps(payload, indent=2, sort_keys=True))


def export(
    run_path: Path = typer.Argument(..., metavar="RUN", help="The run folder."),
    top: int = typer.Option(3, help="How many of the best genomes to export."),
    out: Optional[Path] = typer.Option(None, help="Destination (default genomes/champions/<run-id>/)."),
    recipe: Optional[str] = typer.Option(
        None, help="Train the champions again with this (longer) recipe instead of using the run's weights."),
    data: Optional[Path] = typer.Option(None, envvar="GENESIS_DATA", help=DATA_HELP),
    layout: str = typer.Option("genesis", "--format", help="genesis (the µLM with its modeling code), or gpt2: "
                               "also native GPT-2 weights in gpt2/ for each champion that is a plain GPT-2."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (for scripts) instead of tables."),
) -> None:
    """Export champions as agent bundles (Hugging Face layout: config.json, model.safetensors, tokenizer.json,
    README.md, and the code transformers runs them with)."""
    from genesis.colony.bundle import export_champions, load_bundle

    if layout not in ("genesis", "gpt2"):
        fail(f"--format must be genesis or gpt2, not {layout!r}")
    try:
        with console.status("exporting champions..."):
            paths = export_champions(run_path, top=top, out=out, recipe=recipe, data=data, gpt2=layout == "gpt2")
            bundles = [load_bundle(path) for path in paths]  # also checks what was just written
    except GenesisError as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps([{"bundle": str(b.path), **{k: b.manifest.get(k) for k in
                                ("genome_id", "metrics", "recipe", "weights", "lineage", "gpt2")}} for b in bundles],
                              indent=2))
        return
    table = Table(title="Exported agent bundles")
    for column in ("bundle", "traits", "val ppl", "recipe", "weights", "GPT-2"):
        table.add_column(column, no_wrap=True)
    for bundle in bundles:
        weights = bundle.manifest.get("weights", "kept by the run")
        table.add_row(str(bundle.path), bundle.genome.describe(), f"{bundle.manifest['metrics']['val_ppl']:.1f}",
                      bundle.manifest["recipe"]["name"],
                      f"[yellow]{weights}[/]" if weights == "retrained" else weights,
                      _gpt2_cell(bundle.manifest.get("gpt2", "")))
    console.print(table)
    retrained = [b for b in bundles if b.manifest.get("weights") == "retrained"]
    if retrained and recipe is None:
        console.print(f"[yellow]{len(retrained)} champion(s) had no kept weights and were retrained with "
                      "the run's recipe and seed[/]")


def _gpt2_cell(note: str) -> str:
    """The export table's GPT-2 column from a manifest's "gpt2" note."""
    if note == "gpt2":
        return "gpt2/"
    return escape(note.removeprefix("not a plain GPT-2: ")) if note.startswith("not") else "plain (--format gpt2)"


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
        text = sample_text([agent.model], [1.0], agent.tokenizer, prompt, max_tokens, temperature, top_k, seed)
    except GenesisError as error:
        fail(str(error))
    console.print(f"[bold]{prompt}[/]{text}", highlight=False)


def eval_task(
    bundle: Path = typer.Argument(..., help="An agent bundle folder."),
    out: Path = typer.Option(Path("tasks"), help="Folder for the task (YAML and documents)."),
    split: str = typer.Option("test", help="The WikiText split to score: train, valid or test."),
    name: str = typer.Option("genesis_wikitext", help="The task's name in lm-eval."),
    first: int = typer.Option(0, "--articles", help="Only the split's first N articles (0: all of them)."),
    data: Optional[Path] = typer.Option(None, envvar="GENESIS_DATA", help=DATA_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (for scripts) instead of tables."),
) -> None:
    """Write an lm-evaluation-harness task over a WikiText split, and score the bundle on it
    with genesis: `lm_eval` must report the same perplexities."""
    from genesis.colony.bundle import load_bundle
    from genesis.colony.harness import score, write_task
    from genesis.colony.topics import articles
    from genesis.train.data import SPLITS, read_texts

    if split not in SPLITS:
        fail(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    try:
        agent = load_bundle(bundle)
        documents = articles(read_texts(data)[0][split])
        documents = documents[:first] if first > 0 else documents
        with console.status(f"scoring {len(documents)} articles..."):
            result = score(agent.model, agent.tokenizer, documents, agent.model.config.block_size)
        task = write_task(out, documents, name)
    except GenesisError as error:
        fail(str(error))
    command = (f"lm_eval --model hf --model_args pretrained={bundle},trust_remote_code=True "
               f"--tasks {name} --include_path {out} --device cpu --batch_size 1")
    if as_json:
        typer.echo(json.dumps({"task": str(task), "documents": len(documents), **result, "lm_eval": command},
                              indent=2))
        return
    table = Table(title=f"{bundle} on {split} ({len(documents)} articles), as lm-eval counts it")
    for column in ("tokens", "words", "loss / token", "word ppl", "byte ppl", "bits / byte"):
        table.add_column(column, justify="right")
    table.add_row(f"{result['tokens']:,}", f"{result['words']:,}", f"{result['token_loss']:.4f}",
                  f"{result['word_perplexity']:.2f}", f"{result['byte_perplexity']:.4f}",
                  f"{result['bits_per_byte']:.4f}")
    console.print(table)
    console.print(f"task: {task}\nrun: {command}", highlight=False)
