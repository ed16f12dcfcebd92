"""Agents as identities over a shared, frozen base: low-rank adapters (LoRA, Hu et al.
2021) on every attention and feed-forward projection of a µLM.

An agent is a few small matrices per projection, Aᵢ (rank × in) and Bᵢ (out × rank); its
model computes base(x) + x·Aᵀ·Bᵀ. Because the base is shared, a consensus of K agents is
one batched forward pass of the base over K rows (each row with its own agent's deltas),
not K passes of K models.

- **Identity:** an agent's adapter is drawn from its identity seed (OS entropy, recorded):
  A ~ N(0, 1/in), B ~ N(0, σ²) with σ the genome's own trait, so every agent is a small,
  distinct perturbation of its base, and its birth replays from the seed.
- **Division:** child = parent adapter + N(0, σ²), drawn from the child's identity seed.
- **Learning:** only the adapter trains; the base stays frozen (nothing forgets it).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator, Sequence

import torch
from safetensors.torch import load, save
from torch import nn

from genesis.train.model import GPT

PROJECTIONS = ("attn.qkv", "attn.proj", "mlp.up", "mlp.down")  # adapted in every block
Adapter = dict[str, torch.Tensor]  # "<layer>.a": (rank, in), "<layer>.b": (out, rank)
Stacked = dict[str, tuple[torch.Tensor, torch.Tensor]]  # layer -> (agents, rank, in), (agents, out, rank)


class LoRALinear(nn.Module):
    """A frozen linear layer plus, while `deltas` are set, a batched low-rank delta:
    row n of the input gets a[n] and b[n] (or the single pair, broadcast)."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.deltas: tuple[torch.Tensor, torch.Tensor] | None = None  # (N|1, r, in), (N|1, out, r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.deltas is None:
            return y
        a, b = self.deltas
        return y + (x @ a.transpose(-1, -2)) @ b.transpose(-1, -2)


def attach(base: GPT) -> dict[str, LoRALinear]:
    """Wrap every adapted projection of `base` (in place) and freeze its weights; returns
    the wrappers by layer name (e.g. "blocks.0.attn.qkv")."""
    wrappers: dict[str, LoRALinear] = {}
    for index, block in enumerate(base.blocks):
        for path in PROJECTIONS:
            owner_name, attribute = path.split(".")
            owner = getattr(block, owner_name)
            wrapper = LoRALinear(getattr(owner, attribute))
            setattr(owner, attribute, wrapper)
            wrappers[f"blocks.{index}.{path}"] = wrapper
    for param in base.parameters():
        param.requires_grad_(False)
    return wrappers


def new_adapter(wrappers: dict[str, LoRALinear], rank: int, sigma: float, identity_seed: int) -> Adapter:
    """An agent's first adapter, drawn from its identity seed."""
    generator = torch.Generator().manual_seed(identity_seed)
    adapter: Adapter = {}
    for name, wrapper in wrappers.items():
        fan_out, fan_in = wrapper.base.weight.shape
        adapter[f"{name}.a"] = torch.randn(rank, fan_in, generator=generator) / fan_in ** 0.5
        adapter[f"{name}.b"] = torch.randn(fan_out, rank, generator=generator) * sigma
    return adapter


def mutate_adapter(parent: Adapter, sigma: float, identity_seed: int) -> Adapter:
    """A child's adapter: the parent's plus N(0, σ²) on every entry, from the child's seed."""
    generator = torch.Generator().manual_seed(identity_seed)
    return {name: tensor + torch.randn(tensor.shape, generator=generator) * sigma
            for name, tensor in sorted(parent.items())}


def rank_of(adapter: Adapter) -> int:
    """The rank of an adapter's matrices."""
    return next(t for name, t in adapter.items() if name.endswith(".a")).shape[0]


def stack(adapters: Sequence[Adapter]) -> Stacked:
    """Several agents' adapters as one batch, layer by layer (agent n is row n)."""
    layers = sorted({name.rsplit(".", 1)[0] for name in adapters[0]})
    return {layer: (torch.stack([a[f"{layer}.a"] for a in adapters]),
                    torch.stack([a[f"{layer}.b"] for a in adapters])) for layer in layers}


@contextlib.contextmanager
def applied(wrappers: dict[str, LoRALinear], stacked: Stacked) -> Iterator[None]:
    """Within the block, row n of every batch through the base uses agent n's deltas (a
    stack of one applies to every row)."""
    try:
        for name, wrapper in wrappers.items():
            wrapper.deltas = stacked[name]
        yield
    finally:
        for wrapper in wrappers.values():
            wrapper.deltas = None


class AdaptedModel(nn.Module):
    """One agent: the shared base with this agent's adapter. Its only parameters are the
    adapter's, so an optimizer over `parameters()` trains the adapter and nothing else.
    Quacks like a `GPT` (`config`, `forward(idx, targets)`) for sampling and learning."""

    def __init__(self, base: GPT, wrappers: dict[str, LoRALinear], adapter: Adapter):
        super().__init__()
        self._shared = (base, wrappers)  # a tuple: not registered, not in parameters()
        self.config = base.config
        self.adapter = nn.ParameterDict({name.replace(".", "__"): nn.Parameter(t.clone())
                                         for name, t in adapter.items()})

    def tensors(self) -> Adapter:
        """The adapter's current values (detached copies)."""
        return {name: t.clone() for name, t in self.view().items()}

    def view(self) -> Adapter:
        """The adapter's current values, detached but not copied: read, don't change."""
        return {name.replace("__", "."): p.detach() for name, p in self.adapter.items()}

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        base, wrappers = self._shared
        live = {name.replace("__", "."): p for name, p in self.adapter.items()}  # keeps gradients
        with applied(wrappers, stack([live])):
            return base(idx, targets)


class BatchedDecoder:
    """Each agent's next-token distribution, shape (agents, vocab), for a growing context:
    one batched pass of the base per new token, reusing the keys and values of the
    tokens before it (the context is re-read only when it stops growing by one token or
    outgrows the base's block size)."""

    def __init__(self, base: GPT, wrappers: dict[str, LoRALinear], stacked: Stacked, temperature: float = 1.0):
        self.base, self.wrappers, self.stacked = base, wrappers, stacked
        self.temperature = max(temperature, 1e-6)
        self.agents = next(iter(stacked.values()))[0].shape[0]
        self.seen: list[int] = []
        self.cache: list[dict[str, torch.Tensor]] = []
        base.eval()

    @torch.no_grad()
    def __call__(self, tokens: Sequence[int]) -> torch.Tensor:
        tokens = list(tokens) or [0]
        block = self.base.config.block_size
        if len(tokens) == len(self.seen) + 1 and tokens[:-1] == self.seen and len(tokens) <= block:
            new = tokens[-1:]
        else:  # a new context, or one too long for the cache: read it anew, cropped
            tokens = tokens[-block:]
            self.cache = [{} for _ in self.base.blocks]
            new = tokens
        self.seen = tokens
        idx = torch.tensor([new]).expand(self.agents, -1)
        with applied(self.wrappers, self.stacked):
            logits, _ = self.base(idx, cache=self.cache, last_only=True)
        return torch.softmax(logits[:, -1].float() / self.temperature, dim=-1)


@torch.no_grad()
def batched_continuation_probs(base: GPT, wrappers: dict[str, LoRALinear], stacked: Stacked,
                               context: Sequence[int], continuation: Sequence[int]) -> torch.Tensor:
    """p(continuation[t] | context, continuation[:t]) for every agent and t, teacher-forced,
    shape (agents, T), in one batched forward pass."""
    sequence = (list(context) + list(continuation))[-(base.config.block_size + 1):]
    agents = next(iter(stacked.values()))[0].shape[0]
    idx = torch.tensor([sequence[:-1]]).expand(agents, -1)
    base.eval()
    with applied(wrappers, stacked):
        logits, _ = base(idx)
    probs = torch.softmax(logits.float(), dim=-1)  # (agents, len-1, vocab)
    targets = torch.tensor(sequence[1:])
    picked = probs[:, torch.arange(len(targets)), targets]
    return picked[:, -len(continuation):]


def learn_together(base: GPT, wrappers: dict[str, LoRALinear], adapters: Sequence[Adapter], batch: torch.Tensor,
                   steps: int, learning_rate: float) -> list[Adapter]:
    """Each adapter takes `steps` AdamW steps on `batch` (B, length), all in one batched
    pass: the same updates as training each agent alone (its own loss, its own gradient
    clipped to norm 1, its own optimizer state), at the cost of one larger forward and
    backward. Returns the new adapters."""
    count, rows = len(adapters), batch.shape[0]
    stacked = {name: tuple(t.clone().requires_grad_(True) for t in pair) for name, pair in stack(adapters).items()}
    leaves = [t for pair in stacked.values() for t in pair]
    optimizer = torch.optim.AdamW(leaves, lr=learning_rate, weight_decay=0.0)
    inputs, targets = batch[:, :-1].repeat(count, 1), batch[:, 1:].repeat(count, 1)  # agent n: rows n·B..
    for _ in range(steps):
        per_row = {name: tuple(t.repeat_interleave(rows, dim=0) for t in pair) for name, pair in stacked.items()}
        with applied(wrappers, per_row):
            logits, _ = base(inputs)
        losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        optimizer.zero_grad(set_to_none=True)
        losses.view(count, -1).mean(dim=1).sum().backward()  # agents' losses are independent
        with torch.no_grad():  # clip each agent's gradient to norm 1, as clip_grad_norm_ would alone
            norms = torch.sqrt(sum(t.grad.flatten(1).square().sum(dim=1) for t in leaves))
            scale = (1.0 / (norms + 1e-6)).clamp(max=1.0)
            for t in leaves:
                t.grad.mul_(scale.view(-1, *[1] * (t.dim() - 1)))
        optimizer.step()
    return [{f"{name}.{part}": pair[i].detach()[n].clone() for name, pair in stacked.items()
             for i, part in enumerate("ab")} for n in range(count)]


@torch.no_grad()
def merged_average(base: GPT, wrappers: dict[str, LoRALinear], adapters: Sequence[Adapter]) -> GPT:
    """A plain model whose weights are the base's plus the mean of the agents' deltas
    (Bᵢ·Aᵢ): the uniform weight average ("soup") of the agents."""
    soup = copy.deepcopy(base)
    merged = {name: module for name, module in soup.named_modules() if isinstance(module, LoRALinear)}
    for name in wrappers:
        delta = torch.stack([a[f"{name}.b"] @ a[f"{name}.a"] for a in adapters]).mean(dim=0)
        merged[name].base.weight.add_(delta)
    return soup.eval()


def adapter_bytes(adapter: Adapter) -> bytes:
    """An adapter as safetensors bytes (how a colony stores it)."""
    return save({k: v.contiguous() for k, v in adapter.items()})


def load_adapter(data: bytes, wrappers: dict[str, LoRALinear], rank_limit: int,
                 rename: Callable[[Adapter], Adapter] | None = None) -> Adapter:
    """Read an adapter's bytes and check it fits the base (every layer, the right shapes,
    a rank no larger than `rank_limit`): a colony may come from someone else. `rename`
    maps tensor names of another layout (PEFT's) to genesis's first.

    Raises:
        ValueError: not an adapter of this base.
    """
    try:
        adapter = load(data)
    except Exception as error:  # safetensors raises its own error type for a bad header
        raise ValueError(f"its adapter is not a safetensors file: {error}") from None
    adapter = rename(adapter) if rename is not None else adapter
    expected = {f"{name}.{part}" for name in wrappers for part in "ab"}
    if set(adapter) != expected:
        raise ValueError("its weights do not hold the adapter of this base")
    for name, wrapper in wrappers.items():
        fan_out, fan_in = wrapper.base.weight.shape
        a, b = adapter[f"{name}.a"], adapter[f"{name}.b"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != fan_in or b.shape[0] != fan_out \
                or a.shape[0] != b.shape[1] or not 1 <= a.shape[0] <= rank_limit:
            raise ValueError(f"its adapter's layer {name} has the wrong shape")
    return adapter
