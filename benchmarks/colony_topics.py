"""Colony science on a stream with structure: does routing let specialists be heard, and
do division and selection add anything?

Three champions of the default space (`quick`) are trained and exported (or taken from
`--bundles`). For each of `--replays` replays, colonies of the three champions as adapter
agents (two identities each, cap 6) are seeded afresh and replay the held-out articles in
topic blocks (`genesis colony simulate --order blocks`: tf-idf + k-means topics of the
train split, one topic after another; replay r starts at another topic and another
stretch of each):

- "global": the fitness softmax (the baseline consensus), the least fit retire;
- "routed": the posterior consensus (fitness prior x each agent's likelihood of the
  prompt's last 16 tokens, tempered by the default τ = 16: see
  benchmarks/colony_routing_temperature.py);
- "routed, species selection": above the cap the weakest of the most populous
  architecture retires (`genesis.colony.niches`), so each champion keeps a line;
- "niches": 4 niches (clusters of the memories' tf-idf vectors): the consensus listens to
  each agent by its fitness in the prompt's niche, an agent divides only while it leads a
  niche and its child learns on that niche's memories, and the weakest of the agents
  dominated in every niche retires (`genesis.colony.lifecycle`);
- "niches, division off" (Θ = 10^6: no agent ever divides) and "niches, selection off"
  (cap 1000: no agent ever retires): the life cycle's ablations;
- "niches, species selection": niches, but the one that retires comes from the most
  populous architecture (the member another one dominates in every niche, else its weakest);
- "niches, species selection, specialist children": as that, but a niche leader's child
  takes 8 steps at learning rate 1e-3 on its niche's memories (`child_steps`,
  `child_learning_rate`; the default is one step at 1e-4, like every agent's learning);
- "routed, species selection, 2 answer": sparse routing (`answering = 2`, as cluster-BTM's
  top-k experts): only the two agents with the largest posterior shares answer;
- at the stream-following learning rate 1e-3: "global, lr 1e-3", "routed, lr 1e-3", and
  with routed learning (`learners = 2`: only the two agents with the largest consensus
  shares on a chunk's prompt learn from it, so agents heard on one kind of text keep
  learning it) "routed, routed learning, lr 1e-3", "niches, routed learning, lr 1e-3" and
  its division ablation "niches, routed learning, lr 1e-3, division off";
- "one dense model": a single model of about the three champions' parameters together
  (4L 4H 256d relu, 4.22M vs 4.19M) trained under `quick` for three times its steps (the
  tokens of the three champions' trainings together), learning on the stream as one
  adapter agent: what the colony's parameters and tokens buy as one model.

The arms of one replay read the same chunks from the same champions, so their online
perplexities are compared per replay (paired differences, mean and 95% t-interval). Also
per arm: the best agent frozen and learning alone (from the replay itself), the
specialization index (mutual information of consensus weights and topic, bits) over the
replay and by quarter, and Fisher's correlation.

    python benchmarks/colony_topics.py --data /path/to/wikitext-2 --replays 8
    python benchmarks/mixed_corpus.py /path/to/wikitext-2 MIXED   # prose + Python source
    python benchmarks/colony_topics.py --data MIXED --tag mixed --work W --arms global routed ...

With `--arms`, only those arms are replayed and reported; `--tag` names the results
(colony_topics-TAG.json and its own README table), for another corpus or arm set.

Resumable: each replay is appended to --work/replays.jsonl as it ends. Writes
benchmarks/results/colony_topics.json and the table in benchmarks/README.md.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from pathlib import Path

from colony import interval, trained_bundle
from common import benchmark_parser, machine, rendered_only, table, update_readme, write_results

ARMS = {  # name -> ColonySettings fields over the shared ones
    "global": {"consensus": "softmax", "selection": "fitness"},
    "routed": {"consensus": "posterior", "selection": "fitness"},
    "routed, species selection": {"consensus": "posterior", "selection": "species"},
    "niches": {"consensus": "niche", "selection": "niche", "niches": 4},
    "niches, division off": {"consensus": "niche", "selection": "niche", "niches": 4, "division_threshold": 1_000_000},
    "niches, selection off": {"consensus": "niche", "selection": "niche", "niches": 4, "population_cap": 1000},
    "niches, species selection": {"consensus": "niche", "selection": "species", "niches": 4},
    "niches, species selection, specialist children": {"consensus": "niche", "selection": "species", "niches": 4,
                                                       "child_steps": 8, "child_learning_rate": 1e-3},
    "routed, species selection, 2 answer": {"consensus": "posterior", "selection": "species", "answering": 2},
    "one dense model": {"division_threshold": 1_000_000},
    # learning that follows the stream (1e-3, benchmarks/README.md "The adapters' learning
    # rate"), where routing what each agent learns can make specialists
    "global, lr 1e-3": {"consensus": "softmax", "selection": "fitness", "learning_rate": 1e-3},
    "routed, lr 1e-3": {"consensus": "posterior", "selection": "fitness", "learning_rate": 1e-3},
    "routed, routed learning, lr 1e-3": {"consensus": "posterior", "selection": "fitness", "learning_rate": 1e-3,
                                         "learners": 2},
    "niches, routed learning, lr 1e-3": {"consensus": "niche", "selection": "niche", "niches": 4,
                                         "learning_rate": 1e-3, "learners": 2},
    "niches, routed learning, lr 1e-3, division off": {"consensus": "niche", "selection": "niche", "niches": 4,
                                                       "learning_rate": 1e-3, "learners": 2,
                                                       "division_threshold": 1_000_000},
}
DENSE_ARM = "one dense model"
DENSE = {"n_layer": 4, "n_head": 4, "d_model": 256, "activation": "relu"}  # ~ the champions' parameters together
SHARED = {"agent_weights": "adapter", "population_cap": 6}
PAIRS = (("global", "routed"), ("routed", "routed, species selection"), ("global", "niches"),
         ("routed", "niches"), ("niches, division off", "niches"), ("niches, selection off", "niches"),
         ("niches", "niches, species selection"), ("routed, species selection", "niches, species selection"),
         ("niches, species selection", "niches, species selection, specialist children"),
         ("niches, division off", "niches, species selection, specialist children"),
         ("routed, species selection", "routed, species selection, 2 answer"),
         ("one dense model", "routed, species selection"), ("one dense model", "niches"),
         ("global, lr 1e-3", "routed, lr 1e-3"), ("routed, lr 1e-3", "routed, routed learning, lr 1e-3"),
         ("global, lr 1e-3", "routed, routed learning, lr 1e-3"),
         ("global, lr 1e-3", "niches, routed learning, lr 1e-3"),
         ("niches, routed learning, lr 1e-3, division off", "niches, routed learning, lr 1e-3"))


def champions(data: str, work: Path, given: list[str] | None) -> list[Path]:
    """Three bundles: given, made before in `work`, or trained and exported now."""
    import genesis

    if given:
        return [Path(b) for b in given]
    folder = work / "bundles"
    if folder.is_dir():
        return sorted(folder.iterdir())
    run = genesis.evolve(population=6, generations=1, data=data, output=work / "runs", noise_probes=0, confirm=0,
                         threads=1)
    return genesis.export_champions(run.path, top=3, out=folder)


def dense_bundle(data: str, work: Path) -> Path:
    """The dense baseline: `DENSE` trained under `quick` for three times its steps."""
    import genesis

    quick = genesis.load_recipe("quick")
    recipe = dataclasses.replace(quick, name="quick-x3", steps=3 * quick.steps, warmup_steps=3 * quick.warmup_steps)
    return trained_bundle(data, work / "dense", genesis.Genome(**DENSE, sigma=0.001), recipe)  # not among the champions


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--replays", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=80, help="chunks per replay (an equal share per topic)")
    parser.add_argument("--topics", type=int, default=4)
    parser.add_argument("--bundles", nargs="*", help="three agent bundles to use instead of training them")
    parser.add_argument("--arms", nargs="*", choices=list(ARMS), help="replay only these arms (default: all)")
    parser.add_argument("--work", default=str(Path.home() / ".cache/genesis/benchmarks/colony_topics"),
                        help="folder for the champions and the replays so far (resumable)")
    parser.add_argument("--tag", default="", help="name the results colony_topics-TAG (another corpus or arm set)")
    args = parser.parse_args()
    name = "colony_topics" + (f"-{args.tag}" if args.tag else "")
    if rendered_only(parser, args, name, render):
        return
    import genesis

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bundles = champions(args.data, work, args.bundles)
    dense = dense_bundle(args.data, work) if not args.arms or DENSE_ARM in args.arms else None
    log = work / "replays.jsonl"
    settings_key = {"chunks": args.chunks, "topics": args.topics, "bundles": [str(b) for b in bundles],
                    "arms": {arm: dataclasses.asdict(genesis.ColonySettings(**{**SHARED, **fields}))
                             for arm, fields in ARMS.items()}}
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    same = {k: v for k, v in settings_key.items() if k != "arms"}
    done = [r for r in done if {k: v for k, v in r["settings"].items() if k != "arms"} == same
            and r["arm"] in ARMS and _same_arm(r["settings"]["arms"][r["arm"]], settings_key["arms"][r["arm"]])]
    for replay in range(args.replays):
        for arm, fields in ARMS.items():
            if any(r["replay"] == replay and r["arm"] == arm for r in done) or (args.arms and arm not in args.arms):
                continue
            folder = work / f"colony-{replay}-{list(ARMS).index(arm)}"
            shutil.rmtree(folder, ignore_errors=True)  # scratch of a replay that did not finish
            seeds, copies = ([dense], 1) if arm == DENSE_ARM else (bundles, 2)
            colony = genesis.Colony.seed(folder, seeds, genesis.ColonySettings(**{**SHARED, **fields}), copies=copies)
            summary = genesis.simulate(colony, args.data, chunks=args.chunks, start=replay, order="blocks",
                                       topics=args.topics, out=work / "out")
            summary.pop("series")
            row = {"settings": settings_key, "replay": replay, "arm": arm, "summary": summary}
            with log.open("a") as out:
                out.write(json.dumps(row) + "\n")
            done.append(row)
            print(arm, replay, summary["online_ppl"], summary["specialization_bits"]["whole"], flush=True)
    arms = args.arms or list(ARMS)
    if any(sum(r["arm"] == arm for r in done) < args.replays for arm in arms):
        print("some arms still lack replays: run again to write the results")
        return
    results = {"machine": machine(), "chunks": args.chunks, "topics": args.topics,
               "data": Path(args.data).name,  # the corpus folder's name: no path of this machine
               "champions": [genesis.load_bundle(b).genome.describe() for b in bundles],
               "replays": {arm: [r["summary"] for r in sorted(done, key=lambda r: r["replay"])
                                 if r["arm"] == arm][:args.replays] for arm in ARMS if arm in arms}}
    path = write_results(name, results)
    update_readme(name, render(results))
    print(f"wrote {path}")


def _same_arm(stored: dict, current: dict) -> bool:
    """Whether a replay's stored colony settings are the arm's now: equal where both name a
    setting, and a setting added since at its default (so older replays still count)."""
    import genesis

    defaults = dataclasses.asdict(genesis.ColonySettings())
    return (all(current.get(k) == v for k, v in stored.items())
            and all(v == defaults[k] for k, v in current.items() if k not in stored))


def _cell(values: list[float], digits: int = 1) -> str:
    mean, low, high = interval(values)
    return f"{mean:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def _verdict(low: float, high: float) -> str:
    """Whether a paired gain is beyond its interval: better, worse, or neither."""
    return "yes, better" if low > 0 else "yes, worse" if high < 0 else "no"


def render(results: dict) -> str:
    """The README tables of a results dict."""
    m, replays = results["machine"], results["replays"]
    count = min(len(v) for v in replays.values())
    head = (f"Measured {m['measured']} on {m['cpu']} ({m['cores']} cores); champions: "
            f"{', '.join(results['champions'])} (two adapter identities each, cap 6); {count} replays of "
            f"{results['chunks']} chunks of 32 + 16 tokens in {results['topics']} topic blocks; online perplexity "
            "(each chunk predicted before anything learns from it), mean [95% t-interval].")
    rows = []
    for arm, runs in replays.items():
        online = [r["online_ppl"] for r in runs]
        index = [r["specialization_bits"] for r in runs]
        growth = [i["cumulative_quarters"] for i in index if "cumulative_quarters" in i]
        rows.append([arm, _cell([o["consensus"] for o in online]), _cell([o["frozen_best"] for o in online]),
                     _cell([o["learning_best"] for o in online]), _cell([i["whole"] for i in index], 3),
                     " / ".join(f"{statistics.fmean(q):.3f}" for q in zip(*growth)) if growth else "-",
                     _cell([r["divisions"] for r in runs], 0), _cell([r["retirements"] for r in runs], 0),
                     _cell([r["fisher"]["correlation_of_mean_fitness_rise_with_variance"] or 0.0 for r in runs], 2)])
    arms = table(["colony", "consensus ppl", "best frozen", "best learning alone", "specialization (bits)",
                  "over 1/4, 1/2, 3/4 of the replay", "divisions", "retirements", "Fisher r"], rows)
    paired = []
    for baseline, treatment in (pair for pair in PAIRS if set(pair) <= set(replays)):
        gains = [b["online_ppl"]["consensus"] - t["online_ppl"]["consensus"]
                 for b, t in zip(replays[baseline], replays[treatment])]
        mean, low, high = interval(gains)
        paired.append([f"{treatment} vs {baseline}", f"{mean:.2f} [{low:.2f}-{high:.2f}]",
                       _verdict(low, high)])
    for arm in (arm for arm in ("routed", "niches") if arm in replays):
        alone = [r["online_ppl"]["learning_best"] - r["online_ppl"]["consensus"] for r in replays[arm]]
        mean, low, high = interval(alone)
        paired.append([f"{arm} vs the best agent learning alone", f"{mean:.2f} [{low:.2f}-{high:.2f}]",
                       _verdict(low, high)])
    return "\n\n".join([head, arms, table(["comparison (perplexity gained, paired per replay)",
                                           "mean [95% CI]", "beyond its interval"], paired)])


if __name__ == "__main__":
    main()
