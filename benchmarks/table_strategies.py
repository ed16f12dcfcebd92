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

What a user gets is the *confirmed* champion: after each budget, the run's best 3 at
selection so far are retrained on `--confirm-seeds` fresh table seeds, as a default run's
confirmation does (looked up with the table backend's own seed order, so it is what a
run stopped there would return), and the best mean test loss wins. Its compute counts
every training and retraining; its true regret is judged on the table seeds that neither
its selection nor its confirmation drew (the sweep's `--top` gives the best
architectures enough of them; where none is left, all seeds, and the share of such
fall-backs is recorded). Reported: that regret at the whole budget, and the compute to a
confirmed champion within 1% (median over seeds, ratio to random search's).

Runs are appended to benchmarks/results/table_strategies.jsonl as they finish (so an
interrupted benchmark continues where it was); the summary goes to
table_strategies[-TABLE]-p<population>-b<budget>.json and a plot beside it.
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
    "tpe+halving": {"strategy": "tpe", "rungs": (0.25, 0.5, 1.0)},
    # seeds spent on the ranking: every genome twice, or twice only while it may beat the incumbent
    "evolution+replicates-2": {"strategy": "evolution", "replicates": 2},
    "evolution+race-2": {"strategy": "evolution", "replicates": 2, "race": True},
    "random+race-2": {"strategy": "random", "replicates": 2, "race": True},
    "aging+race-2": {"strategy": "aging", "replicates": 2, "race": True},
}
EVALUATOR_FIELDS = {"rungs": (1.0,), "early_stop": 0.0, "replicates": 1, "race": False}  # genesis.evolve's
BUDGETS = (4, 8, 12, 16, 24, 32, 48, 64, 96)  # full trainings
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
    """Replay strategy `name` with `seed` on the table: its incumbent's regret trajectory,
    and at each budget the champion that confirming the run's records up to it returns."""
    import genesis
    from genesis.search.loop import EvolutionConfig

    name, seed, table, recipe, population, budget, losses, space, held_out, confirm_seeds = task
    truth = true_quality(losses, seed, held_out)
    settings = dict(STRATEGIES[name])
    fidelity = {key: settings.pop(key, default) for key, default in EVALUATOR_FIELDS.items()}
    with tempfile.TemporaryDirectory() as output:
        # a converged population spends no compute (the cache answers), so generations are capped too
        run = genesis.evolve(population=population, generations=4 * budget // population, recipe=recipe,
                             search_space=space,
                             backend=f"table:{table}", seed=seed, output=output, storage="memory",
                             evolution=EvolutionConfig(**settings), budget_tokens=budget * recipe.tokens,
                             noise_probes=0, confirm=0, **fidelity)
    best_true = min(truth.values())
    trajectory, spent, incumbent = [], 0, None
    for record in run.records:  # in (generation, index) order
        spent += record.compute_tokens
        if record.outcome.status == "ok" and (incumbent is None or record.outcome.rank() < incumbent.outcome.rank()):
            incumbent = record
            regret = 100 * (math.exp(truth[incumbent.genome.training_id] - best_true) - 1)
            trajectory.append([spent / recipe.tokens, regret])
    result = {"strategy": name, "seed": seed, "trajectory": trajectory,
              "champion": incumbent.genome.training_id if incumbent else None,
              "selection_val_ppl": incumbent.outcome.val_ppl if incumbent else None}
    if not held_out:  # confirmation would train on the held-out seeds
        result["confirmed"] = [confirm_at(run.records, b * recipe.tokens, seed, table, losses, fidelity["replicates"],
                                          confirm_seeds, best_true, recipe.tokens)
                               for b in BUDGETS if b <= budget]
    return result


_TABLES: dict = {}  # a worker's tables, read once


def confirm_at(records: list, tokens: float, seed: int, table: str, losses: dict, replicates: int,
               confirm_seeds: int, best_true: float, tokens_per_training: int) -> list:
    """What a run that stopped searching after `tokens` would return: its best 3 at
    selection among the records it had, each retrained on `confirm_seeds` fresh table
    seeds, the best mean test loss of those confirmed. Returns [compute in full trainings,
    search and confirmation together; the champion's true regret in %, judged on the
    table seeds that neither its selection nor its confirmation drew (all of them when
    none is left); whether it had to fall back to all]."""
    from genesis.core.noise import Retraining, best_full, confirmed_champions, fresh_replicates
    from genesis.core.records import training_seed
    from genesis.runs.backends.base import Job
    from genesis.runs.table import Table, TableBackend

    prefix, spent = [], 0
    for record in records:
        if spent + record.compute_tokens > tokens:
            break
        spent += record.compute_tokens
        prefix.append(record)
    backend = TableBackend(_TABLES.setdefault(table, Table(table)), seed)
    jobs = [Job(record.genome, training_seed(seed, record.genome.training_id, replicate), measure_test=True,
                replicate=replicate)
            for record in best_full(prefix, 3) for replicate in fresh_replicates((), replicates, confirm_seeds)]
    retrainings = [Retraining("confirm", 0, job.genome, job.replicate, outcome) for job, outcome in backend.run(jobs)]
    spent += sum(r.outcome.tokens for r in retrainings)
    champions = confirmed_champions(prefix, retrainings, 3)
    if not champions:
        return [spent / tokens_per_training, None, False]
    champion = champions[0]["training_id"]
    selecting = next(r for r in prefix if r.genome.training_id == champion and not r.cached)
    seeds = sorted(losses[champion])
    base = training_seed(seed, champion) % len(seeds)
    used = [*range(max(1, len(selecting.outcome.replicates))),
            *(r.replicate for r in retrainings if r.genome.training_id == champion and r.outcome.status == "ok")]
    drawn = {seeds[(base + r) % len(seeds)] for r in used}
    unseen = [losses[champion][s] for s in seeds if s not in drawn]
    truth = float(np.mean(unseen)) if unseen else float(np.mean(list(losses[champion].values())))
    return [spent / tokens_per_training, 100 * (math.exp(truth - best_true) - 1), not unseen]


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
        # the question on what a user gets: the champion confirmed after each budget, its
        # compute counting every training and retraining, and its true regret
        if all("confirmed" in r for r in mine):
            entry["confirmed"] = {}
            for k, b in enumerate(b for b in BUDGETS if b <= budget):
                regrets = np.array([r["confirmed"][k][1] for r in mine if r["confirmed"][k][1] is not None])
                compute = np.array([r["confirmed"][k][0] for r in mine])
                entry["confirmed"][b] = {"compute_median": float(np.median(compute)),
                                         "mean_regret": float(regrets.mean()),
                                         "mean_regret_ci": _interval(regrets, np.mean),
                                         "within_1": float(np.mean(regrets <= 1.0)),
                                         "fell_back": float(np.mean([r["confirmed"][k][2] for r in mine]))}
            reach = np.array([next((c for c, regret, _ in r["confirmed"] if regret is not None and regret <= 1.0),
                                   math.inf) for r in mine])
            entry["confirmed_compute_to_1"] = {"median": float(np.median(reach)),
                                               "median_ci": _interval(reach, np.median),
                                               "reached_share": float(np.mean(np.isfinite(reach)))}
        summary[name] = entry
    for key in ("compute_to_1", "confirmed_compute_to_1"):
        random_reach = summary.get("random", {}).get(key, {}).get("median")
        for entry in summary.values():
            reach = entry.get(key, {}).get("median")
            entry[f"{key}_vs_random"] = (reach / random_reach if random_reach and math.isfinite(random_reach)
                                         and reach is not None and math.isfinite(reach) else None)
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
    budget = settings["budget"]

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
        c = entry.get("confirmed")
        if not c:
            return "-", "-"
        last = c.get(str(budget)) or c.get(budget)
        low, high = last["mean_regret_ci"]
        r = entry["confirmed_compute_to_1"]
        ratio = entry.get("confirmed_compute_to_1_vs_random")
        if r["median"] is None or not math.isfinite(r["median"]):
            reached = f"not in half the runs ({r['reached_share']:.0%} reach it)"
        else:
            low_c, high_c = r["median_ci"]
            reached = (f"{r['median']:.1f} [{low_c:.1f}-{'-' if high_c is None else f'{high_c:.1f}'}]"
                       + (f", x{ratio:.2f} random's" if ratio else ""))
        return (f"{last['mean_regret']:.2f} [{low:.2f}-{high:.2f}] ({last['within_1']:.0%})", reached)

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
               f"champion confirmed after {budget} trainings: true regret, mean [95% CI] (share within 1%)",
               "compute to a confirmed champion within 1%, search and confirmation (median [95% CI])"], rows),
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
    parser.add_argument("--confirm-seeds", type=int, default=3,
                        help="fresh table seeds per confirmed champion (a default run's 3)")
    args = parser.parse_args()
    import genesis

    meta = json.loads((Path(args.table) / "table.json").read_text())
    recipe = genesis.Recipe(**meta["recipe"])
    losses = test_losses(args.table)
    truth = true_quality(losses)
    log = RESULTS / f"{NAME}.jsonl"
    settings = {"format": 2, "table": str(Path(args.table).resolve().relative_to(BENCHMARKS.parent)),
                "population": args.population, "budget": args.budget, "search_space": args.search_space}
    if args.held_out:
        settings["held_out"] = args.held_out
    else:
        settings["confirm_seeds"] = args.confirm_seeds
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    runs = [r for r in runs if r.get("settings") == settings]
    done = {(r["strategy"], r["seed"]) for r in runs}
    tasks = [(name, seed, args.table, recipe, args.population, args.budget, losses, args.search_space, args.held_out,
              args.confirm_seeds)
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
    table_name = Path(args.table).name.removeprefix("table-")
    tag = (f"{NAME}{'' if table_name == 'quick' else '-' + table_name}-p{args.population}-b{args.budget}"
           + (f"-h{args.held_out}" if args.held_out else ""))
    (RESULTS / f"{tag}.json").write_text(json.dumps(_finite(results), indent=2) + "\n")
    plot(summary, RESULTS / f"{tag}.png")
    from common import update_readme

    update_readme(tag, render(_finite(results), tag))
    print(render(_finite(results), tag))


if __name__ == "__main__":
    main()
