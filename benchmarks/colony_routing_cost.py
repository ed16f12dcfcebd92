"""What routing costs: the ask latency of a 64-agent consensus, global and routed,
against one agent's ask, on one base.

A colony of 64 adapter agents over one champion (`--bundle`, or one trained now under
`quick`) answers the same prompt (23 tokens) with 16 new tokens: by one agent (top-k, k = 1),
by all 64 under the global fitness softmax, by all 64 under the posterior consensus
(which reads each agent's likelihood of the prompt's last 16 tokens first: one batched
pass of the base), and routed sparsely: the posterior read over all 64, but only the 4 or
2 agents with the largest shares decode (`answering`); and routed by niche (a colony of
the same 64 agents with 4 niches fitted on 512 scored memories of the test split: no
model pass, the prompt's tf-idf vector picks the niche), all or 2 answering. Median of
`--rounds`, all in one process, as ratios to one agent.

    python benchmarks/colony_routing_cost.py --data /path/to/wikitext-2

Writes benchmarks/results/colony_routing_cost.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from colony_scaling import champion_bundle, timed
from common import benchmark_parser, machine, rendered_only, table, update_readme, write_results

AGENTS, NEW_TOKENS, NICHE_MEMORIES = 64, 16, 512
PROMPT = "The history of the city is long : it was founded by the Romans in the first century , and"
POLICIES = {"one agent": {"consensus": "top_k", "consensus_top_k": 1},
            "64 agents, global softmax": {"consensus": "softmax"},
            "64 agents, routed (posterior)": {"consensus": "posterior"},
            "64 agents, routed (posterior), 4 answer": {"consensus": "posterior", "answering": 4},
            "64 agents, routed (posterior), 2 answer": {"consensus": "posterior", "answering": 2}}
NICHE_POLICIES = {"64 agents, routed (niche)": {"consensus": "niche"},
                  "64 agents, routed (niche), 2 answer": {"consensus": "niche", "answering": 2}}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--bundle", help="an agent bundle to use instead of training one")
    args = parser.parse_args()
    if rendered_only(parser, args, "colony_routing_cost", render):
        return
    from genesis.colony.bundle import load_bundle
    from genesis.colony.colony import Colony
    from genesis.colony.settings import ColonySettings

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        bundle = Path(args.bundle) if args.bundle else champion_bundle(args.data, scratch)
        colony = Colony.seed(scratch / "colony", [bundle], ColonySettings(
            population_cap=10_000, division_threshold=1_000_000, adapt_steps=0), copies=AGENTS)
        niched = Colony.seed(scratch / "niched", [bundle], ColonySettings(
            population_cap=10_000, division_threshold=1_000_000, adapt_steps=0, niches=4), copies=AGENTS)
        for prompt, continuation in _chunks(args.data, niched.tokenizer, NICHE_MEMORIES):
            niched.teach(prompt, continuation)
        latency = {}
        for policies, asked in ((POLICIES, colony), (NICHE_POLICIES, niched)):
            for name, fields in policies.items():
                asked.settings = dataclasses.replace(asked.settings, **fields)
                asked.ask(PROMPT, max_tokens=NEW_TOKENS, seed=0)  # loads the agents once
                latency[name] = timed(lambda: asked.ask(PROMPT, max_tokens=NEW_TOKENS, seed=0), args.rounds)
                print(name, latency[name])
        genome = load_bundle(bundle).genome.describe()
    results = {"machine": machine(), "genome": genome, "agents": AGENTS, "new_tokens": NEW_TOKENS,
               "prompt_tokens": len(colony.tokenizer.encode(PROMPT).ids), "rounds": args.rounds,
               "ask_latency_s": latency}
    path = write_results("colony_routing_cost", results)
    update_readme("colony_routing_cost", render(results))
    print(f"wrote {path}")


def _chunks(data: str, tokenizer, count: int) -> list[tuple[str, str]]:
    """The test split's first `count` chunks of 32 + 16 tokens, as (prompt, continuation)."""
    from genesis.train.data import load_data

    tokens = load_data(data, tokenizer.get_vocab_size()).split("test")
    windows = [tokens[i:i + 48].tolist() for i in range(0, 48 * count, 48)]
    return [(tokenizer.decode(w[:32]), tokenizer.decode(w[32:])) for w in windows]


def render(results: dict) -> str:
    """The README table of a results dict."""
    m, latency = results["machine"], results["ask_latency_s"]
    one = latency["one agent"]
    head = (f"Measured {m['measured']} on {m['cpu']} ({m['cores']} cores); one base: {results['genome']}; "
            f"{results['agents']} adapter agents, a {results['prompt_tokens']}-token prompt, "
            f"{results['new_tokens']} new tokens, median of {results['rounds']} asks.")
    rows = [[name, f"{seconds * 1000:.0f} ms", f"x{seconds / one:.2f}"] for name, seconds in latency.items()]
    for name in [n for n in latency if n.startswith("64 agents, routed")]:
        routed = latency[name] / one
        rows.append([f"target: {name[11:]} consensus of 64 at most 3x one agent", f"x{routed:.2f}",
                     "met" if routed <= 3 else "**not met**"])
    return head + "\n\n" + table(["ask by", "latency", "vs one agent"], rows)


if __name__ == "__main__":
    main()
