"""Colony scaling: many adapter agents over one base, against whole-model agents.

1. A champion of the default space is trained (`quick` recipe) and exported, or taken
   from `--bundle`.
2. A colony of `--agents` (default 1,000) adapter agents is seeded from it: its size on
   disk, the process's resident memory once every agent is loaded, and how long seed,
   ask, feedback (with learning), divide and retire take at that size.
3. Ask latency of a consensus of K = 1, 8, 64 agents (top-k consensus, 16 new tokens,
   median of `--rounds`), for adapter agents (one batched pass of the base per token) and
   for whole-model agents (K passes), each against its own K = 1.

    python benchmarks/colony_scaling.py --data /path/to/wikitext-2

Writes benchmarks/results/colony_scaling.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from common import benchmark_parser, machine, rendered_only, table, update_readme, write_results

CONSENSUS_SIZES = (1, 8, 64)
NEW_TOKENS = 16


def resident_mib() -> float:
    """The process's resident memory now, MiB (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def champion_bundle(data: str, folder: Path) -> Path:
    """Train two genomes of the default space and export the better one."""
    import genesis

    run = genesis.evolve(population=2, generations=1, data=data, output=folder / "runs", noise_probes=0, confirm=0)
    return genesis.export_champions(run.path, top=1, out=folder / "bundles")[0]


def timed(action, rounds: int = 1) -> float:
    """Median wall seconds of `action()` over `rounds`."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def ask_latency(bundle: Path, folder: Path, kind: str, rounds: int) -> dict[str, float]:
    """Median seconds of one ask by a consensus of K agents, for each K."""
    from genesis.colony.colony import Colony
    from genesis.colony.settings import ColonySettings

    latency = {}
    colony = Colony.seed(folder, [bundle], ColonySettings(agent_weights=kind, population_cap=10_000,
                                                          division_threshold=1_000_000, adapt_steps=0),
                         copies=max(CONSENSUS_SIZES))
    for k in CONSENSUS_SIZES:
        colony.settings = dataclasses.replace(colony.settings, consensus="top_k", consensus_top_k=k)
        colony.ask("The city", max_tokens=NEW_TOKENS, seed=0)  # loads the k agents once
        latency[str(k)] = timed(lambda: colony.ask("The city", max_tokens=NEW_TOKENS, seed=0), rounds)
    return latency


def at_scale(bundle: Path, folder: Path, agents: int) -> dict:
    """Seed `agents` adapter agents and time what a colony does at that size."""
    import sqlalchemy as sa

    from genesis.colony.colony import Colony
    from genesis.colony.database import bases_table, weights_table
    from genesis.colony.settings import ColonySettings

    before = resident_mib()
    started = time.perf_counter()
    colony = Colony.seed(folder, [bundle], ColonySettings(population_cap=agents, division_threshold=1_000_000,
                                                          consensus="top_k", consensus_top_k=8),
                         copies=agents)
    seed_s = time.perf_counter() - started
    everyone = colony.agents()
    load_s = timed(lambda: [colony.model(a) for a in everyone])
    memory = resident_mib() - before
    ask_s = timed(lambda: colony.ask("The city", max_tokens=NEW_TOKENS, seed=0))
    teach_s = timed(lambda: colony.teach("The history of the city", " is long and old"))
    divide_s = timed(lambda: colony.divide(colony.agents()[0].id))  # above the cap: one retires
    disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    with colony.store.read() as db:  # weights and bases are blobs in the colony's database
        base = db.execute(sa.select(sa.func.sum(sa.func.length(bases_table.c.data)))).scalar()
        adapters = db.execute(sa.select(sa.func.length(weights_table.c.data))).scalars().all()
    return {"agents": agents, "alive_after_divide": len(colony.agents()),
            "retired": sum(a.status == "retired" for a in colony.agents(alive_only=False)),
            "disk_mib": disk / 2**20, "base_mib": base / 2**20,
            "adapter_kib": statistics.median(adapters) / 2**10, "memory_mib": memory,
            "bundle_model_mib": (bundle / "model.safetensors").stat().st_size / 2**20,
            "seconds": {"seed": seed_s, "load_every_agent": load_s, "ask_top8": ask_s,
                        "teach_with_learning": teach_s, "divide_and_retire": divide_s}}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bundle", help="an agent bundle to use instead of training one")
    args = parser.parse_args()
    if rendered_only(parser, args, "colony_scaling", render):
        return
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        bundle = Path(args.bundle) if args.bundle else champion_bundle(args.data, scratch)
        scale = at_scale(bundle, scratch / "scale", args.agents)
        print(scale)
        latency = {kind: ask_latency(bundle, scratch / f"latency-{kind}", kind, args.rounds)
                   for kind in ("adapter", "full")}
        print(latency)
        from genesis.colony.bundle import load_bundle

        genome = load_bundle(bundle).genome.describe()
    results = {"machine": machine(), "genome": genome, "new_tokens": NEW_TOKENS, "rounds": args.rounds,
               "scale": scale, "ask_latency_s": latency}
    path = write_results("colony_scaling", results)
    update_readme("colony_scaling", render(results))
    print(f"wrote {path}")


def render(results: dict) -> str:
    """The README tables of a results dict."""
    scale, latency = results["scale"], results["ask_latency_s"]
    m = results["machine"]
    head = (f"Measured {m['measured']} on {m['cpu']} ({m['cores']} cores, torch {m['torch']}); "
            f"one base: {results['genome']} ({scale['bundle_model_mib']:.1f} MiB of weights), adapters of rank 4 "
            f"on every attention and feed-forward projection, {results['new_tokens']} new tokens per ask, "
            f"median of {results['rounds']} rounds.")
    sizes = table(["agents", "on disk", "base", "one adapter", "resident memory of all agents loaded",
                   "seed", "load all", "ask (top-8)", "feedback with learning", "divide + retire"], [[
        f"{scale['agents']:,}", f"{scale['disk_mib']:.1f} MiB", f"{scale['base_mib']:.1f} MiB",
        f"{scale['adapter_kib']:.0f} KiB", f"{scale['memory_mib']:.0f} MiB",
        *(f"{scale['seconds'][k]:.2f} s" for k in ("seed", "load_every_agent", "ask_top8",
                                                    "teach_with_learning", "divide_and_retire"))]])
    rows = []
    for kind in ("adapter", "full"):
        one = latency[kind]["1"]
        rows.append([kind, *(f"{latency[kind][str(k)] * 1000:.0f} ms (x{latency[kind][str(k)] / one:.1f})"
                             for k in CONSENSUS_SIZES)])
    asks = table(["agents are", *(f"consensus of {k}" for k in CONSENSUS_SIZES)], rows)
    ratio = latency["adapter"]["64"] / latency["adapter"]["1"]
    targets = table(["target", "measured", "met"], [
        [f"{scale['agents']:,} agents over one base in at most 2 GiB on disk and in memory",
         f"{scale['disk_mib']:.0f} MiB on disk, {scale['memory_mib']:.0f} MiB in memory",
         "yes" if max(scale["disk_mib"], scale["memory_mib"]) <= 2048 else "**no**"],
        ["a 64-agent consensus costs at most 3x one agent", f"x{ratio:.1f}", "yes" if ratio <= 3 else "**no**"]])
    return "\n\n".join([head, sizes, asks, targets])


if __name__ == "__main__":
    main()
