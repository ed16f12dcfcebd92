"""The Genesis paper's claims, answered on the ground-truth tables.

1. Which traits matter most on the full factorial: eta² and fANOVA importance of each
   trait over every architecture, computed for each of the table's seeds separately
   (the spread over seeds is the interval) and with a bootstrap over architectures; at
   the `quick` budget and on the `long` subset. Is `n_layer` first?
2. Rank agreement: Spearman of quick vs long over the long subset, and of the
   non-embedding parameter count (a training-free proxy) with both.
3. Replayed evolution runs (default settings, `--backend table:`, many seeds):
   - do traits converge, and to the right values: share of each generation holding the
     best architecture's value of each trait, against generation 0;
   - does crossover combine strong traits: children's *true* quality (mean test loss
     over the table's seeds) against their best parent's, per operator;
   - how often one ordinary 32-evaluation run's report recovers the ground-truth trait
     ranking (Spearman between its eta² ranking and the full factorial's; same top trait).

    python benchmarks/ground_truth_claims.py --runs 200

Writes benchmarks/results/ground_truth_claims.json and prints the numbers the README
section quotes.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
TRAITS = ("n_layer", "n_head", "d_model", "activation")


def importance_by_seed(frame, space, fanova: bool = True) -> dict:
    """eta² (and fANOVA) of each trait over all architectures, once per table seed, and
    on the seed-mean loss with a bootstrap interval over architectures."""
    from genesis.core.genome import Genome
    from genesis.report.traitstats import eta_squared, fanova_importance, trait_effects

    per_seed = {}
    for seed, group in frame.groupby("seed"):
        genomes = [Genome(r.n_layer, r.n_head, r.d_model, r.activation, 0.01) for r in group.itertuples()]
        losses = group["val_loss"].to_numpy()
        per_seed[int(seed)] = {
            "eta2": {t: eta_squared([getattr(g, t) for g in genomes], losses) for t in TRAITS},
            "fanova": fanova_importance(genomes, losses, space, resamples=0).get("importances", {})
            if fanova else {}}
    mean = frame.groupby(["training_id", "n_layer", "n_head", "d_model", "activation"], as_index=False)["val_loss"].mean()
    genomes = [Genome(r.n_layer, r.n_head, r.d_model, r.activation, 0.01) for r in mean.itertuples()]
    effects = trait_effects(genomes, mean["val_loss"].to_numpy(), space, resamples=500,
                            fanova=fanova_importance(genomes, mean["val_loss"].to_numpy(), space, resamples=20)
                            if fanova else None)
    rows = {r["trait"]: r for r in effects["ranking"] if r["trait"] in TRAITS}
    summary = {}
    for t in TRAITS:
        seeds_eta = [s["eta2"][t] for s in per_seed.values()]
        seeds_fanova = [s["fanova"].get(t) for s in per_seed.values() if s["fanova"]]
        summary[t] = {
            "eta2_mean_loss": rows[t]["eta2"], "eta2_ci": [rows[t]["eta2_low"], rows[t]["eta2_high"]],
            "eta2_per_seed": seeds_eta, "fanova_mean_loss": rows[t]["fanova"],
            "fanova_ci": [rows[t]["fanova_low"], rows[t]["fanova_high"]], "fanova_per_seed": seeds_fanova,
            "p_holm": rows[t]["p_holm"], "best_value": rows[t].get("best_value"),
            "per_value": rows[t]["per_value"], "loss_spread": rows[t].get("loss_spread")}
    order = sorted(TRAITS, key=lambda t: -summary[t]["eta2_mean_loss"])
    return {"architectures": len(mean), "seeds": len(per_seed), "traits": summary, "eta2_order": order,
            "fanova_order": sorted(TRAITS, key=lambda t: -(summary[t]["fanova_mean_loss"] or 0))}


def seed_noise(frame) -> dict:
    """The seed noise of one training: pooled within-architecture standard deviation of
    validation and test loss over the table's seeds, overall and per model size."""
    from genesis.core.noise import pooled_sd

    def pooled(group, column):
        sd, df = pooled_sd([g[column].tolist() for _, g in group.groupby("training_id")])
        return {"sd": sd, "df": df, "ppl_percent": None if sd is None else 100 * (math.exp(sd) - 1)}

    return {"val": pooled(frame, "val_loss"), "test": pooled(frame, "test_loss"),
            "by_n_layer": {int(k): pooled(g, "val_loss") for k, g in frame.groupby("n_layer")},
            "by_d_model": {int(k): pooled(g, "val_loss") for k, g in frame.groupby("d_model")}}


def agreement(quick, long) -> dict:
    """Spearman of quick vs long (mean over seeds) on the long subset, and of the
    parameter-count proxy with both."""
    q = quick.groupby("training_id")[["val_loss", "non_embedding_params"]].mean()
    lg = long.groupby("training_id")["val_loss"].mean()
    common = q.index.intersection(lg.index)
    rho = lambda a, b: float(stats.spearmanr(a, b).statistic)  # noqa: E731
    return {"architectures": len(common),
            "quick_vs_long": rho(q.loc[common, "val_loss"], lg.loc[common]),
            "params_vs_quick_all": rho(q["non_embedding_params"], q["val_loss"]),
            "params_vs_quick_subset": rho(q.loc[common, "non_embedding_params"], q.loc[common, "val_loss"]),
            "params_vs_long": rho(q.loc[common, "non_embedding_params"], lg.loc[common])}


def replays(table: str, runs: int, truth: dict, ground_order: list, space) -> dict:
    """Default evolution runs replayed on the table: trait convergence, operator impact
    on true quality, and recovery of the ground-truth trait ranking by one run's report."""
    import genesis
    from genesis.report.traitstats import trait_effects

    best_id = min(truth, key=truth.get)
    frame = genesis.load_table(table)
    best = frame[frame["training_id"] == best_id].iloc[0]
    convergence = {t: [] for t in TRAITS}
    operators: dict[str, list[float]] = {}
    spearman, top_match, top_significant = [], 0, 0
    recipe = genesis.Recipe(**json.loads((Path(table) / "table.json").read_text())["recipe"])
    for seed in range(runs):
        with tempfile.TemporaryDirectory() as output:
            run = genesis.evolve(backend=f"table:{table}", recipe=recipe, seed=seed, output=output, search_space=space,
                                 storage="memory", noise_probes=0, confirm=0)
        for t in TRAITS:
            by_generation = {}
            for record in run.records:
                by_generation.setdefault(record.generation, []).append(getattr(record.genome, t) == best[t])
            convergence[t].append([float(np.mean(v)) for _, v in sorted(by_generation.items())])
        true_of = {r.genome_id: truth[r.genome.training_id] for r in run.records}
        for record in run.records:
            if record.parents and record.operator in ("crossover", "mutation", "crossover+mutation"):
                parents = [true_of[p] for p in record.parents if p in true_of]
                if parents:
                    operators.setdefault(record.operator, []).append(true_of[record.genome_id] - min(parents))
        distinct = {}
        for record in run.records:
            if record.outcome.status == "ok":
                distinct.setdefault(record.genome.training_id, record)
        effects = trait_effects([r.genome for r in distinct.values()],
                                [r.outcome.val_loss for r in distinct.values()], space, resamples=0)
        rows = [r for r in effects["ranking"] if r["trait"] in TRAITS]
        eta = {r["trait"]: r["effect"] if r["effect"] is not None else -1 for r in rows}
        run_order = sorted(TRAITS, key=lambda t: -eta[t])
        spearman.append(float(stats.spearmanr([ground_order.index(t) for t in TRAITS],
                                              [run_order.index(t) for t in TRAITS]).statistic))
        top_match += run_order[0] == ground_order[0]
        top_significant += any(r["significant"] for r in rows)
    generations = len(convergence[TRAITS[0]][0])
    return {
        "runs": runs,
        "best_architecture": {t: (best[t].item() if hasattr(best[t], "item") else best[t]) for t in TRAITS},
        "share_at_best_value": {t: [float(np.mean([c[g] for c in convergence[t]])) for g in range(generations)]
                                for t in TRAITS},
        "operators": {name: {"children": len(v), "improved_share": float(np.mean(np.array(v) < 0)),
                             "mean_true_change": float(np.mean(v))} for name, v in operators.items()},
        "trait_ranking_spearman_mean": float(np.nanmean(spearman)),
        "trait_ranking_spearman_quartiles": [float(q) for q in np.nanquantile(spearman, [0.25, 0.5, 0.75])],
        "top_trait_recovered_share": top_match / runs,
        "runs_with_a_significant_trait": top_significant / runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", default=str(RESULTS / "table-quick"))
    parser.add_argument("--long", default=str(RESULTS / "table-long"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--search-space", default="default")
    parser.add_argument("--out", default=str(RESULTS / "ground_truth_claims.json"))
    args = parser.parse_args()
    import genesis

    space = genesis.load_search_space(args.search_space)
    quick = genesis.load_table(args.quick)
    quick = quick[quick["status"] == "ok"]
    results = {"noise": seed_noise(quick), "quick": importance_by_seed(quick, space)}
    if (Path(args.long) / "table.csv").exists():
        long = genesis.load_table(args.long)
        long = long[long["status"] == "ok"]
        results["long"] = importance_by_seed(long, space)
        results["agreement"] = agreement(quick, long)
        results["noise_long"] = seed_noise(long)
    truth = quick.groupby("training_id")["test_loss"].mean().to_dict()
    results["replays"] = replays(args.quick, args.runs, truth, results["quick"]["eta2_order"], space)
    Path(args.out).write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
