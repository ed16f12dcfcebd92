"""How a colony's agents share an answer: consensus policies.

A policy reads a frozen record of the evidence (each agent's fitness and, for routing,
its log-likelihood of the prompt's last tokens) and returns each agent's share of the
answer; the shares sum to one. `Colony.ask` and `simulate` both call `weights`, so the
replay measures the consensus that is served.

- **softmax** (the global baseline): softmax(fitness / T), the same shares for every prompt.
- **top_k**: the k fittest agents, equal shares.
- **posterior** (context-routed, as cluster-BTM and Bayesian model averaging mix experts
  per prefix): prior softmax(fitness / T) times each agent's likelihood of the prompt's
  last `routing_tokens` tokens tempered by τ, normalized: softmax(fitness / T +
  Σ log pᵢ(recent tokens) / τ). An agent that explains this kind of text best is heard
  most on it. τ = 1 is the plain Bayesian posterior, which on 16 tokens is nearly a hard
  choice and loses the ensemble (measured: benchmarks/colony_routing_temperature.py).
- **niche** (routed by the prompt's niche, `genesis.colony.niches`): softmax(fitness in
  the niche of the prompt / T); the global softmax while the colony has no niches yet.

Sparse routing (`answering`, as cluster-BTM's top-k experts): under softmax, posterior or
niche only the `answering` agents with the largest shares answer, their shares
renormalized; the others never decode, which is what makes a routed consensus of many
agents cost little more than a few (benchmarks/colony_routing_cost.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

POLICIES = ("softmax", "top_k", "posterior", "niche")
ROUTED = ("posterior",)  # the policies that need each agent's likelihood of the prompt


@dataclass(frozen=True)
class Evidence:
    """What a policy may read.

    Attributes:
        fitness: each agent's fitness (a running mean log-likelihood per token).
        prompt_log_likelihood: each agent's summed log-probability of the prompt's last
            tokens given the ones before them; None when the policy does not route.
        niche_fitness: each agent's fitness in the prompt's niche; None without niches.
    """

    fitness: Sequence[float]
    prompt_log_likelihood: Sequence[float] | None = None
    niche_fitness: Sequence[float] | None = None


def weights(policy: str, evidence: Evidence, temperature: float, top_k: int,
            routing_temperature: float = 1.0, answering: int = 0) -> list[float]:
    """Each agent's share of the consensus under `policy` (one of `POLICIES`): the fitness
    softmax at `temperature` (for niche, of the fitness in the prompt's niche), the `top_k`
    fittest, or the posterior with its evidence tempered by `routing_temperature`; with
    `answering` > 0 only that many largest shares are kept, renormalized."""
    import torch  # here, not above: the settings read POLICIES, and the CLI starts without torch

    fitness = torch.tensor(list(evidence.niche_fitness if policy == "niche" and evidence.niche_fitness is not None
                                else evidence.fitness), dtype=torch.float64)
    if policy == "top_k":
        chosen = set(torch.argsort(-fitness, stable=True)[:top_k].tolist())
        return [1.0 / len(chosen) if i in chosen else 0.0 for i in range(len(fitness))]
    logits = fitness / temperature
    if policy == "posterior":
        if evidence.prompt_log_likelihood is None:
            raise ValueError("the posterior policy needs each agent's likelihood of the prompt")
        logits = logits + torch.tensor(list(evidence.prompt_log_likelihood), dtype=torch.float64) / routing_temperature
    elif policy not in ("softmax", "niche"):
        raise ValueError(f"unknown consensus policy {policy!r}")
    shares = torch.softmax(logits, dim=0)
    if 0 < answering < len(shares):
        kept = torch.zeros_like(shares)
        chosen = torch.argsort(-shares, stable=True)[:answering]
        kept[chosen] = shares[chosen]
        shares = kept / kept.sum()
    return shares.tolist()


def routing_split(context: Sequence[int], tokens: int) -> tuple[list[int], list[int]]:
    """A prompt's ids as (what comes before, the last `tokens` scored for routing); the
    first token is never scored (nothing precedes it)."""
    context = list(context)
    scored = min(tokens, max(0, len(context) - 1))
    return context[:len(context) - scored], context[len(context) - scored:]
