"""LightSeed: a colony whose identities are full-precision adapters over a ternary base.

One architecture (`--architecture`, default 3L 2H 128d relu, a champion of the default
space) is trained under `quick` twice: with fp32 weights and with ternary ones (BitNet
b1.58: the blocks' matrices quantization-aware, stored at 1.58 bits), and a smaller fp32
architecture of about the ternary model's bytes is trained too (the default space's
architecture of the same activation whose size is nearest). Each becomes a colony of six
adapter identities (rank 4, cap 6) that replays the held-out topic stream
(`--order blocks`, `--chunks` chunks, `--replays` stretches): its quality (online
perplexity of the consensus, the base frozen) against its bytes (the base as stored at
its precision, plus the adapters).

    python benchmarks/colony_lightseed.py --data /path/to/wikitext-2 --replays 4

Resumable: bundles and replays are kept in --work. Writes
benchmarks/results/colony_lightseed.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from colony import interval, trained_bundle
from common import benchmark_parser, machine, rendered_only, table, update_readme, write_results

COPIES = 6


def _bytes_matched(target, vocab: int, block: int):
    """The default space's fp32 architecture of `target`'s activation whose stored size is
    nearest the ternary `target`'s."""
    import genesis
    from genesis.runs.sweep import architectures
    from genesis.train.model import GPT, GPTConfig

    def size(genome) -> int:
        return GPT(GPTConfig.from_genome(genome, vocab, block)).size_bytes()

    goal = size(target)
    candidates = [g for g in architectures(genesis.load_search_space()) if g.activation == target.activation]
    return min(candidates, key=lambda g: (abs(size(g) - goal), g.training_id))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--architecture", default="3,2,128,relu", help="n_layer,n_head,d_model,activation")
    parser.add_argument("--replays", type=int, default=4)
    parser.add_argument("--chunks", type=int, default=80)
    parser.add_argument("--work", default=str(Path.home() / ".cache/genesis/benchmarks/colony_lightseed"))
    args = parser.parse_args()
    if rendered_only(parser, args, "colony_lightseed", render):
        return
    import genesis
    from genesis.colony.adapters import adapter_bytes as adapter_bytes_of

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    layers, heads, width, activation = args.architecture.split(",")
    fp32 = genesis.Genome(int(layers), int(heads), int(width), activation, 0.003)
    ternary = genesis.Genome(int(layers), int(heads), int(width), activation, 0.003, weight_precision="ternary")
    recipe = genesis.load_recipe()
    matched = _bytes_matched(ternary, recipe.vocab_size, recipe.seq_len)
    bases = {"ternary base": ternary, "fp32 base, same architecture": fp32, "fp32 base, same bytes": matched}
    log = work / "replays.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    results = {"machine": machine(), "chunks": args.chunks, "copies": COPIES, "bases": {}}
    for name, genome in bases.items():
        bundle = genesis.load_bundle(trained_bundle(args.data, work, genome))
        metrics = bundle.manifest["metrics"]
        runs = [r["summary"] for r in done if r["base"] == name and r["chunks"] == args.chunks]
        for replay in range(len(runs), args.replays):
            folder = work / "colony"
            shutil.rmtree(folder, ignore_errors=True)
            colony = genesis.Colony.seed(folder, [bundle.path], genesis.ColonySettings(population_cap=COPIES),
                                         copies=COPIES)
            adapter_bytes = sum(len(adapter_bytes_of(colony.weights.adapter(a))) for a in colony.agents())
            summary = genesis.simulate(colony, args.data, chunks=args.chunks, start=replay, order="blocks",
                                       out=work / "out")
            summary = {"online_ppl": summary["online_ppl"], "adapter_bytes": adapter_bytes}
            with log.open("a") as out:
                out.write(json.dumps({"base": name, "chunks": args.chunks, "summary": summary}) + "\n")
            runs.append(summary)
            print(name, replay, summary["online_ppl"], flush=True)
        results["bases"][name] = {"genome": bundle.genome.describe(), "val_loss": metrics["val_loss"],
                                  "base_bytes": metrics["size_bytes"], "params": metrics["params"], "replays": runs}
    path = write_results("colony_lightseed", results)
    update_readme("colony_lightseed", render(results))
    print(f"wrote {path}")


def render(results: dict) -> str:
    """The README table of a results dict."""
    m = results["machine"]
    rows = []
    for name, base in results["bases"].items():
        consensus = interval([r["online_ppl"]["consensus"] for r in base["replays"]])
        frozen = interval([r["online_ppl"]["frozen_best"] for r in base["replays"]])
        adapters = base["replays"][0]["adapter_bytes"]
        rows.append([name, base["genome"], f"{base['base_bytes'] / 1e6:.2f} MB", f"{adapters / 1e3:.0f} kB",
                     f"{2.718281828 ** base['val_loss']:.1f}",
                     f"{consensus[0]:.1f} [{consensus[1]:.1f}-{consensus[2]:.1f}]",
                     f"{frozen[0]:.1f} [{frozen[1]:.1f}-{frozen[2]:.1f}]"])
    ternary = results["bases"]["ternary base"]["replays"]
    paired = []
    for name in ("fp32 base, same architecture", "fp32 base, same bytes"):
        gains = [o["online_ppl"]["consensus"] - t["online_ppl"]["consensus"]
                 for o, t in zip(results["bases"][name]["replays"], ternary)]
        mean, low, high = interval(gains)
        paired.append([f"ternary base vs {name}", f"{mean:.1f} [{low:.1f}-{high:.1f}]"])
    head = (f"Measured {m['measured']} on {m['cpu']} ({m['cores']} cores); {results['copies']} adapter identities "
            f"per colony, {len(next(iter(results['bases'].values()))['replays'])} replays of {results['chunks']} "
            "chunks in topic blocks; online perplexity, mean [95% t-interval]. Base bytes count a "
            "ternary weight at 1.58 bits (`size_bytes`); the colony stores the latent fp32 weights it was trained with.")
    return "\n\n".join([head, table(["colony", "base", "base bytes (at its precision)", "adapters (all agents)",
                                      "base val ppl", "consensus ppl", "base frozen ppl"], rows),
                          table(["comparison (consensus perplexity gained, paired per replay)", "mean [95% CI]"],
                                paired)])


if __name__ == "__main__":
    main()
