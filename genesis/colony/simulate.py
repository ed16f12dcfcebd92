"""Replay held-out WikiText through a colony and measure it honestly.

The stream is cut into chunks of a prompt and its true continuation. Each chunk is
first *predicted* (the continuation's likelihood under the consensus and under two
baselines is measured before anything learns from it), then fed back: fitness moves,
the shared memory grows, every agent adapts, interactions are counted, agents divide
and the weakest retire.

Baselines, both copies of the colony's fittest agent at the start:
- *frozen*: never changes;
- *learning*: takes the same optimizer steps on the same recent memories as the
  colony's agents, but alone, without division, selection or consensus.

So the question "does a colony beat its best single agent?" is answered against an
agent that is given everything but the colony.

The stream is the split as it comes (`order="stream"`), or its articles' chunks grouped
by topic (`genesis.colony.topics`, k-means over the train split's articles, saved with
the colony): in topic blocks (non-stationary: one topic after another) or interleaved.
Every chunk's topic and consensus weights are recorded, and the summary gives the
specialization index: how much the agents the consensus listens to tell the topic.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from genesis.colony.adapters import merged_average
from genesis.colony.colony import Colony
from genesis.colony.learning import adapt_model
from genesis.colony.niches import running_mean
from genesis.core.files import output_folder, replace_file, replace_text
from genesis.errors import GenesisError
from genesis.colony.topics import articles, colony_topics, ordered, specialization, topic_chunks
from genesis.train.data import load_data, read_texts
from genesis.train.generate import continuation_token_probs

SIMULATION_FILE = "simulation.json"
SIMULATION_PLOT = "simulation.png"
MAX_CHUNKS = 100_000  # topic orders wrap around their chunks, so the split does not bound a replay
MAX_CHUNK_TOKENS = 4096  # prompt or continuation tokens of one chunk


def simulate(
    colony: Colony,
    data: str | Path | None = None,
    chunks: int = 120,
    prompt_tokens: int = 32,
    continuation_tokens: int = 16,
    split: str = "test",
    cache_dir: str | Path | None = None,
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
    start: int = 0,
    out: str | Path | None = None,
    order: str = "stream",
    topics: int = 4,
) -> dict[str, Any]:
    """Run the replay on `colony` (which it changes: copy the colony to keep the original).

    Args:
        colony: the colony to grow.
        data: the WikiText folder (None: the hub).
        chunks: prompt/continuation pairs to replay.
        prompt_tokens, continuation_tokens: the sizes of each chunk's two parts.
        split: which split to replay; the default, test, was never trained on.
        cache_dir: tokenizer and token cache.
        on_chunk: called with each time point as it is measured.
        start: the first chunk of the split to replay (replays of other stretches); with
            a topic order, the replay number (`genesis.colony.topics.ordered`).
        out: the folder for the summary and plot; default the colony's folder.
        order: "stream" (the split as it comes), "blocks" or "interleaved" (its articles'
            chunks by topic, one topic after another or in turn).
        topics: clusters of the topic orders.

    Returns:
        The summary, also written to `simulation.json` in `out` with a plot.

    Raises:
        GenesisError: a count out of range (checked before any corpus is read), or a
            split too short for one chunk.
    """
    _check_replay(chunks, prompt_tokens, continuation_tokens, start)
    out = Path(out) if out is not None else colony.folder
    if out is None:
        raise GenesisError(f"{colony.location} lives in a database: give a folder for the summary")
    out = output_folder(out)  # a colony folder may come from someone else: no writing through links
    vocab = colony.tokenizer.get_vocab_size()
    tokens = load_data(data, vocab, cache_dir)
    width = prompt_tokens + continuation_tokens
    pieces = _pieces(colony, tokens, data, split, order, topics, chunks, width, start)
    if not pieces:
        raise GenesisError(f"the {split} split holds no chunk of {width} tokens"
                           + (f" from chunk {start} on" if order == "stream" and start else ""))
    best = colony.agents()[0]
    frozen = _copy(colony.model(best))
    learner = _copy(colony.model(best))
    validation = _windows(tokens.split("valid"), width)
    before = _held_out_ppl(colony, colony.agents(), validation)
    learner_before = _held_out_ppl_of(learner, validation)
    nll = {"consensus": 0.0, "frozen_best": 0.0, "learning_best": 0.0}
    if _soup(colony) is not None:
        nll["soup"] = 0.0
    counted, series = 0, []
    by_topic: dict[int, dict[str, float]] = {}  # each agent's running fitness on each topic's chunks
    started = time.perf_counter()
    for index, (piece, topic) in enumerate(pieces):
        prompt = colony.tokenizer.decode(piece[:prompt_tokens])
        continuation = colony.tokenizer.decode(piece[prompt_tokens:])
        context, target = colony.tokenizer.encode(prompt).ids, colony.tokenizer.encode(continuation).ids
        if not target:
            continue
        # 1. predict: every number below is measured before anything learns from this chunk
        agents = colony.agents()
        weights = torch.tensor(colony.consensus_weights(agents, context), dtype=torch.float64)
        per_agent = colony.continuation_probs(agents, context, target).double()  # (agents, T)
        nll["consensus"] -= float((weights[:, None] * per_agent).sum(0).log().sum())
        nll["frozen_best"] -= float(continuation_token_probs(frozen, context, target).double().log().sum())
        nll["learning_best"] -= float(continuation_token_probs(learner, context, target).double().log().sum())
        if "soup" in nll:
            nll["soup"] -= float(continuation_token_probs(_soup(colony), context, target).double().log().sum())
        counted += len(target)
        # 2. learn: feedback, shared memory, adaptation, division and selection
        measured = {a.id: float(p.log().mean()) for a, p in zip(agents, per_agent)}
        colony.teach(prompt, continuation, measured=measured,
                     shares={a.id: float(w) for a, w in zip(agents, weights)})
        colony.interact([a.id for a in agents])
        # the learning baseline trains on the very memories the colony's agents learned from
        window = [colony.tokenizer.encode(t).ids for t in colony.learning_texts(prompt + continuation)]
        adapt_model(learner, window, colony.settings.adapt_steps, colony.settings.learning_rate)
        living = colony.agents()
        fitness = np.array([a.fitness for a in living])
        topic_fitness = None
        if topic is not None:
            topic_fitness = _topic_fitness(by_topic.setdefault(topic, {}), measured, living,
                                           colony.settings.fitness_smoothing)
        point = {"chunk": index + 1, "tokens": counted, "agents": len(fitness), "topic": topic,
                 "topic_fitness": topic_fitness,
                 "weights": {a.id: float(w) for a, w in zip(agents, weights)},
                 "mean_fitness": float(fitness.mean()), "fitness_variance": float(fitness.var()),
                 **{f"{name}_ppl": math.exp(value / counted) for name, value in nll.items()}}
        series.append(point)
        if on_chunk is not None:
            on_chunk(point)
    if not series:  # every chunk's continuation decoded to nothing: nothing was learned either
        raise GenesisError(f"no chunk of the {split} split had a continuation to score")
    summary = _summarize(colony, series, time.perf_counter() - started, prompt_tokens,
                         continuation_tokens, split, best.id)
    summary["forgetting"] = {  # perplexity on fixed validation windows, before and after the stream
        "agents_before_ppl": before, "agents_after_ppl": _held_out_ppl(colony, colony.agents(), validation),
        "learning_best_before_ppl": learner_before, "learning_best_after_ppl": _held_out_ppl_of(learner, validation)}
    summary["start_chunk"] = start
    replace_text(out / SIMULATION_FILE, json.dumps(summary, indent=2))
    _plot(series, out / SIMULATION_PLOT)
    return summary


VALIDATION_WINDOWS = 16


def _check_replay(chunks: int, prompt_tokens: int, continuation_tokens: int, start: int) -> None:
    if not 1 <= chunks <= MAX_CHUNKS:
        raise GenesisError(f"chunks must be in [1, {MAX_CHUNKS}], not {chunks}")
    for name, count in (("prompt", prompt_tokens), ("continuation", continuation_tokens)):
        if not 1 <= count <= MAX_CHUNK_TOKENS:
            raise GenesisError(f"{name} tokens must be in [1, {MAX_CHUNK_TOKENS}], not {count}")
    if start < 0:
        raise GenesisError(f"the start must be 0 or more, not {start}")


def _pieces(colony, tokens, data, split, order, topics, chunks, width, start) -> list[tuple[list[int], int | None]]:
    """The replay's chunks of `width` tokens with their topics (None in stream order)."""
    if order == "stream":
        stream = tokens.split(split)[start * width:]
        return [(stream[i * width:(i + 1) * width].tolist(), None) for i in range(min(chunks, len(stream) // width))]
    if order not in ("blocks", "interleaved"):
        raise GenesisError(f"order must be stream, blocks or interleaved, not {order!r}")
    texts, _ = read_texts(data)
    try:
        model = colony_topics(colony.store, articles(texts["train"]), topics)
    except ValueError as error:
        raise GenesisError(f"{colony.location}: {error}") from None
    return ordered(topic_chunks(model, articles(texts[split]), colony.tokenizer, width), chunks, order, start)


def _windows(tokens: np.ndarray, width: int) -> list[list[int]]:
    """`VALIDATION_WINDOWS` fixed windows of `width` tokens spread over `tokens`."""
    starts = np.linspace(0, len(tokens) - width - 1, VALIDATION_WINDOWS).astype(int)
    return [tokens[s:s + width].tolist() for s in starts]


def _held_out_ppl(colony: Colony, agents, windows: list[list[int]]) -> float:
    """The agents' mean perplexity on `windows` (each window read from its first token)."""
    nll = [-colony.continuation_probs(agents, w[:1], w[1:]).double().log().mean(dim=1) for w in windows]
    return float(torch.stack(nll).mean(dim=0).exp().mean())


def _held_out_ppl_of(model: torch.nn.Module, windows: list[list[int]]) -> float:
    nll = [-continuation_token_probs(model, w[:1], w[1:]).double().log().mean() for w in windows]
    return float(torch.stack(nll).mean().exp())


def _soup(colony: Colony) -> torch.nn.Module | None:
    """The uniform weight average of the living agents, when they share one architecture
    (and, for adapter agents, one base: then base + mean of their low-rank deltas)."""
    agents = colony.agents()
    if len({a.genome.training_id for a in agents}) != 1:
        return None
    if colony.settings.agent_weights == "adapter":
        if len({colony.weights.base_of(a) for a in agents}) != 1:
            return None
        base, wrappers = colony.weights.base(agents[0])
        return merged_average(base, wrappers, [colony.model(a).tensors() for a in agents])
    soup = _copy(colony.model(agents[0]))
    states = [colony.model(a).state_dict() for a in agents]
    soup.load_state_dict({k: torch.stack([s[k].float() for s in states]).mean(0) for k in states[0]})
    return soup


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    """A twin that changes independently (an adapter agent's twin gets its own base copy)."""
    return copy.deepcopy(model).eval()


def _topic_fitness(running: dict[str, float], measured: dict[str, float], living, smoothing: float) -> list[float]:
    """Move each agent's running fitness on this topic toward its score on the chunk (as
    the colony's fitness moves, with the same α; an agent's first score on it sets it) and
    return the [mean, variance] over the living agents that have one."""
    for agent_id, score in measured.items():
        running[agent_id] = running_mean(running.get(agent_id), score, smoothing)
    values = np.array([running[a.id] for a in living if a.id in running])
    return [float(values.mean()), float(values.var())]


def _fisher(means: np.ndarray, variances: np.ndarray) -> float | None:
    """The correlation of the per-chunk rise of mean fitness with the fitness variance
    before it (Fisher's fundamental theorem: selection raises mean fitness at the rate of
    its variance); None where either does not vary."""
    rises = np.diff(means)
    return (float(np.corrcoef(rises, variances[:-1])[0, 1])
            if len(rises) > 2 and rises.std() > 0 and variances[:-1].std() > 0 else None)


def _summarize(colony, series, seconds, prompt_tokens, continuation_tokens, split, best_id) -> dict:
    final = series[-1]
    events = colony.status(events=100000)["events"]
    means = np.array([p["mean_fitness"] for p in series])
    variances = np.array([p["fitness_variance"] for p in series])
    # and per topic (the stream's niches), on its own chunks and the agents' fitness on it
    topics = sorted({p["topic"] for p in series if p["topic"] is not None})
    by_topic = {str(t): _fisher(*np.array([p["topic_fitness"] for p in series if p["topic"] == t]).T)
                for t in topics}
    return {
        "chunks": final["chunk"],
        "tokens_scored": final["tokens"],
        "split": split,
        "chunk_tokens": {"prompt": prompt_tokens, "continuation": continuation_tokens},
        "seconds": seconds,
        "online_ppl": {k[:-4]: v for k, v in final.items() if k.endswith("_ppl")},
        "colony_beats_frozen_best": final["consensus_ppl"] < final["frozen_best_ppl"],
        "colony_beats_learning_best": final["consensus_ppl"] < final["learning_best_ppl"],
        "best_agent_at_start": best_id,
        "agents_at_end": final["agents"],
        "divisions": sum(1 for e in events if e["kind"] == "division"),
        "retirements": sum(1 for e in events if e["kind"] == "retirement"),
        "fisher": {"correlation_of_mean_fitness_rise_with_variance": _fisher(means, variances),
                   "by_topic": by_topic,
                   "mean_fitness_start": float(means[0]), "mean_fitness_end": float(means[-1])},
        "specialization_bits": _specialization(series),
        "series": series,
    }


def _specialization(series: list[dict]) -> dict[str, Any] | None:
    """The specialization index (`genesis.colony.topics.specialization`) over the whole
    replay and over its first quarter, half, three quarters (so it can grow over time even
    in topic blocks, where one quarter holds one topic); None in stream order (no topics)."""
    if not series or series[0]["topic"] is None:
        return None
    ends = [max(1, round(len(series) * q / 4)) for q in (1, 2, 3, 4)]
    return {"whole": specialization([p["weights"] for p in series], [p["topic"] for p in series]),
            "cumulative_quarters": [specialization([p["weights"] for p in series[:end]],
                                                   [p["topic"] for p in series[:end]]) for end in ends]}


def _plot(series, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not series:
        return
    chunks = [p["chunk"] for p in series]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    for name, style in (("consensus", "-"), ("frozen_best", "--"), ("learning_best", ":")):
        left.plot(chunks, [p[f"{name}_ppl"] for p in series], style, label=name.replace("_", " "))
    left.set(xlabel="chunk", ylabel="online perplexity (cumulative)", title="Prediction before learning")
    left.legend()
    middle.plot(chunks, [p["mean_fitness"] for p in series], label="mean fitness")
    middle.set(xlabel="chunk", ylabel="mean log-likelihood", title="Mean fitness and its variance")
    twin = middle.twinx()
    twin.plot(chunks, [p["fitness_variance"] for p in series], color="C3", alpha=0.6, label="variance")
    twin.set_ylabel("fitness variance")
    right.step(chunks, [p["agents"] for p in series], where="post")
    right.set(xlabel="chunk", ylabel="living agents", title="Population")
    for axis in (left, middle, right):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    replace_file(path, lambda temporary: figure.savefig(temporary, dpi=110, format="png"))
    plt.close(figure)
