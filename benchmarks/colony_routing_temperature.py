"""How sharp should routing be? The posterior consensus at several routing temperatures τ,
against the global softmax, the uniform mixture, the best agent and the per-chunk oracle.

The three champions of benchmarks/colony_topics.py (`--bundles`, or its `--work` folder),
one frozen agent each, predict `--chunks` chunks of the held-out articles interleaved by
topic. For each chunk every agent's log-likelihood of the prompt's last 16 tokens and its
probabilities of the continuation are measured once; every mixture is then scored on the
same numbers: softmax(fitness / 0.1 + Σ log p(recent) / τ) for each τ (τ = 1: the plain
Bayesian posterior; τ → ∞: the global softmax), uniform, the fittest agent alone, and the
oracle that picks the best agent per chunk after the fact.

    python benchmarks/colony_routing_temperature.py --data /path/to/wikitext-2

Writes benchmarks/results/colony_routing_temperature.json and its README table.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from common import benchmark_parser, machine, rendered_only, table, update_readme, write_results

TEMPERATURES = (1, 2, 4, 8, 16, 32)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--chunks", type=int, default=160)
    parser.add_argument("--bundles", nargs="*", help="agent bundles (default: colony_topics' champions)")
    parser.add_argument("--work", default=str(Path.home() / ".cache/genesis/benchmarks/colony_topics"))
    args = parser.parse_args()
    if rendered_only(parser, args, "colony_routing_temperature", render):
        return
    import torch

    from genesis.colony import consensus
    from genesis.colony.bundle import load_bundle
    from genesis.colony.colony import Colony
    from genesis.colony.settings import ColonySettings
    from genesis.colony.topics import articles, fit_topics, ordered, topic_chunks
    from genesis.train.data import read_texts

    bundles = [Path(b) for b in args.bundles] if args.bundles else sorted((Path(args.work) / "bundles").iterdir())
    with tempfile.TemporaryDirectory() as scratch:
        colony = Colony.seed(Path(scratch) / "c", bundles, ColonySettings(), copies=1)
        texts, _ = read_texts(args.data)
        model = fit_topics(articles(texts["train"]), 4)
        pieces = ordered(topic_chunks(model, articles(texts["test"]), colony.tokenizer, 48), args.chunks,
                         "interleaved", 0)
        agents = colony.agents()
        fitness = torch.tensor([a.fitness for a in agents], dtype=torch.float64)
        nll = {**{f"routed, τ = {t}": 0.0 for t in TEMPERATURES},
               "global softmax": 0.0, "uniform": 0.0, "fittest agent alone": 0.0, "oracle (best agent per chunk)": 0.0}
        scored = 0
        for piece, _ in pieces:
            context = colony.tokenizer.encode(colony.tokenizer.decode(piece[:32])).ids
            target = colony.tokenizer.encode(colony.tokenizer.decode(piece[32:])).ids
            if not target:
                continue
            before, recent = consensus.routing_split(context, 16)
            evidence = colony.continuation_probs(agents, before, recent).double().log().sum(dim=1)
            probs = colony.continuation_probs(agents, context, target).double()  # (agents, T)
            mixtures = {f"routed, τ = {t}": torch.softmax(fitness / 0.1 + evidence / t, dim=0) for t in TEMPERATURES}
            mixtures["global softmax"] = torch.softmax(fitness / 0.1, dim=0)
            mixtures["uniform"] = torch.full_like(fitness, 1 / len(agents))
            for name, weights in mixtures.items():
                nll[name] -= float((weights[:, None] * probs).sum(0).log().sum())
            nll["fittest agent alone"] -= float(probs[int(fitness.argmax())].log().sum())
            nll["oracle (best agent per chunk)"] -= float(probs.log().sum(dim=1).max())
            scored += len(target)
        champions = [load_bundle(b).genome.describe() for b in bundles]
    results = {"machine": machine(), "chunks": len(pieces), "tokens": scored, "champions": champions,
               "perplexity": {name: math.exp(value / scored) for name, value in nll.items()}}
    path = write_results("colony_routing_temperature", results)
    update_readme("colony_routing_temperature", render(results))
    print(render(results))
    print(f"wrote {path}")


def render(results: dict) -> str:
    """The README table of a results dict."""
    m = results["machine"]
    head = (f"Measured {m['measured']} on {m['cpu']}; champions {', '.join(results['champions'])} (frozen, one "
            f"agent each); {results['chunks']} chunks ({results['tokens']} continuation tokens) of the held-out "
            "articles interleaved by topic.")
    rows = [[name, f"{ppl:.2f}"] for name, ppl in results["perplexity"].items()]
    return head + "\n\n" + table(["consensus", "perplexity"], rows)


if __name__ == "__main__":
    main()
