"""Next-token distributions and sampling, for one µLM or a fitness-weighted mixture of many.

A single agent is the special case of a mixture with one member and weight one, so the
CLI's `generate` and the colony's consensus share this code.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from tokenizers import Tokenizer

from genesis.errors import GenesisError
from genesis.train.model import GPT

MAX_GENERATED_TOKENS = 10_000  # one call's bound: each token is a forward pass


@torch.no_grad()
def next_token_probs(model: GPT, tokens: Sequence[int], temperature: float = 1.0) -> torch.Tensor:
    """The model's distribution over the next token after `tokens`, shape (vocab,).

    The context is cropped to the model's block size.
    """
    model.eval()
    context = list(tokens)[-model.config.block_size:] or [0]
    logits, _ = model(torch.tensor([context]))
    return torch.softmax(logits[0, -1].float() / max(temperature, 1e-6), dim=-1)


def mixture(distributions: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Σ wᵢ·pᵢ over the rows of `distributions`, shape (members, vocab): the consensus
    distribution; weights are normalized to sum to one."""
    w = torch.tensor(list(weights), dtype=torch.float64)
    if len(distributions) != len(w) or len(w) == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError("need one non-negative weight per distribution, not all zero")
    w = w / w.sum()
    return (w[:, None] * distributions.double()).sum(dim=0).float()


def sample(probs: torch.Tensor, top_k: int, generator: torch.Generator) -> int:
    """Draw a token id from `probs`, restricted to the `top_k` most likely (0: no limit)."""
    if top_k > 0:
        values, indices = probs.topk(min(top_k, probs.numel()))
        return int(indices[torch.multinomial(values, 1, generator=generator)])
    return int(torch.multinomial(probs, 1, generator=generator))


def generate(
    models: Sequence[GPT],
    weights: Sequence[float],
    tokenizer: Tokenizer,
    prompt: str,
    max_tokens: int = 50,
    temperature: float = 0.8,
    top_k: int = 40,
    seed: int = 0,
) -> str:
    """Continue `prompt` by sampling from the weighted mixture of the models' distributions.

    Returns only the generated continuation, decoded. Raises `GenesisError` for settings
    out of range (`check_sampling`).
    """
    check_sampling(max_tokens, temperature, top_k)

    def predict(tokens: list[int]) -> torch.Tensor:
        return torch.stack([next_token_probs(m, tokens, temperature) for m in models])

    return generate_with(predict, weights, tokenizer, prompt, max_tokens, top_k, seed)


def check_sampling(max_tokens: int, temperature: float, top_k: int) -> None:
    """Refuse sampling settings out of range, in one line (`GenesisError`)."""
    if not 1 <= max_tokens <= MAX_GENERATED_TOKENS:
        raise GenesisError(f"max tokens must be in [1, {MAX_GENERATED_TOKENS}], not {max_tokens}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise GenesisError(f"the temperature must be a positive number, not {temperature}")
    if top_k < 0:
        raise GenesisError(f"top-k must be 0 (every token) or more, not {top_k}")


def generate_with(
    predict: Callable[[list[int]], torch.Tensor],
    weights: Sequence[float],
    tokenizer: Tokenizer,
    prompt: str,
    max_tokens: int = 50,
    top_k: int = 40,
    seed: int = 0,
) -> str:
    """Continue `prompt` by sampling from Σ wᵢ·pᵢ, where `predict(tokens)` gives the members'
    next-token distributions, shape (members, vocab), at the temperature already applied
    (a colony of adapters predicts all its members in one batched pass)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = tokenizer.encode(prompt).ids
    generated: list[int] = []
    for _ in range(max_tokens):
        probs = mixture(predict(tokens + generated), weights)
        generated.append(sample(probs, top_k, generator))
    return tokenizer.decode(generated)


@torch.no_grad()
def continuation_token_probs(model: GPT, context: Sequence[int], continuation: Sequence[int]) -> torch.Tensor:
    """p(continuation[t] | context, continuation[:t]) for every t, teacher-forced, shape (T,)."""
    model.eval()
    sequence = (list(context) + list(continuation))[-(model.config.block_size + 1):]
    inputs = torch.tensor([sequence[:-1]])
    logits, _ = model(inputs)
    probs = torch.softmax(logits[0].float(), dim=-1)  # (len-1, vocab)
    targets = torch.tensor(sequence[1:])
    picked = probs[torch.arange(len(targets)), targets]
    return picked[-len(continuation):]
