"""`genesis colony ...`: the colony's commands, thin over `genesis.colony.colony`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from genesis.cli.render import DATA_HELP, console, fail, stop_progress
from genesis.colony.settings import ColonySettings
from genesis.errors import GenesisError

LOCATION_HELP = "The colony: a folder (SQLite in it) or a database URL (postgresql://user@host/db)."
colony_app = typer.Typer(help="A colony of agents that serve text, learn, divide and are selected.",
                         no_args_is_help=True)


@colony_app.command("seed")
def colony_seed(
    location: str = typer.Argument(..., help="Where the new colony goes: a folder or a database URL."),
    bundles: list[Path] = typer.Argument(..., help="Agent bundles (one tokenizer)."),
    theta: int = typer.Option(ColonySettings.division_threshold, help="Θ: interactions after which an agent divides."),
    cap: int = typer.Option(ColonySettings.population_cap, help="Population cap: above it the weakest retire."),
    consensus: str = typer.Option(ColonySettings.consensus, help="softmax (fitness-weighted), top_k, posterior "
                                  "(routed per prompt by each agent's likelihood of its last tokens) or niche "
                                  "(by each agent's fitness in the prompt's niche; needs --niches)."),
    routing_tokens: int = typer.Option(ColonySettings.routing_tokens, help="Prompt tokens that route a posterior consensus."),
    selection: str = typer.Option(ColonySettings.selection, help="Who retires above the cap: fitness (the lowest), "
                                  "species (the weakest of the most populous architecture) or niche (the weakest "
                                  "of those dominated in every niche; needs --niches)."),
    niches: int = typer.Option(ColonySettings.niches, help="Niches: clusters of the memory vectors, each with its "
                               "own fitness per agent; agents divide only while they lead one (0: none)."),
    routing_temperature: float = typer.Option(ColonySettings.routing_temperature,
                                              help="τ: the posterior's evidence is divided by it (1: the plain posterior)."),
    temperature: float = typer.Option(ColonySettings.consensus_temperature, help="Temperature of the softmax over fitness."),
    top_k_agents: int = typer.Option(ColonySettings.consensus_top_k, help="Agents that answer in top_k mode."),
    answering: int = typer.Option(ColonySettings.answering, help="Sparse routing: only this many agents with the "
                                  "largest shares answer under softmax, posterior or niche (0: all)."),
    learning_rate: float = typer.Option(ColonySettings.learning_rate, help="Continuous-learning learning rate."),
    adapt_steps: int = typer.Option(ColonySettings.adapt_steps, help="Optimizer steps per feedback (0: no learning)."),
    learners: int = typer.Option(ColonySettings.learners, help="Routed learning: only this many agents with the "
                                 "largest consensus shares on a prompt learn from its feedback (0: all)."),
    child_steps: int = typer.Option(ColonySettings.child_steps, help="Steps a niche leader's newborn child takes "
                                    "on that niche's memories (0: none)."),
    child_learning_rate: float = typer.Option(ColonySettings.child_learning_rate,
                                              help="The learning rate of those steps."),
    agent_weights: str = typer.Option(
        ColonySettings.agent_weights, help="adapter (low-rank adapters over each bundle's frozen weights) "
        "or full (each agent a whole model)."),
    rank: int = typer.Option(ColonySettings.adapter_rank, help="Rank of the adapters."),
    copies: int = typer.Option(1, help="Agents seeded from each bundle (distinct identities with adapters)."),
    learn_from: str = typer.Option(ColonySettings.learn_from, help="Learn from the memories most similar "
                                   "to the newest feedback (similar) or the most recent (recent)."),
    recall: int = typer.Option(ColonySettings.recall, help="Similar memories put before each prompt as context."),
    memory_limit: int = typer.Option(ColonySettings.memory_limit, help="Memories kept; the oldest go beyond it."),
) -> None:
    """Create a colony from agent bundles."""
    from genesis.colony.colony import Colony

    settings = ColonySettings(division_threshold=theta, population_cap=cap, consensus=consensus,
                              routing_tokens=routing_tokens, routing_temperature=routing_temperature, selection=selection,
                              niches=niches, consensus_temperature=temperature, consensus_top_k=top_k_agents,
                              answering=answering, learning_rate=learning_rate, adapt_steps=adapt_steps, learners=learners,
                              child_steps=child_steps, child_learning_rate=child_learning_rate,
                              agent_weights=agent_weights, adapter_rank=rank, learn_from=learn_from,
                              recall=recall, memory_limit=memory_limit)
    try:
        colony = Colony.seed(location, bundles, settings, copies)
    except GenesisError as error:
        fail(str(error))
    console.print(f"colony {colony.location}: {len(colony.agents())} agents")


@colony_app.command("ask")
def colony_ask(
    location: str = typer.Argument(..., help=LOCATION_HELP),
    prompt: str = typer.Argument(..., help="Text to continue."),
    max_tokens: int = typer.Option(30, help="Tokens to generate."),
    seed: Optional[int] = typer.Option(None, help="Sampling seed (default: fresh entropy)."),
    continuation: Optional[str] = typer.Option(None, help="The true continuation, as feedback."),
    score: Optional[float] = typer.Option(None, help="A score in (0, 1] for the answer, as feedback."),
    recall: Optional[int] = typer.Option(None, help="Similar memories put before the prompt (default: the colony's)."),
) -> None:
    """Answer a prompt by fitness-weighted consensus; optionally give feedback at once."""
    from genesis.colony.colony import Colony

    try:
        colony = Colony.open(location)
        answer = colony.ask(prompt, max_tokens=max_tokens, seed=seed, recall=recall)
        if continuation is not None or score is not None:
            colony.feedback(prompt, continuation, score, memory_id=answer.memory_id)
    except GenesisError as error:
        fail(str(error))
    console.print(f"[bold]{prompt}[/]{answer.text}", highlight=False)
    shares = ", ".join(f"{a} {w:.2f}" for a, w in zip(answer.agents, answer.weights))
    console.print(f"[dim]memory {answer.memory_id}; consensus of {shares}[/]")


@colony_app.command("feedback")
def colony_feedback(
    location: str = typer.Argument(..., help=LOCATION_HELP),
    memory_id: int = typer.Argument(..., help="The memory (answer) the feedback is about."),
    continuation: Optional[str] = typer.Option(None, help="The true continuation of its prompt."),
    score: Optional[float] = typer.Option(None, help="A score in (0, 1]."),
) -> None:
    """Give feedback on an earlier answer: fitness moves, agents learn."""
    from genesis.colony.colony import Colony

    try:
        colony = Colony.open(location)
        received = colony.feedback(colony.memory_prompt(memory_id), continuation, score,
                                   memory_id=memory_id)
    except GenesisError as error:
        fail(str(error))
    console.print(f"fitness updated for {len(received)} agents")


@colony_app.command("status")
def colony_status(location: str = typer.Argument(..., help=LOCATION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (for scripts) instead of tables."),
) -> None:
    """Agents with their lineage, fitness and interactions; memory size; recent events."""
    from genesis.colony.colony import Colony
    from genesis.colony.database import iter_lineage

    try:
        colony = Colony.open(location)
    except GenesisError as error:
        fail(str(error))
    agents = colony.agents(alive_only=False)
    status = colony.status()
    if as_json:
        typer.echo(json.dumps(status, indent=2, default=str))
        return
    table = Table(title=f"Colony {colony.location}: {sum(a.status == 'alive' for a in agents)} alive, "
                        f"{status['memories']} memories")
    for column in ("lineage", "genome", "fitness", "interactions", "status", "born"):
        table.add_column(column, no_wrap=True)
    for depth, agent in iter_lineage(agents):
        table.add_row("  " * depth + ("└ " if depth else "") + agent.id, agent.genome.describe(),
                      f"{agent.fitness:.3f}", f"{agent.interactions}/{agent.total_interactions}",
                      agent.status if agent.status == "alive" else f"[dim]{agent.status}[/]", agent.born[:19])
    console.print(table)
    events = Table(title="Recent events")
    for column in ("when", "event", "agent", "detail"):
        events.add_column(column)
    for event in status["events"]:
        events.add_row(event["created"][:19], event["kind"], event["agent"],
                       ", ".join(f"{k}={v}" for k, v in event["detail"].items()))
    console.print(events)


@colony_app.command("simulate")
def colony_simulate(
    location: str = typer.Argument(..., help=LOCATION_HELP + " It is changed: copy it to keep it."),
    data: Optional[Path] = typer.Option(None, envvar="GENESIS_DATA", help=DATA_HELP),
    chunks: int = typer.Option(120, help="Prompt/continuation chunks to replay."),
    prompt_tokens: int = typer.Option(32, help="Prompt tokens per chunk."),
    continuation_tokens: int = typer.Option(16, help="Continuation tokens per chunk."),
    out: Optional[Path] = typer.Option(None, help="Folder for the summary and plot (default: the colony folder)."),
    order: str = typer.Option("stream", help="stream (the split as it comes), blocks (its articles by topic, one "
                              "topic after another) or interleaved (the topics in turn)."),
    topics: int = typer.Option(4, help="Topics of the blocks and interleaved orders (k-means over the train "
                               "split's articles, saved with the colony)."),
    start: int = typer.Option(0, help="Where the replay starts: a chunk of the split, or a replay number with topics."),
) -> None:
    """Replay held-out WikiText: predict each chunk, then learn from it; colony vs best agent."""
    from genesis.colony.colony import Colony
    from genesis.colony.simulate import SIMULATION_FILE, simulate

    progress = Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.description}"), console=console)
    task = progress.add_task("", total=chunks)

    def measured(point: dict) -> None:  # the bar appears with the first chunk: a refused count prints alone
        progress.start()
        progress.update(task, completed=point["chunk"],
                        description=f"{point['agents']} agents, consensus ppl {point['consensus_ppl']:.1f}")

    try:
        colony = Colony.open(location)
        try:
            summary = simulate(colony, data, chunks, prompt_tokens, continuation_tokens, out=out, order=order,
                               topics=topics, start=start, on_chunk=measured)
        finally:
            stop_progress(progress)
    except GenesisError as error:
        fail(str(error))
    table = Table(title=f"Online perplexity over {summary['tokens_scored']} held-out tokens "
                        f"(predicted before learning)")
    table.add_column("predictor")
    table.add_column("perplexity", justify="right")
    for name, value in summary["online_ppl"].items():
        table.add_row(name.replace("_", " "), f"{value:.2f}")
    console.print(table)
    verdict = lambda won: "[green]beat[/]" if won else "[red]did not beat[/]"  # noqa: E731
    console.print(f"The colony {verdict(summary['colony_beats_frozen_best'])} its best agent frozen and "
                  f"{verdict(summary['colony_beats_learning_best'])} its best agent learning alone; "
                  f"{summary['divisions']} divisions, {summary['retirements']} retirements, "
                  f"{summary['agents_at_end']} agents at the end.")
    if summary.get("specialization_bits"):
        index = summary["specialization_bits"]
        console.print(f"Specialization (mutual information of consensus weights and topic): {index['whole']:.3f} "
                      f"bits; over the first quarter, half, ... {', '.join(f'{q:.3f}' for q in index['cumulative_quarters'])}")
    console.print(f"summary: {(out or colony.folder) / SIMULATION_FILE}")


@colony_app.command("upgrade")
def colony_upgrade(folder: Path = typer.Argument(..., help="A colony folder made by an older genesis.")) -> None:
    """Move an older colony's tokenizer and weight files into its database (once)."""
    from genesis.colony.upgrade import upgrade_colony

    try:
        moved = upgrade_colony(folder)
    except GenesisError as error:
        fail(str(error))
    console.print(f"colony {folder}: {moved} agents' weights moved into its database")


@colony_app.command("serve")
def colony_serve(
    location: str = typer.Argument(..., help=LOCATION_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8765, help="Port to listen on."),
    allowed_host: list[str] = typer.Option(
        [], "--allowed-host", help="Another name clients reach the server by (Host header); loopback and "
                                   "--host are always allowed. Repeat for several."),
) -> None:
    """Serve the colony: an HTTP API (ask, feedback, status) and a web page, until Ctrl-C."""
    try:
        from genesis.serve.app import serve
    except ImportError as error:
        fail(f"serving needs the serve extra ({error.name} is missing): pip install 'genesis[serve]'")
    from genesis.colony.colony import Colony

    try:
        colony = Colony.open(location)  # a bad location fails here, in one line, before the server starts
    except GenesisError as error:
        fail(str(error))
    console.print(f"serving colony {colony.location} at http://{host}:{port}/ (Ctrl-C stops)")
    serve(colony, host, port, allowed_hosts=allowed_host)


@colony_app.command("export")
def colony_export(
    location: str = typer.Argument(..., help=LOCATION_HELP),
    agent: str = typer.Argument(..., help="The agent's id (see `genesis colony status`)."),
    out: Path = typer.Option(..., help="The bundle folder to write."),
) -> None:
    """Export an agent as a bundle (Hugging Face layout; an adapter agent with its adapter)."""
    from genesis.colony.colony import Colony
    from genesis.colony.export import export_agent

    try:
        folder = export_agent(Colony.open(location), agent, out)
    except GenesisError as error:
        fail(str(error))
    console.print(f"agent {agent}: {folder}")
