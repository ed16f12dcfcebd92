"""The recipe study: which brief training gives a fitness worth selecting on?

A fixed panel of architectures of the default space (the ten noisiest of the quick table,
its four best, and a stratified draw over depth and activation up to 24) is trained under
each candidate recipe with several seeds. Each candidate is scored on the panel's mean and
best validation loss, the share of the panel past the bigram baseline of the same text,
the pooled and 95th-percentile per-architecture seed sd, tokens and wall time; with
`--long`, also on the Spearman correlation of its panel means with the same recipe at 8x
the steps (one seed). How far one training's ranking can be trusted: the mean Spearman
correlation of the panel's ranking by one seed with its ranking by another seed ("seed vs
seed"), and with the quick table's 3-seed means ("vs table": today's quick with its own
data order per seed, so a recipe that lowers the seed noise by reading every training the
same batches shows here whether its rankings still agree with the average over orders).

Resumable: every training is one line of benchmarks/results/recipe_study/rows.jsonl,
appended and fsynced as it ends; a rerun trains only what is missing. The order is seed by
seed over all candidates, so a study stopped early still compares every candidate.

    python benchmarks/recipe_study.py --data DATA [--workers 2] [--seeds 5] [--long NAME ...]
    python benchmarks/recipe_study.py --render-only --data DATA   # results and README table only
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, benchmark_parser, machine, table, update_readme, write_results  # noqa: E402
from genesis.core.genome import Genome  # noqa: E402
from genesis.core.recipe import load_recipe  # noqa: E402
from genesis.core.records import training_seed  # noqa: E402
from genesis.runs.sweep import stratified_sample  # noqa: E402

FOLDER = RESULTS / "recipe_study"
QUICK_TABLE = RESULTS / "table-quick" / "table.csv"
PANEL_SIZE = 24
LONG_FACTOR = 8

BASE = "quick-adamw"  # the default recipe the study set out to improve (quick before it)
# name -> changes to the base recipe. Tokens per training stay at most 1.25x the base's.
CANDIDATES = {
    "quick": {},
    "adamw-mup": {"lr_base_width": 128},
    "muon-1e-2": {"optimizer": "muon", "muon_lr": 1e-2},
    "muon-2e-2": {"optimizer": "muon", "muon_lr": 2e-2},
    "muon-1e-2-b8x200": {"optimizer": "muon", "muon_lr": 1e-2, "batch_size": 8, "steps": 200,
                         "warmup_steps": 20},
    "muon-1e-2-125": {"optimizer": "muon", "muon_lr": 1e-2, "steps": 125, "warmup_steps": 12},
    "muon-1e-2-b8x250": {"optimizer": "muon", "muon_lr": 1e-2, "batch_size": 8, "steps": 250,
                         "warmup_steps": 25},
    "muon-1e-2-b8x250-lr6e-3": {"optimizer": "muon", "muon_lr": 1e-2, "batch_size": 8, "steps": 250,
                                "warmup_steps": 25, "lr": 6e-3, "min_lr": 6e-4},
}
QUICK = CANDIDATES["muon-1e-2-b8x250-lr6e-3"]  # the study's winner: today's `quick`
CANDIDATES |= {  # second round, on today's quick
    "quick+common-order": {**QUICK, "data_order": "common"},
    "quick+init-0.5": {**QUICK, "init_scale": 0.5},
    # third round: qk-layernorm, an architecture trait, at quick's rates and at rates twice
    # as high (the instability it cures is what limits the rate, Wortsman et al. 2023)
    "quick+qk-norm": QUICK,
    "quick+qk-norm-2x-lr": {**QUICK, "muon_lr": 2e-2, "lr": 1.2e-2, "min_lr": 1.2e-3},
}
# name -> traits every panel architecture takes under that candidate (rows keep the panel
# architecture's training id, so candidates compare architecture by architecture)
TRAIT_CHANGES = {"quick+qk-norm": {"qk_norm": "on"}, "quick+qk-norm-2x-lr": {"qk_norm": "on"}}
TRUTH_TABLE = RESULTS / "table-quick-muon" / "table.csv"  # today's quick, seeded order, 3 seeds of everything


def panel() -> list[Genome]:
    """The study's architectures: the quick table's ten noisiest and four best, then a
    stratified draw over (depth, activation) cells up to `PANEL_SIZE`."""
    by_arch: dict[tuple, list[float]] = {}
    for row in csv.DictReader(QUICK_TABLE.open()):
        key = (int(row["n_layer"]), int(row["n_head"]), int(row["d_model"]), row["activation"])
        by_arch.setdefault(key, []).append(float(row["val_loss"]))
    noisiest = sorted(by_arch, key=lambda k: -statistics.stdev(by_arch[k]))[:10]
    best = sorted(by_arch, key=lambda k: statistics.mean(by_arch[k]))[:4]
    chosen = list(dict.fromkeys(noisiest + best))
    everything = [_genome(key) for key in sorted(by_arch)]
    for genome in stratified_sample(everything, len(everything), seed=0):
        if len(chosen) >= PANEL_SIZE:
            break
        key = (genome.n_layer, genome.n_head, genome.d_model, genome.activation)
        if key not in chosen:
            chosen.append(key)
    return [_genome(key) for key in chosen]


def _genome(key: tuple) -> Genome:
    n_layer, n_head, d_model, activation = key
    return Genome(n_layer=n_layer, n_head=n_head, d_model=d_model, activation=activation, sigma=1e-4)


def _recipe(name: str, long: bool = False):
    recipe = dataclasses.replace(load_recipe(BASE), name=name, **CANDIDATES[name])
    if long:
        recipe = dataclasses.replace(recipe, name=f"{name}-long", steps=recipe.steps * LONG_FACTOR,
                                     warmup_steps=recipe.warmup_steps * LONG_FACTOR // 2)
    return recipe


def _train_one(job: dict) -> dict:
    import torch

    from genesis.train.data import load_data
    from genesis.train.trainer import train

    torch.set_num_threads(1)
    data = load_data(job["data"])
    architecture = Genome.from_dict(job["genome"])
    genome = dataclasses.replace(architecture, **TRAIT_CHANGES.get(job["candidate"], {}))
    recipe = _recipe(job["candidate"], job["long"])
    # the panel architecture's seed: a trait candidate trains from the same seed as the rest
    outcome = train(genome, recipe, data, training_seed(job["seed"], architecture.training_id))
    return {"candidate": recipe.name, "training_id": architecture.training_id, "genome": genome.to_dict(),
            "seed": job["seed"], **outcome.to_dict()}  # the recipe follows from the candidate's name


def _done() -> set[tuple]:
    rows_file = FOLDER / "rows.jsonl"
    if not rows_file.exists():
        return set()
    keys = set()
    for line in rows_file.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line from a killed study: trained again
        keys.add((row["candidate"], row["training_id"], row["seed"]))
    return keys


def run(data: str, seeds: int, workers: int, long: list[str], candidates: list[str]) -> None:
    """Train every missing (candidate, architecture, seed), appending rows as they end."""
    FOLDER.mkdir(parents=True, exist_ok=True)
    done = _done()
    genomes = panel()
    jobs = [{"data": data, "candidate": name, "genome": g.to_dict(), "seed": seed, "long": False}
            for seed in range(seeds) for name in candidates for g in genomes]
    jobs += [{"data": data, "candidate": name, "genome": g.to_dict(), "seed": 0, "long": True}
             for name in long for g in genomes]
    jobs = [job for job in jobs if (_recipe(job["candidate"], job["long"]).name,
                                    Genome.from_dict(job["genome"]).training_id, job["seed"]) not in done]
    print(f"{len(jobs)} trainings to go", flush=True)
    with ProcessPoolExecutor(workers) as pool, (FOLDER / "rows.jsonl").open("a") as out:
        for count, row in enumerate(pool.map(_train_one, jobs), 1):
            out.write(json.dumps(row) + "\n")
            out.flush()
            os.fsync(out.fileno())
            print(f"{count}/{len(jobs)} {row['candidate']} {row['training_id']} s{row['seed']} "
                  f"{row['status']} {row.get('val_loss')}", flush=True)


def summarize(data: str | None) -> dict:
    """Score every candidate on the rows so far."""
    rows = [json.loads(line) for line in (FOLDER / "rows.jsonl").read_text().splitlines() if line.strip()]
    reference = None
    if data:
        from genesis.train.data import load_data
        from genesis.train.ngram import baselines

        tokens = load_data(data)
        reference = baselines(tokens.train, tokens.valid, tokens.test, tokens.vocab_size).to_dict()
    panel_ids = [g.training_id for g in panel()]
    truth = _truth()
    results = {}
    for name in CANDIDATES:
        mine = [r for r in rows if r["candidate"] == name]
        if not mine:
            continue
        losses = {tid: [r["val_loss"] if r["status"] == "ok" else math.inf for r in mine if r["training_id"] == tid]
                  for tid in panel_ids}
        complete = {tid: v for tid, v in losses.items() if v}
        means = {tid: statistics.mean(v) for tid, v in complete.items()}
        sds = [statistics.stdev(v) for v in complete.values() if len(v) >= 2 and all(map(math.isfinite, v))]
        pooled = math.sqrt(sum((len(v) - 1) * statistics.variance(v) for v in complete.values()
                               if len(v) >= 2 and all(map(math.isfinite, v)))
                           / max(1, sum(len(v) - 1 for v in complete.values() if len(v) >= 2))) if sds else None
        by_seed = {seed: {r["training_id"]: r["val_loss"] for r in mine if r["status"] == "ok" and r["seed"] == seed}
                    for seed in {r["seed"] for r in mine}}
        long_rows = {r["training_id"]: r["val_loss"] for r in rows
                     if r["candidate"] == f"{name}-long" and r["status"] == "ok"}
        shared = [tid for tid in means if tid in long_rows and math.isfinite(means[tid])]
        results[name] = {
            "changes": CANDIDATES[name], "traits": TRAIT_CHANGES.get(name, {}), "trainings": len(mine),
            "failed": sum(r["status"] != "ok" for r in mine),
            "seeds": min(len(v) for v in complete.values()),
            "mean_val_loss": statistics.mean(means.values()), "best_val_loss": min(means.values()),
            "past_bigram": (sum(m < reference["bigram_val"] for m in means.values()) / len(means)
                            if reference else None),
            "pooled_sd": pooled, "p95_sd": float(np.percentile(sds, 95)) if sds else None,
            "max_sd": max(sds) if sds else None,
            "tokens": _recipe(name).tokens,
            "median_wall_s": statistics.median(r["wall_s"] for r in mine if r.get("wall_s")),
            "spearman_long": (float(spearmanr([means[t] for t in shared], [long_rows[t] for t in shared])[0])
                              if len(shared) >= 5 else None),
            "long_architectures": len(shared),
            "seed_vs_seed": _mean_spearman([(a, b) for i, a in enumerate(by_seed.values())
                                            for b in list(by_seed.values())[i + 1:]]),
            "seed_vs_table": _mean_spearman([(one, truth) for one in by_seed.values()]),
        }
    return {"machine": machine(), "panel": [g.describe() for g in panel()], "baselines": reference,
            "candidates": results}


def _truth() -> dict[str, float]:
    """Mean validation loss per architecture over the quick table's first 3 seeds."""
    losses: dict[str, list[float]] = {}
    for row in csv.DictReader(TRUTH_TABLE.open()):
        if row["status"] == "ok" and int(row["seed"]) < 3:
            losses.setdefault(row["training_id"], []).append(float(row["val_loss"]))
    return {tid: statistics.mean(v) for tid, v in losses.items()}


def _mean_spearman(pairs: list[tuple[dict, dict]]) -> float | None:
    """The mean Spearman correlation of each pair of rankings, over the architectures both hold."""
    values = []
    for a, b in pairs:
        shared = [tid for tid in a if tid in b]
        if len(shared) >= 5:
            values.append(float(spearmanr([a[t] for t in shared], [b[t] for t in shared])[0]))
    return statistics.mean(values) if values else None


def render(results: dict) -> str:
    """The README table of the study."""
    def number(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [[name, str(r["seeds"]), number(r["mean_val_loss"]), number(r["best_val_loss"]),
             number(r["past_bigram"], 2), number(r["pooled_sd"]), number(r["p95_sd"]), number(r["max_sd"]),
             f"{r['tokens']:,}", number(r["median_wall_s"], 1), number(r["spearman_long"], 2),
             number(r.get("seed_vs_seed"), 2), number(r.get("seed_vs_table"), 2)]
            for name, r in results["candidates"].items()]
    base = results.get("baselines") or {}
    return (f"Panel of {len(results['panel'])} architectures; bigram baseline (Kneser-Ney) "
            f"{number(base.get('bigram_val'))} nats, unigram {number(base.get('unigram_val'))}.\n\n"
            + table(["candidate", "seeds", "mean val loss", "best", "past bigram", "pooled sd", "p95 sd",
                     "max sd", "tokens", "wall s (median)", "Spearman vs 8x", "seed vs seed",
                     "one seed vs table"], rows))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--long", nargs="*", default=[], help="candidates to train 8x longer (seed 0)")
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    args = parser.parse_args()
    args.data = args.data or os.environ.get("GENESIS_DATA")
    if not args.render_only:
        if not args.data:
            parser.error("--data (or GENESIS_DATA) is needed to train")
        started = time.time()
        run(args.data, args.seeds, args.workers, args.long, args.candidates)
        print(f"done in {time.time() - started:.0f} s")
    results = summarize(args.data)
    write_results("recipe_study", results)
    update_readme("recipe_study", render(results))


if __name__ == "__main__":
    main()
