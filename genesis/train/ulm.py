"""A tiny decoder-only transformer (µLM): the network itself, in PyTorch only.

nanoGPT-style: pre-norm blocks, causal self-attention through
`scaled_dot_product_attention`, learned or rotary positions, and an output head tied to
the token embedding. `GPTConfig.from_genome` is the only place where traits become layers.

This file imports nothing but torch: an exported bundle carries a verbatim copy of it
(as `genesis_ulm.py`, beside the `transformers` wrapper in `genesis/colony/hf/`), so the
model a user loads with `transformers` is, line for line, the one genesis trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int  # tokens in the tokenizer's vocabulary
    block_size: int  # longest context the position table covers
    n_layer: int  # transformer blocks
    n_head: int  # attention heads per block
    d_model: int  # residual stream width
    activation: str = "gelu"  # relu | gelu | silu | swiglu | relu2
    norm: str = "layernorm"  # layernorm | rmsnorm
    ffn_mult: int = 4  # feed-forward width as a multiple of d_model
    position: str = "learned"  # learned (a position table) | rotary (RoPE on queries and keys)
    dropout: float = 0.0  # dropout rate while training: embeddings, attention, residual branches
    weight_precision: str = "fp32"  # fp32 | ternary (BitNet b1.58 weights in the blocks' matmuls)
    qk_norm: str = "off"  # off | on (each head's queries and keys normalized before attention)

    @classmethod
    def from_genome(cls, genome, vocab_size: int, block_size: int) -> GPTConfig:
        """The model configuration a genome (`genesis.core.genome.Genome`, or anything
        with its trait attributes) describes, for a given tokenizer and context."""
        return cls(
            vocab_size=vocab_size,
            block_size=block_size,
            n_layer=genome.n_layer,
            n_head=genome.n_head,
            d_model=genome.d_model,
            activation=genome.activation,
            norm=genome.norm,
            ffn_mult=genome.ffn_mult,
            position=genome.position,
            dropout=genome.dropout,
            weight_precision=genome.weight_precision,
            qk_norm=genome.qk_norm,
        )

    @property
    def ffn_hidden(self) -> int:
        """Feed-forward width: ffn_mult·d, or 2/3 of it (rounded up to 8) for the gated
        SwiGLU, which keeps the feed-forward parameter count about equal across
        activations."""
        if self.activation == "swiglu":
            return -(-2 * self.ffn_mult * self.d_model // 3 // 8) * 8
        return self.ffn_mult * self.d_model


class TernaryLinear(nn.Linear):
    """A linear layer whose weights act as {-s, 0, +s} in the forward pass (BitNet b1.58).

    The latent full-precision weights are scaled by their mean absolute value, rounded to
    -1, 0 or +1 and rescaled; gradients flow to the latent weights unchanged (the
    straight-through estimator), so training is quantization-aware.
    """

    def ternary_weight(self) -> torch.Tensor:
        """The weights the forward pass uses: three values per layer."""
        weight = self.weight
        scale = weight.detach().abs().mean().clamp(min=1e-8)
        quantized = (weight.detach() / scale).round().clamp(-1, 1) * scale
        # Straight-through estimator: the value is exactly `quantized` (w - w is zero),
        # the gradient reaches the latent weights as if there were no rounding.
        return quantized + (weight - weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.ternary_weight(), self.bias)


def linear(config: GPTConfig, fan_in: int, fan_out: int) -> nn.Linear:
    """A block's linear layer at the genome's weight precision."""
    kind = TernaryLinear if config.weight_precision == "ternary" else nn.Linear
    return kind(fan_in, fan_out)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = linear(config, config.d_model, 3 * config.d_model)
        self.proj = linear(config, config.d_model, config.d_model)
        self.rotary = Rotary(config) if config.position == "rotary" else None
        # qk-layernorm: bounded attention logits, the cure for their growth that makes small
        # transformers unstable at high learning rates (Wortsman et al. 2023)
        head_dim = config.d_model // config.n_head
        self.q_norm = make_norm(config, head_dim) if config.qk_norm == "on" else None
        self.k_norm = make_norm(config, head_dim) if config.qk_norm == "on" else None
        self.dropout = config.dropout
        self.residual_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Self-attention over `x`; with a `cache` (incremental decoding), `x` is the next
        token(s) after the keys and values the cache holds, which it then extends."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        past = cache["k"].size(2) if cache else 0
        if self.rotary is not None:
            q, k = self.rotary(q, past), self.rotary(k, past)
        if cache is not None:
            if past:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        # a single new token attends to everything before it: no mask needed
        y = F.scaled_dot_product_attention(q, k, v, is_causal=not past,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, nh, T, hs)
        return self.residual_dropout(self.proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class Rotary(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021): rotates each pair of a head's
    channels by an angle that grows with the position, so attention sees relative
    offsets. No parameters; the angle tables are buffers left out of saved weights."""

    def __init__(self, config: GPTConfig, base: float = 10000.0):
        super().__init__()
        head_dim = config.d_model // config.n_head
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head size, not {head_dim}")
        frequencies = base ** (-torch.arange(0, head_dim, 2).float() / head_dim)  # (hs/2,)
        angles = torch.outer(torch.arange(config.block_size).float(), frequencies)  # (T, hs/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        T = x.size(-2)
        cos, sin = self.cos[offset:offset + T].to(x.dtype), self.sin[offset:offset + T].to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]  # (B, nh, T, hs/2) each
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gated = config.activation == "swiglu"
        hidden = config.ffn_hidden
        self.up = linear(config, config.d_model, 2 * hidden if self.gated else hidden)
        self.down = linear(config, hidden, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.act = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "swiglu": F.silu,
                    "relu2": _squared_relu}[config.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)  # (B, T, hidden) or (B, T, 2·hidden) when gated
        if self.gated:
            gate, value = h.chunk(2, dim=-1)
            return self.dropout(self.down(self.act(gate) * value))
        return self.dropout(self.down(self.act(h)))


def _squared_relu(x: torch.Tensor) -> torch.Tensor:
    """relu(x)², the feed-forward activation Primer found (So et al., 2021)."""
    return F.relu(x).square()


def make_norm(config: GPTConfig, width: int | None = None) -> nn.Module:
    """The normalization a genome asks for, over `width` channels (the residual stream's
    by default): LayerNorm, or RMSNorm (scale only)."""
    width = width or config.d_model
    return nn.RMSNorm(width) if config.norm == "rmsnorm" else nn.LayerNorm(width)


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The µLM: token + position embeddings, `n_layer` blocks, final norm, tied head."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.block_size, config.d_model) if config.position == "learned" else None
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections keeps the stream's variance flat.
        for name, param in self.named_parameters():
            if name.endswith(("proj.weight", "down.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / (2 * config.n_layer) ** 0.5)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Exact count of trainable parameters; the tied head is counted once.

        With `non_embedding`, token and position tables are left out (the count that
        ranks transformer LMs best).
        """
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.tok_emb.weight.numel()
            total -= self.pos_emb.weight.numel() if self.pos_emb is not None else 0
        return total

    def size_bytes(self) -> int:
        """Bytes to store the model: 32 bits a weight, or log2(3) ≈ 1.58 bits for each
        ternary weight (plus one fp32 scale per ternary layer)."""
        ternary = [m for m in self.modules() if isinstance(m, TernaryLinear)]
        ternary_weights = sum(m.weight.numel() for m in ternary)
        bits = 32 * (self.num_parameters() - ternary_weights) + 1.58 * ternary_weights + 32 * len(ternary)
        return math.ceil(bits / 8)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None,
        cache: list[dict[str, torch.Tensor]] | None = None, last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for every position (or, `last_only`, the last), and the mean cross-entropy
        when targets are given.

        `cache` (one dict per block, empty at first) decodes incrementally: the first call
        reads the prompt and fills it, each later call passes only the new token, which
        attends to the cached keys and values instead of recomputing the whole context.
        """
        B, T = idx.shape
        past = cache[0]["k"].size(2) if cache and cache[0] else 0
        pos = torch.arange(past, past + T, device=idx.device)
        x = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(pos)
        x = self.embedding_dropout(x)
        for index, block in enumerate(self.blocks):
            x = block(x, cache[index] if cache is not None else None)
        if last_only:
            x = x[:, -1:]
        logits = self.head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
