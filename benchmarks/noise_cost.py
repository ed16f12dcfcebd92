"""What the noise floor and confirmed champions cost, and what they change.

1. Cost, measured on a real default run (`genesis evolve`, default noise settings: one
   probe per generation, 3 champions confirmed with 3 fresh seeds): wall time of the
   search's trainings against the retrainings', from the run folder's records.
2. Compute share and effect over many default runs replayed on the ground-truth table
   (`--backend table:`): retraining tokens and wall time (the sweep measured every
   training's) as a share of the search's; how often the
   confirmed champion differs from the best at selection; and the true quality (mean test
   loss over the table's seeds) of each. On a 3-seed table a model has only two seeds
   besides its selection seed, so confirmation there uses 2 fresh seeds and no probes.

    python benchmarks/noise_cost.py --run runs/<default-run> --runs 200

Writes benchmarks/results/noise_cost.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
SETTINGS = {  # noise settings whose added compute is measured
    "default (1 probe, 3 x 3 confirmed)": {},
    "1 probe, 3 x 2 confirmed": {"confirm_seeds": 2},
    "1 probe, 2 x 2 confirmed": {"confirm": 2, "confirm_seeds": 2},
    "no probes, 3 x 2 confirmed": {"noise_probes": 0, "confirm_seeds": 2},
}


def real_run_cost(path: str) -> dict:
    """Wall time and tokens of a finished run's search against its retrainings."""
    import genesis

    run = genesis.Run.load(path)
    summary = run.summary()
    search_wall = sum(r.outcome.wall_s for r in run.records if not r.cached)
    retrain_wall = sum(r.outcome.wall_s for r in run.retrainings)
    best = run.best(1)[0]
    confirmed = summary["confirmed"]
    return {
        "run": run.id, "search_wall_s": search_wall, "retraining_wall_s": retrain_wall,
        "added_wall_share": retrain_wall / search_wall,
        "search_tokens": summary["compute"]["search_tokens"],
        "retraining_tokens": summary["compute"]["noise_probe_tokens"] + summary["compute"]["confirmation_tokens"],
        "retrainings": len(run.retrainings), "noise": summary["noise"],
        "selection_best": {"traits": best.genome.describe(), "val_ppl": best.outcome.val_ppl},
        "confirmed": [{k: c[k] for k in ("traits", "test_ppl", "test_ppl_low", "test_ppl_high", "seeds",
                                         "selection_val_ppl", "within_noise_of_best")} for c in confirmed],
    }


def replays(table: str, runs: int) -> dict:
    """Default runs on the table: retraining compute share, and confirmed vs selection champion."""
    import genesis

    frame = genesis.load_table(table)
    truth = frame[frame["status"] == "ok"].groupby("training_id")["test_loss"].mean().to_dict()
    best_true = min(truth.values())
    recipe = genesis.Recipe(**json.loads((Path(table) / "table.json").read_text())["recipe"])
    shares = {name: [] for name in SETTINGS}
    wall_shares = {name: [] for name in SETTINGS}
    differs, regret_selected, regret_confirmed = 0, [], []
    for seed in range(runs):
        with tempfile.TemporaryDirectory() as output:
            for name, settings in SETTINGS.items():  # the compute each setting adds
                costed = genesis.evolve(backend=f"table:{table}", recipe=recipe, seed=seed, output=output,
                                        storage="memory", **settings)
                compute = costed.summary()["compute"]
                shares[name].append((compute["noise_probe_tokens"] + compute["confirmation_tokens"])
                                    / compute["search_tokens"])
                # wall time: the sweep measured every training, so the table answers with it
                search_wall = sum(r.outcome.wall_s for r in costed.records if not r.cached)
                wall_shares[name].append(sum(r.outcome.wall_s for r in costed.retrainings) / search_wall)
            run = genesis.evolve(backend=f"table:{table}", recipe=recipe, seed=seed, output=output,
                                 storage="memory", noise_probes=0, confirm=3, confirm_seeds=2)
            selected = run.best(1)[0].genome.training_id
            confirmed = run.champions(1)[0].genome.training_id
        differs += selected != confirmed
        regret_selected.append(100 * (math.exp(truth[selected] - best_true) - 1))
        regret_confirmed.append(100 * (math.exp(truth[confirmed] - best_true) - 1))
    gain = np.array(regret_selected) - np.array(regret_confirmed)
    rng = np.random.default_rng(0)
    draws = [gain[rng.integers(0, runs, runs)].mean() for _ in range(2000)]
    return {
        "runs": runs,
        "added": {name: {"settings": SETTINGS[name],
                         "compute_share_median": float(np.median(shares[name])),
                         "compute_share_quartiles": [float(q) for q in np.quantile(shares[name], [0.25, 0.75])],
                         "wall_share_median": float(np.median(wall_shares[name])),
                         "wall_share_quartiles": [float(q) for q in np.quantile(wall_shares[name], [0.25, 0.75])]}
                  for name in SETTINGS},
        "confirmed_differs_share": differs / runs,
        "true_regret_selected_mean": float(np.mean(regret_selected)),
        "true_regret_confirmed_mean": float(np.mean(regret_confirmed)),
        "regret_gain_mean": float(gain.mean()),
        "regret_gain_ci": [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a finished default run folder")
    parser.add_argument("--table", default=str(RESULTS / "table-quick"))
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    path = RESULTS / "noise_cost.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if args.run:
        results["real_run"] = real_run_cost(args.run)
    if args.runs:
        results["replays"] = replays(args.table, args.runs)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
