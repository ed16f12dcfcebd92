"""Search efficiency: the best validation perplexity each strategy reaches for the compute
it spends.

Every strategy runs with several seeds under one equal compute budget counted in
training tokens (`genesis evolve --budget-tokens`): cached repeats are free, successive
halving pays for every rung it trains, an early-stopped training pays for the steps it
ran. A strategy learns only between generations, so its curve is a step function: the
best full-budget perplexity known after each generation, against the compute spent by
then. Reported per strategy: median and spread (min-max over seeds) of the best
perplexity at half and at the whole budget, and for multi-fidelity variants the compute
each seed needed to reach the best of single-fidelity evolution with the same seed (both
start from the same random generation 0), or by how much it fell short.

    python benchmarks/search_efficiency.py --data /path/to/wikitext-2
    python benchmarks/search_efficiency.py --data ... --strategies aging,tpe --skip-done

Each finished (strategy, seed) is written to benchmarks/results/search_efficiency.json at
once, so an interrupted benchmark continues with --skip-done. Writes the JSON, a plot
(search_efficiency.png) and the table in benchmarks/README.md.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time

from common import (
    RESULTS,
    benchmark_parser,
    machine,
    read_results,
    rendered_only,
    table,
    update_readme,
    write_results,
)

NAME = "search_efficiency"
STRATEGIES = {  # name -> EvolutionConfig fields, and the `rungs` / `early_stop` of genesis.evolve
    "random": {"strategy": "random"},
    "tpe": {"strategy": "tpe"},
    "nsga2-optuna": {"strategy": "nsga2-optuna"},
    "evolution": {"strategy": "evolution"},
    "aging": {"strategy": "aging"},
    "evolution+halving": {"strategy": "evolution", "rungs": (0.25, 0.5, 1.0)},
    "evolution+early-stop": {"strategy": "evolution", "early_stop": 0.5},
    "evolution+early-stop-0.75": {"strategy": "evolution", "early_stop": 0.75},
}
SINGLE_FIDELITY = "evolution"  # the reference the multi-fidelity variants must match
GRID_POINTS = 48


def run_strategy(name: str, seed: int, tokens, recipe, population: int, budget: int) -> dict:
    """Evolve with strategy `name` until `budget` tokens are spent; its compute curve."""
    import genesis
    from genesis.search.loop import EvolutionConfig

    settings = dict(STRATEGIES[name])
    fidelity = {"rungs": settings.pop("rungs", (1.0,)), "early_stop": settings.pop("early_stop", 0.0)}
    with tempfile.TemporaryDirectory() as output:
        started = time.perf_counter()
        run = genesis.evolve(population=population, generations=10_000, recipe=recipe, data=tokens,
                             seed=seed, output=output, evolution=EvolutionConfig(**settings),
                             budget_tokens=budget, **fidelity)
        wall = time.perf_counter() - started
    return {"seed": seed, "wall_s": wall, "curve": compute_curve(run.records),
            "evaluations": len(run.records), "trained": sum(1 for r in run.records if not r.cached),
            "full_budget_trainings": sum(1 for r in run.records
                                         if not r.cached and r.outcome.tokens == recipe.tokens),
            "given_up": sum(1 for r in run.records if not r.cached and r.outcome.stopped_at is not None)}


def compute_curve(records) -> list[list[float]]:
    """[compute spent, best full-budget ppl so far] at the end of every generation."""
    from genesis.report.build import convergence

    curve, best = [], float("inf")
    for row in convergence(records)["generations"]:
        best = min(best, row["best_ppl"] or float("inf"))
        curve.append([row["compute_tokens"], best if best < float("inf") else None])
    return curve


def best_at(curve: list[list[float]], compute: float) -> float | None:
    """The best perplexity known once `compute` tokens were spent (step function)."""
    known = [ppl for spent, ppl in curve if spent <= compute and ppl is not None]
    return min(known) if known else None


def compute_to_reach(curve: list[list[float]], target: float) -> float | None:
    """The compute after which the curve first reached `target`, None if it never did."""
    return next((spent for spent, ppl in curve if ppl is not None and ppl <= target), None)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per strategy")
    parser.add_argument("--population", type=int, default=6, help="genomes per generation")
    parser.add_argument("--budget", type=float, default=24,
                        help="compute budget in full trainings of the recipe (tokens = budget x recipe tokens)")
    parser.add_argument("--recipe", default="quick")
    parser.add_argument("--skip-done", action="store_true", help="keep (strategy, seed) pairs already measured")
    args = parser.parse_args()
    if rendered_only(parser, args, NAME, summarize_and_render):
        return
    from genesis.core.recipe import load_recipe
    from genesis.train.data import load_data

    recipe = load_recipe(args.recipe)
    tokens = load_data(args.data, recipe.vocab_size)
    budget = int(args.budget * recipe.tokens)
    settings = {"population": args.population, "budget_tokens": budget, "recipe": recipe.to_dict(),
                "seeds": args.seeds}
    results = read_results(NAME) if (RESULTS / f"{NAME}.json").exists() else {}
    if results.get("settings") != settings:
        results = {"settings": settings, "strategies": {}}
    for name in [s.strip() for s in args.strategies.split(",") if s.strip()]:
        if name not in STRATEGIES:
            parser.error(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
        runs = results["strategies"].setdefault(name, {})
        for seed in range(args.seeds):
            if args.skip_done and str(seed) in runs:
                continue
            runs[str(seed)] = run_strategy(name, seed, tokens, recipe, args.population, budget)
            final = best_at(runs[str(seed)]["curve"], budget)
            print(f"{name} seed {seed}: best ppl {final:.1f} in {runs[str(seed)]['wall_s'] / 60:.1f} min",
                  flush=True)
            results["machine"] = machine()
            write_results(NAME, results)
    update_readme(NAME, summarize_and_render(results))
    write_results(NAME, results)
    print(json.dumps({name: entry["full"] for name, entry in results["summary"].items()}, indent=2))


def summarize_and_render(results: dict) -> str:
    """Summarize the runs into `results`, draw the plot and return the README table."""
    summarize(results)
    plot(results)
    return render(results)


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(results: dict) -> None:
    """Add median/spread at half and full budget, curves on a grid, and compute-to-match."""
    budget = results["settings"]["budget_tokens"]
    grid = [budget * i / GRID_POINTS for i in range(1, GRID_POINTS + 1)]
    summary = {}
    for name, runs in results["strategies"].items():
        curves = [run["curve"] for run in runs.values()]
        at = {label: [best_at(c, budget * share) for c in curves] for label, share in (("half", 0.5), ("full", 1))}
        summary[name] = {
            "seeds": len(curves),
            **{label: _spread(v) if None not in v else None for label, v in at.items()},
            "grid": [[g, *(_spread(v).values() if None not in (v := [best_at(c, g) for c in curves])
                           else (None, None, None))] for g in grid],
            "trained": statistics.median(run["trained"] for run in runs.values()),
            "wall_min": statistics.median(run["wall_s"] / 60 for run in runs.values()),
        }
    reference = results["strategies"].get(SINGLE_FIDELITY, {})
    for name, entry in summary.items():
        if name == SINGLE_FIDELITY or "+" not in name:
            continue
        # paired by seed: a seed's strategies all start from the same random generation 0
        entry["to_reach_single_fidelity"] = []
        for seed, run in results["strategies"][name].items():
            if seed not in reference:
                continue
            target = best_at(reference[seed]["curve"], budget)
            reached = compute_to_reach(run["curve"], target)
            entry["to_reach_single_fidelity"].append({
                "seed": int(seed), "target_ppl": target,
                "compute_share": None if reached is None or reached > budget else reached / budget,
                "final_minus_target_ppl": best_at(run["curve"], budget) - target})
    results["summary"] = summary


def plot(results: dict) -> None:
    """Left: the median best perplexity of each strategy against compute. Right: every
    seed's best at the whole budget, with the median marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (curves, finals) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    order = sorted(results["summary"], key=lambda n: results["summary"][n]["full"]["median"])
    for position, name in enumerate(order):
        entry = results["summary"][name]
        points = [(g / 1e6, median) for g, median, _, _ in entry["grid"] if median is not None]
        line, = curves.step(*zip(*points), where="post", label=name, linewidth=1.8,
                            linestyle=("-", "--", "-.", ":")[position % 4])
        seeds = [best_at(run["curve"], results["settings"]["budget_tokens"])
                 for run in results["strategies"][name].values()]
        finals.scatter(seeds, [position] * len(seeds), color=line.get_color(), s=30, alpha=0.7)
        finals.scatter([entry["full"]["median"]], [position], color=line.get_color(), marker="|", s=400)
    curves.set(xlabel="compute spent (million training tokens)", ylabel="best validation perplexity (median)",
               title=f"Median over {results['settings']['seeds']} seeds")
    curves.legend()
    finals.set_yticks(range(len(order)), order)
    finals.invert_yaxis()
    finals.set(xlabel="best validation perplexity at the whole budget", title="Each seed (dots), median (bar)")
    for axis in (curves, finals):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(RESULTS / f"{NAME}.png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def render(results: dict) -> str:
    """The README table of a results dict."""
    settings, summary = results["settings"], results["summary"]
    full_training = settings["recipe"]["steps"] * settings["recipe"]["batch_size"] * settings["recipe"]["seq_len"]

    def cell(spread: dict | None) -> str:
        return "-" if spread is None else f"{spread['median']:.1f} [{spread['min']:.1f}-{spread['max']:.1f}]"

    rows = []
    for name, entry in sorted(summary.items(), key=lambda item: item[1]["full"]["median"] if item[1]["full"] else 1e9):
        matched = ", ".join("never (+{:.1f})".format(r["final_minus_target_ppl"]) if r["compute_share"] is None
                            else f"{r['compute_share']:.0%}" for r in entry.get("to_reach_single_fidelity", []))
        rows.append([name, str(entry["seeds"]), cell(entry["half"]), f"**{cell(entry['full'])}**",
                     f"{entry['trained']:.0f}", f"{entry['wall_min']:.1f}", matched])
    m = results["machine"]
    return "\n".join([
        f"Measured {m['measured']} on {m['cpu']} ({m['cores']} cores). Budget: "
        f"{settings['budget_tokens'] / 1e6:.2f}M training tokens per run (= "
        f"{settings['budget_tokens'] / full_training:.0f} full trainings of the `{settings['recipe']['name']}` "
        f"recipe), population {settings['population']}, seeds 0-{settings['seeds'] - 1}. Best validation "
        "perplexity of a full-budget training known after the generation in which that much compute "
        "was spent: median [min-max] over seeds.",
        "",
        table(["strategy", "seeds", "best ppl at half budget", "best ppl at full budget",
               "trainings run (median)", "minutes (median)",
               f"compute to reach the same seed's {SINGLE_FIDELITY} best (seeds 0, 1, ...)"], rows),
        "",
        f"![best perplexity against compute](results/{NAME}.png)",
    ])


if __name__ == "__main__":
    main()
