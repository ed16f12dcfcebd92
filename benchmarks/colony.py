"""Colony science: does a colony beat its best agent, and what does each part add?

Three champions of the default space (`quick`) are trained and exported; then, for each
of `--seeds` replays (each a different stretch of the held-out test split, and fresh
identity seeds), three colonies replay `--chunks` chunks (`genesis colony simulate`):

- "3 champions, adapters": one adapter agent per champion, then two more each (6);
- "1 champion x6, adapters": six adapter agents over one base: no ensembling of
  different champions, so what it gains over the best agent comes from learning,
  division and selection (and a weight-average "soup" of the agents is defined);
- "3 champions, full weights": whole-model agents learning every weight.

Each replay measures, before learning from each chunk: the consensus, the best agent
frozen, the best agent learning alone on the same memories, and (one base) the soup;
forgetting (the agents' perplexity on fixed validation windows before and after); and
Fisher's theorem (correlation of the rise of mean fitness with the fitness variance).
Means with 95% t-intervals over the replays.

    python benchmarks/colony.py --data /path/to/wikitext-2

Writes benchmarks/results/colony.json and the table in benchmarks/README.md. With
`--adapter-learning-rates 1e-4 1e-3 1e-2` it runs the two adapter colonies at each
learning rate instead (results/colony_adapter_lr.json, its own table).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

from common import benchmark_parser, machine, rendered_only, table, update_readme, write_results

CONFIGS = {  # name -> (bundles used, copies per bundle, agent weights)
    "3 champions, adapters": (3, 2, "adapter"),
    "1 champion x6, adapters": (1, 6, "adapter"),
    "3 champions, full weights": (3, 2, "full"),
}


def configs(adapter_learning_rates: list[float] | None) -> dict[str, tuple[int, int, str, float | None]]:
    """The colonies to replay: name -> (bundles, copies, agent weights, learning rate or
    None for the default); the adapter ones at each given learning rate, if any."""
    if not adapter_learning_rates:
        return {name: (*config, None) for name, config in CONFIGS.items()}
    return {f"{name}, lr {lr:g}": (*config, lr) for lr in adapter_learning_rates
            for name, config in CONFIGS.items() if config[2] == "adapter"}


def one_architecture_space(folder: Path, genome) -> Path:
    """A search space holding exactly one architecture (and its precision)."""
    lines = ["[constraints]", "min_head_dim = 16"]
    for trait, value in (("n_layer", genome.n_layer), ("n_head", genome.n_head), ("d_model", genome.d_model)):
        lines += [f"[traits.{trait}]", 'type = "int"', f"values = [{value}]"]
    for trait, value in (("activation", genome.activation), ("weight_precision", genome.weight_precision)):
        lines += [f"[traits.{trait}]", 'type = "choice"', f'values = ["{value}"]']
    lines += ["[traits.sigma]", 'type = "log_float"', "low = 0.001", "high = 0.01", "tau = 0.5"]
    path = folder / f"{genome.training_id}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def trained_bundle(data: str, work: Path, genome, recipe=None) -> Path:
    """The genome trained under `recipe` (default `quick`) and exported; made once, kept
    in `work` (under the architecture's training id, and the recipe's name if not quick)."""
    import genesis

    name = genome.training_id + (f"-{recipe.name}" if recipe is not None else "")
    out = work / "bundles" / name
    if out.is_dir():
        return next(out.iterdir())
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "runs" / name, ignore_errors=True)
    run = genesis.evolve(population=2, generations=1, data=data, output=work / "runs" / name,
                         search_space=one_architecture_space(work, genome), noise_probes=0, confirm=0, threads=1,
                         **({"recipe": recipe} if recipe is not None else {}))
    return genesis.export_champions(run.path, top=1, out=out)[0]


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=120)
    parser.add_argument("--bundles", nargs="*", help="three agent bundles to use instead of training them")
    parser.add_argument("--adapter-learning-rates", nargs="*", type=float,
                        help="replay the adapter colonies at each of these learning rates instead")
    parser.add_argument("--name", help="results name (default: colony, or colony_adapter_lr with learning rates)")
    args = parser.parse_args()
    name_of_results = args.name or ("colony_adapter_lr" if args.adapter_learning_rates else "colony")
    if rendered_only(parser, args, name_of_results, render):
        return
    import genesis

    chosen = configs(args.adapter_learning_rates)
    replays: dict[str, list[dict]] = {name: [] for name in chosen}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if args.bundles:
            bundles = [Path(b) for b in args.bundles]
        else:
            run = genesis.evolve(population=6, generations=1, data=args.data, output=scratch / "runs",
                                 noise_probes=0, confirm=0)
            bundles = genesis.export_champions(run.path, top=3, out=scratch / "bundles")
        for seed in range(args.seeds):
            for number, (name, (count, copies, kind, lr)) in enumerate(chosen.items()):
                settings = genesis.ColonySettings(agent_weights=kind, population_cap=6,
                                                  **({"learning_rate": lr} if lr is not None else {}))
                colony = genesis.Colony.seed(scratch / f"{seed}-{number}", bundles[:count], settings, copies=copies)
                summary = genesis.simulate(colony, args.data, chunks=args.chunks, start=seed * args.chunks)
                summary.pop("series")
                replays[name].append(summary)
                print(name, seed, summary["online_ppl"], summary["forgetting"])
        genomes = [genesis.load_bundle(b).genome.describe() for b in bundles]
    results = {"machine": machine(), "chunks": args.chunks, "seeds": args.seeds, "champions": genomes,
               "replays": replays}
    path = write_results(name_of_results, results)
    update_readme(name_of_results, render(results))
    print(f"wrote {path}")


def _cell(values: list[float | None], digits: int = 1) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean, low, high = interval(values)
    return f"{mean:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def render(results: dict) -> str:
    """The README table of a results dict."""
    m = results["machine"]
    head = (f"Measured {m['measured']} on {m['cpu']} ({m['cores']} cores); champions: "
            f"{', '.join(results['champions'])}; {results['chunks']} chunks of 32 + 16 tokens per replay, "
            f"{results['seeds']} replays per colony (different test stretches and identities); "
            "online perplexity (each chunk predicted before anything learns from it), mean [95% t-interval].")
    rows = []
    for name, replays in results["replays"].items():
        online = [r["online_ppl"] for r in replays]
        forget = [r["forgetting"] for r in replays]
        rows.append([name, _cell([o["consensus"] for o in online]), _cell([o["frozen_best"] for o in online]),
                     _cell([o["learning_best"] for o in online]), _cell([o.get("soup") for o in online]),
                     _cell([o["learning_best"] - o["consensus"] for o in online]),
                     f"{_cell([f['agents_before_ppl'] for f in forget])} → {_cell([f['agents_after_ppl'] for f in forget])}",
                     f"{_cell([f['learning_best_before_ppl'] for f in forget])} → "
                     f"{_cell([f['learning_best_after_ppl'] for f in forget])}",
                     _cell([r["fisher"]["correlation_of_mean_fitness_rise_with_variance"] for r in replays], 2),
                     _cell([r["divisions"] for r in replays], 0)])
    return head + "\n\n" + table(
        ["colony", "consensus", "(a) best frozen", "(b) best learning alone", "(c) soup",
         "(b) minus consensus", "agents' validation ppl before → after", "learning alone, before → after",
         "Fisher r", "divisions"], rows)


if __name__ == "__main__":
    main()
