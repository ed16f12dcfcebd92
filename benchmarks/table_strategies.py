"""Search strategies judged against ground truth: each strategy replayed hundreds of
times on the sweep table (`genesis evolve --backend table:PATH`), scored by the *true*
quality of the champion it returns.

True quality of an architecture = its mean **test** loss over the table's seeds (never
seen by selection). A run returns its incumbent: the genome with the best validation
loss at full fidelity among those evaluated so far. Regret = how much worse the
incumbent's true perplexity is than the best architecture's, in percent. For every
(strategy, seed) the regret is followed against compute (in full trainings of the
recipe); reported per strategy: mean regret with a 95% bootstrap interval at several
budgets, the share of runs within 1% and 2% (about the seed noise) of the best, and the
compute each run needed to get within 1%: median over seeds with a bootstrap interval,
and its ratio to random search's.

    python benchmarks/table_strategies.py --table benchmarks/results/table-quick --seeds 200

Every run also confirms its champions as a default run does (the best 3 at selection,
with the table's two other seeds as fresh seeds): the confirmed champion's test
perplexity and true regret at the whole budget are the search-efficiency answer on what
a user gets, not on the selection-time minimum.

Runs are appended to benchmarks/results/table_strategies.jsonl as they finish (so an
interrupted benchmark continues where it was); the summary goes to
table_strategies-p<population>-b<budget>.json and a plot beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import tempfile
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
NAME = "table_strategies"
STRATEGIES = {  # name -> EvolutionConfig fields, and the `rungs` / `early_stop` of genesis.evolve
    "random": {"strategy": "random"},
    "evolution": {"strategy": "evolution"},
    "aging": {"strategy": "aging"},
    "tpe": {"strategy": "tpe"},
    "nsga2-optuna": {"strategy": "nsga2-optuna"},
    "evolution+early-stop-0.75": {"strategy": "evolution", "early_stop": 0.75},
    "evolution+halving": {"strategy": "evolution", "rungs": (0.25, 0.5, 1.0)},
    # seeds spent on the ranking: every genome twice, or twice only while it may beat the incumbent
    "evolution+replicates-2": {"strategy": "evolution", "replicates": 2},
    "evolution+race-2": {"strategy": "evolution", "replicates": 2, "race": True},
    "random+race-2": {"strategy": "random", "replicates": 2, "race": True},
    "aging+race-2": {"strategy": "aging", "replicates": 2, "race": True},
}
EVALUATOR_FIELDS = {"rungs": (1.0,), "early_stop": 0.0, "replicates": 1, "race": False}  # genesis.evolve's
BUDGETS = (8, 16, 24, 32, 64, 96)  # full trainings
THRESHOLDS = (1.0, 2.0)  # regret in percent of perplexity


def test_losses(table: str) -> dict[str, dict[int, float]]:
    """The test loss of every architecture at each of the table's seeds."""
    import genesis

    frame = genesis.load_table(table)
    losses: dict[str, dict[int, float]] = {}
    for row in frame[frame["status"] == "ok"].itertuples():
        losses.setdefault(row.training_id, {})[int(row.seed)] = float(row.test_loss)
    return losses


def true_quality(losses: dict[str, dict[int, float]], run_seed: int = 0, held_out: int = 0) -> dict[str, float]:
    """Mean test loss per architecture: over every seed of the table, or, with `held_out`,
    over the seeds a run with `run_seed` never trains on when selection uses at most
    `held_out` replicates (the table backend's replicate r is seed (base + r) mod K)."""
    from genesis.core.records import training_seed

    if not held_out:
        return {g: float(np.mean(list(seeds.values()))) for g, seeds in losses.items()}
    truth = {}
    for g, seeds in losses.items():
        order = sorted(seeds)
        base = training_seed(run_seed, g) % len(order)
        truth[g] = float(np.mean([seeds[order[(base + r) % len(order)]] for r in range(held_out, len(order))]))
    return truth


def run_one(task: tuple) -> dict:
    """Replay strategy `name` with `seed` on the table; its regret trajectory."""
    import genesis
    from genesis.search.loop import EvolutionConfig

    name, seed, table, recipe, population, budget, losses, space, held_out = task
    truth = true_quality(losses, seed, held_out)
    settings = dict(STRATEGIES[name])
    fidelity = {key: settings.pop(key, default) for key, default in EVALUATOR_FIELDS.items()}
    with tempfile.TemporaryDirectory() as output:
        # a converged population spends no compute (the cache answers), so generations are capped too
        # confirmation as a default run does it, with the table's two other seeds as fresh
        # seeds; none when the truth is a held-out seed (confirmation would train on it)
        run = genesis.evolve(population=population, generations=4 * budget // population, recipe=recipe,
                             search_space=space,
                             backend=f"table:{table}", seed=seed, output=output, storage="memory",
                             evolution=EvolutionConfig(**settings), budget_tokens=budget * recipe.tokens,
                             noise_probes=0, confirm=0 if held_out else 3, confirm_seeds=2, **fidelity)
        confirmed = run.summary()["confirmed"]
    best_true = min(truth.values())
    trajectory, spent, incumbent = [], 0, None
    for record in run.records:  # in (generation, index) order
        spent += record.compute_tokens
        if record.outcome.status == "ok" and (incumbent is None or record.outcome.rank() < incumbent.outcome.rank()):
            incumbent = record
            regret = 100 * (math.exp(truth[incumbent.genome.training_id] - best_true) - 1)
            trajectory.append([spent / recipe.tokens, regret])
    top = confirmed[0] if confirmed else None
    return {"strategy": name, "seed": seed, "trajectory": trajectory,
            "champion": incumbent.genome.training_id if incumbent else None,
            "selection_val_ppl": incumbent.outcome.val_ppl if incumbent else None,
            "confirmed_test_ppl": top["test_ppl"] if top else None,
            "confirmed_true_regret": 100 * (math.exp(truth[top["training_id"]] - best_true) - 1) if top else None}


def regret_at(trajectory: list, compute: float) -> float:
    known = [regret for spent, regret in trajectory if spent <= compute]
    return known[-1] if known else math.inf


def compute_to(trajectory: list, threshold: float) -> float:
    return next((spent for spent, regret in trajectory if regret <= threshold), math.inf)


def _interval(values: np.ndarray, statistic, resamples: int = 2000) -> list[float]:
    rng = np.random.default_rng(0)
    draws = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(resamples)]
    with np.errstate(invalid="ignore"):  # medians of runs that never got there are infinite
        return [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))]


def summarize(runs: list[dict], budget: int) -> dict:
    """Per strategy: regret at each budget, shares within thresholds, compute to 1%."""
    summary = {}
    for name in STRATEGIES:
        mine = [r for r in runs if r["strategy"] == name]
        if not mine:
            continue
        entry: dict = {"seeds": len(mine), "budgets": {}}
        for b in [b for b in BUDGETS if b <= budget]:
            regrets = np.array([regret_at(r["trajectory"], b) for r in mine])
            finite = regrets[np.isfinite(regrets)]
            entry["budgets"][b] = {
                "mean_regret": float(finite.mean()) if len(finite) else None,
                "mean_regret_ci": _interval(finite, np.mean) if len(finite) > 1 else None,
                "median_regret": float(np.median(regrets)),
                **{f"within_{t:g}": float(np.mean(regrets <= t)) for t in THRESHOLDS}}
        for t in THRESHOLDS:
            reach = np.array([compute_to(r["trajectory"], t) for r in mine])
            entry[f"compute_to_{t:g}"] = {
                "median": float(np.median(reach)),
                "median_ci": _interval(reach, np.median),
                "reached_share": float(np.mean(np.isfinite(reach)))}
        # anytime curve: mean regret and its 95% interval on a grid of compute
        grid = np.linspace(1, budget, 48)
        curve = []
        for g in grid:
            regrets = np.array([regret_at(r["trajectory"], g) for r in mine])
            finite = regrets[np.isfinite(regrets)]
            if len(finite) > 1:
                curve.append([float(g), float(finite.mean()), *_interval(finite, np.mean, 300)])
        entry["curve"] = curve
        # the search-efficiency question on what a user gets: the confirmed champion at the
        # whole budget, its test perplexity over fresh seeds and its true regret
        confirmed = np.array([r["confirmed_test_ppl"] for r in mine if r.get("confirmed_test_ppl")])
        regrets = np.array([r["confirmed_true_regret"] for r in mine if r.get("confirmed_true_regret") is not None])
        selected = np.array([r["selection_val_ppl"] for r in mine if r.get("selection_val_ppl")])
        if len(confirmed):
            entry["confirmed_test_ppl"] = {"median": float(np.median(confirmed)),
                                           "quartiles": [float(q) for q in np.quantile(confirmed, [0.25, 0.75])],
                                           "mean_ci": _interval(confirmed, np.mean)}
            entry["confirmed_true_regret_mean"] = float(regrets.mean())
            entry["confirmed_true_regret_ci"] = _interval(regrets, np.mean)
            entry["selection_val_ppl_median"] = float(np.median(selected))
        summary[name] = entry
    random_reach = summary.get("random", {}).get("compute_to_1", {}).get("median")
    for entry in summary.values():
        reach = entry["compute_to_1"]["median"]
        entry["compute_to_1_vs_random"] = (reach / random_reach if random_reach and math.isfinite(random_reach)
                                           and math.isfinite(reach) else None)
    return summary


def _finite(value):
    """JSON has no infinity: a threshold never reached is written as null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.8))
    for position, (name, entry) in enumerate(summary.items()):
        x, mean, low, high = zip(*entry["curve"])
        line, = axis.plot(x, mean, label=name, linestyle=("-", "--", "-.", ":")[position % 4])
        axis.fill_between(x, low, high, color=line.get_color(), alpha=0.15)
    axis.axhline(1.0, color="grey", linewidth=0.8)
    axis.set(xlabel="compute (full trainings)", ylabel="regret of the returned champion (% ppl, mean)",
             yscale="log", title=f"Strategies on the ground-truth table ({entry['seeds']} seeds each, 95% bands)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def render(results: dict, tag: str) -> str:
    """The README block: regret at each budget, compute to 1%, confirmed champions."""
    from common import table

    settings, summary = results["settings"], results["summary"]
    budgets = sorted({int(b) for e in summary.values() for b in e["budgets"]})

    def cell(entry, b):
        row = entry["budgets"].get(str(b)) or entry["budgets"].get(b)
        if not row or row["mean_regret"] is None:
            return "-"
        low, high = row["mean_regret_ci"] or (row["mean_regret"], row["mean_regret"])
        return f"{row['mean_regret']:.2f} [{low:.2f}-{high:.2f}] ({row['within_1']:.0%})"

    def reach(entry):
        r = entry["compute_to_1"]
        if r["median"] is None or not math.isfinite(r["median"]):
            return f"not in half the runs ({r['reached_share']:.0%} reach it)"
        low, high = r["median_ci"]
        ratio = entry.get("compute_to_1_vs_random")
        return (f"{r['median']:.0f} [{low:.0f}-{'-' if high is None or not math.isfinite(high) else f'{high:.0f}'}]"
                + (f", x{ratio:.2f} random's" if ratio else ""))

    def confirmed(entry):
        c = entry.get("confirmed_test_ppl")
        if not c:
            return "-", "-"
        q1, q3 = c["quartiles"]
        low, high = entry["confirmed_true_regret_ci"]
        return (f"{c['median']:.1f} [{q1:.1f}-{q3:.1f}]",
                f"{entry['confirmed_true_regret_mean']:.2f} [{low:.2f}-{high:.2f}]")

    rows = [[name, str(entry["seeds"]), *[cell(entry, b) for b in budgets], reach(entry), *confirmed(entry)]
            for name, entry in sorted(summary.items(), key=lambda item: item[1]["compute_to_1"]["median"] or 1e9)]
    return "\n".join([
        f"Table {settings['table']} ({results['architectures']} architectures; the best, by mean test "
        f"perplexity over the table's seeds, is {results['best_true_test_ppl']:.1f}; "
        + (f"each run is judged on the table seeds its selection never trains on with up to "
           f"{settings['held_out']} replicates (one truth per run seed, the same for every strategy), "
           "so no confirmation; " if settings.get("held_out") else "") +
        f"{results['architectures_within_1']} architectures are within 1% of it, "
        f"{results['architectures_within_2']} within 2%). Population {settings['population']}, "
        f"budget {settings['budget']} full trainings. Regret = how much worse (in % of perplexity) "
        "the true quality of the champion a run returns is than the best architecture's; "
        "mean [95% bootstrap interval] (share of runs within 1%).",
        "",
        table(["strategy", "runs", *[f"regret at {b} trainings" for b in budgets],
               "trainings to reach 1% regret (median [95% CI])",
               "confirmed champion: test ppl, median [quartiles]", "its true regret, mean [95% CI]"], rows),
        "",
        f"![regret against compute](results/{tag}.png)",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default=str(RESULTS / "table-quick"))
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--budget", type=int, default=max(BUDGETS), help="full trainings per run")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--search-space", default="default", help="a space the table covers")
    parser.add_argument("--held-out", type=int, default=0,
                        help="judge on the table's seeds that selection with at most this many replicates "
                        "never trains on (racing and replicates included); no confirmation then")
    args = parser.parse_args()
    import genesis

    meta = json.loads((Path(args.table) / "table.json").read_text())
    recipe = genesis.Recipe(**meta["recipe"])
    losses = test_losses(args.table)
    truth = true_quality(losses)
    log = RESULTS / f"{NAME}.jsonl"
    settings = {"table": str(Path(args.table).resolve().relative_to(BENCHMARKS.parent)),
                "population": args.population, "budget": args.budget, "search_space": args.search_space}
    if args.held_out:
        settings["held_out"] = args.held_out
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    runs = [r for r in runs if r.get("settings") == settings]
    done = {(r["strategy"], r["seed"]) for r in runs}
    tasks = [(name, seed, args.table, recipe, args.population, args.budget, losses, args.search_space, args.held_out)
             for name in args.strategies.split(",") for seed in range(args.seeds) if (name, seed) not in done]
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool, log.open("a") as out:
        for result in pool.imap_unordered(run_one, tasks):
            result["settings"] = settings
            out.write(json.dumps(result) + "\n")
            out.flush()
            runs.append(result)
    summary = summarize(runs, args.budget)
    best = min(truth, key=truth.get)
    results = {"settings": settings, "architectures": len(truth), "best_architecture": best,
               "best_true_test_ppl": math.exp(truth[best]),
               "architectures_within_1": sum(math.exp(v - truth[best]) - 1 <= 0.01 for v in truth.values()),
               "architectures_within_2": sum(math.exp(v - truth[best]) - 1 <= 0.02 for v in truth.values()),
               "summary": summary}
    tag = f"{NAME}-p{args.population}-b{args.budget}" + (f"-h{args.held_out}" if args.held_out else "")
    (RESULTS / f"{tag}.json").write_text(json.dumps(_finite(results), indent=2) + "\n")
    plot(summary, RESULTS / f"{tag}.png")
    from common import update_readme

    update_readme(tag, render(_finite(results), tag))
    print(render(_finite(results), tag))


if __name__ == "__main__":
    main()
