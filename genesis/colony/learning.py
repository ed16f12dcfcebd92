"""How an agent's weights change: division noise and continual learning (torch)."""

from __future__ import annotations

from typing import Sequence

import torch

from genesis.train.model import GPT


def mutate_weights(parent: GPT, sigma: float, identity_seed: int) -> GPT:
    """A copy of `parent` with N(0, σ²) added to every weight, drawn from `identity_seed`."""
    generator = torch.Generator().manual_seed(identity_seed)
    child = GPT(parent.config)
    child.load_state_dict(parent.state_dict())
    with torch.no_grad():
        for param in child.parameters():  # the tied embedding is one parameter: noised once
            param.add_(torch.randn(param.shape, generator=generator) * sigma)
    return child.eval()


def training_batch(sequences: Sequence[Sequence[int]], block_size: int) -> torch.Tensor | None:
    """The memories as one batch of equal-length windows (the last tokens of each, cropped
    to the context), shape (B, length); None when no memory has two tokens."""
    windows = [list(s)[-(block_size + 1):] for s in sequences if len(s) >= 2]
    if not windows:
        return None
    length = min(len(w) for w in windows)
    return torch.tensor([w[-length:] for w in windows])


def adapt_model(model: GPT, sequences: Sequence[Sequence[int]], steps: int, learning_rate: float) -> None:
    """A few AdamW steps of next-token training on `sequences` (each cropped to the context)."""
    batch = training_batch(sequences, model.config.block_size)
    if batch is None or steps <= 0:
        return
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        _, loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
