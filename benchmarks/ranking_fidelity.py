"""Ranking fidelity: does a brief training rank architectures the way a long one does?

Twelve genomes spread over the default search space are trained three times:

- at the default recipe's budget (`quick`, 100 steps);
- at 8x that budget (800 steps): the reference ranking;
- at equal wall-clock time: each genome gets as many steps as it can run in the median
  time of the 100-step trainings, from its own measured speed.

Reported: the validation losses and the Spearman correlation of each short ranking with
the 8x ranking. The result tells how far a cheap fidelity can be trusted, which is what
successive halving's rungs rely on.

    python benchmarks/ranking_fidelity.py --data /path/to/wikitext-2

Writes benchmarks/results/ranking_fidelity.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import dataclasses
import random
import statistics

from common import benchmark_parser, machine, rendered_only, table, update_readme, write_results
from scipy import stats

from genesis.core.recipe import load_recipe
from genesis.core.records import training_seed
from genesis.core.space import load_search_space
from genesis.train.data import load_data
from genesis.train.trainer import train

GENOMES = 12
LONG_FACTOR = 8


def spread_genomes(count: int, seed: int = 0):
    """`count` distinct genomes of the default space, layers and widths cycled for spread."""
    space = load_search_space()
    rng = random.Random(seed)
    layers, widths = space.domains["n_layer"].values, space.domains["d_model"].values
    genomes = []
    while len(genomes) < count:
        index = len(genomes)
        base = space.sample(rng)
        genome = space.repair(dataclasses.replace(base, n_layer=layers[index % len(layers)],
                                                  d_model=widths[(index * 3) % len(widths)]))
        if genome not in genomes:
            genomes.append(genome)
    return genomes


def main() -> None:
    parser = benchmark_parser(__doc__)
    args = parser.parse_args()
    if rendered_only(parser, args, "ranking_fidelity", render):
        return
    recipe = load_recipe("quick")
    tokens = load_data(args.data, recipe.vocab_size)
    genomes = spread_genomes(GENOMES)
    rows = []
    for genome in genomes:
        seed = training_seed(0, genome.id)
        short = train(genome, recipe, tokens, seed)
        long = train(genome, dataclasses.replace(recipe, steps=recipe.steps * LONG_FACTOR), tokens, seed)
        rows.append({"genome": genome.describe(), "short": short.to_dict(), "long": long.to_dict()})
        print(genome.describe(), short.val_loss, long.val_loss)
    budget_s = statistics.median(r["short"]["tokens"] / r["short"]["tokens_per_s"] for r in rows)
    tokens_per_step = recipe.batch_size * recipe.seq_len
    for genome, row in zip(genomes, rows):
        steps = max(recipe.warmup_steps + 1, round(budget_s * row["short"]["tokens_per_s"] / tokens_per_step))
        timed = train(genome, dataclasses.replace(recipe, steps=steps), tokens, training_seed(0, genome.id))
        row["equal_time"] = {**timed.to_dict(), "steps": steps}
        print(genome.describe(), "equal time", steps, timed.val_loss)
    long = [r["long"]["val_loss"] for r in rows]
    results = {
        "machine": machine(), "recipe": recipe.to_dict(), "long_factor": LONG_FACTOR,
        "equal_time_budget_s": budget_s, "genomes": rows,
        "spearman_short_vs_long": float(stats.spearmanr([r["short"]["val_loss"] for r in rows], long).statistic),
        "spearman_equal_time_vs_long": float(
            stats.spearmanr([r["equal_time"]["val_loss"] for r in rows], long).statistic),
    }
    path = write_results("ranking_fidelity", results)
    update_readme("ranking_fidelity", render(results))
    print(f"wrote {path}")


def render(results: dict) -> str:
    """The README table of a results dict."""
    rows = [[r["genome"], f"{r['short']['val_loss']:.3f}", f"{r['long']['val_loss']:.3f}",
             f"{r['equal_time']['val_loss']:.3f} ({r['equal_time']['steps']} steps)"]
            for r in sorted(results["genomes"], key=lambda r: r["long"]["val_loss"])]
    m = results["machine"]
    steps = results["recipe"]["steps"]
    return "\n".join([
        f"Measured {m['measured']} on {m['cpu']} ({m['cores']} cores): {len(rows)} genomes, validation "
        f"loss after {steps} steps, after {steps * results['long_factor']} steps, and after equal "
        f"wall-clock time ({results['equal_time_budget_s']:.1f} s of training each); sorted by the long run.",
        "",
        table(["genome", f"{steps} steps", f"{steps * results['long_factor']} steps", "equal time"], rows),
        "",
        f"Spearman with the {results['long_factor']}x ranking: {steps} steps "
        f"**{results['spearman_short_vs_long']:.2f}**, equal wall-clock "
        f"**{results['spearman_equal_time_vs_long']:.2f}**.",
    ])


if __name__ == "__main__":
    main()
