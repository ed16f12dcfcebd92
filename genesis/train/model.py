"""µLMs built from genomes: their size limits, parameter counts and weight files.

The network itself (`GPT`, `GPTConfig`, the layers) is in `genesis.train.ulm`, which
imports torch only so that bundles can carry it; it is re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path

import safetensors.torch
import torch
import torch.nn as nn

from genesis.core.files import replace_bytes
from genesis.core.genome import Genome
from genesis.errors import GenesisError
from genesis.train.ulm import GPT, GPTConfig, TernaryLinear

__all__ = ["GPT", "GPTConfig", "TernaryLinear", "check_size", "count_parameters", "largest_genome",
           "load_weights", "load_weights_bytes", "max_parameters", "save_weights", "weights_bytes"]

# The largest model genesis builds from a search space, bundle or colony it is given:
# about 0.8 GB of fp32 weights, plus optimizer state when training. $GENESIS_MAX_PARAMETERS
# raises or lowers it for bigger or smaller machines.
DEFAULT_MAX_PARAMETERS = 200_000_000


def max_parameters() -> int:
    """The parameter limit in force: `$GENESIS_MAX_PARAMETERS`, else the default."""
    value = os.environ.get("GENESIS_MAX_PARAMETERS", "")
    return int(value) if value.isdigit() else DEFAULT_MAX_PARAMETERS


def check_size(genome: Genome, vocab_size: int, block_size: int, where: str) -> None:
    """Raise `GenesisError` before building a model above the parameter limit."""
    count = count_parameters(genome, vocab_size, block_size)
    if count > max_parameters():
        raise GenesisError(f"{where}: {genome.describe()} would have {count:,} parameters, above the "
                           f"limit of {max_parameters():,} (set GENESIS_MAX_PARAMETERS to change it)")


def weights_bytes(model: nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """A model's weights as safetensors bytes, with optional string `metadata` in the
    header. Tied tensors are stored once (safetensors refuses shared storage)."""
    state = model.state_dict()
    kept = {group[0]: state[group[0]].contiguous() for group in _tied_groups(state)}
    return safetensors.torch.save(kept, metadata=metadata)


def _tied_groups(state: dict[str, torch.Tensor]) -> list[list[str]]:
    """A state's names grouped by the storage they share (the tied head and token
    embedding are one group), in state order."""
    groups: dict[tuple[int, tuple[int, ...]], list[str]] = {}
    for name, tensor in state.items():
        groups.setdefault((tensor.data_ptr(), tuple(tensor.shape)), []).append(name)
    return list(groups.values())


def load_weights_bytes(model: nn.Module, data: bytes) -> None:
    """Load safetensors bytes into `model`; every tensor must be present (one name of a
    tied group is enough) and fit.

    Raises:
        RuntimeError: a missing, unexpected or misshapen tensor, or bytes that are not safetensors.
    """
    try:
        state = safetensors.torch.load(data)
    except Exception as error:  # safetensors raises its own error type for a bad header
        raise RuntimeError(f"not a safetensors file: {error}") from None
    _, unexpected = model.load_state_dict(state, strict=False)
    absent = [name for group in _tied_groups(model.state_dict()) if not state.keys() & set(group) for name in group]
    if absent or unexpected:
        raise RuntimeError(f"missing tensors {sorted(absent)}, unexpected tensors {sorted(unexpected)}")


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Save a model's weights as a safetensors file (`weights_bytes`), atomically and
    durably (`genesis.core.files.replace_bytes`)."""
    replace_bytes(Path(path), weights_bytes(model, metadata))


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a safetensors file into `model` (`load_weights_bytes`).

    Raises:
        RuntimeError: a missing, unexpected or misshapen tensor.
    """
    load_weights_bytes(model, Path(path).read_bytes())


def largest_genome(domains: dict) -> Genome:
    """The genome of a search space with the most parameters: every ordered trait at its
    largest value, the widest feed-forward (swiglu) and learned positions when searched."""
    traits = {}
    for name, domain in domains.items():
        values = getattr(domain, "values", None)
        if values is None:
            traits[name] = getattr(domain, "high")
        elif isinstance(values[0], int):
            traits[name] = max(values)
        else:
            preferred = {"activation": "swiglu", "norm": "layernorm", "position": "learned",
                         "weight_precision": "fp32", "qk_norm": "on"}.get(name)
            traits[name] = preferred if preferred in values else values[0]
    traits["n_head"] = 1  # the head count does not change the parameter count
    return Genome.from_dict(traits)


def count_parameters(genome: Genome, vocab_size: int, block_size: int) -> int:
    """The exact parameter count of `GPT(GPTConfig.from_genome(...))`, without building it.

    Lets reports and proxies size a genome in pure arithmetic; a test checks it
    against the built model.
    """
    config = GPTConfig.from_genome(genome, vocab_size, block_size)
    d, hidden = config.d_model, config.ffn_hidden
    up_out = 2 * hidden if config.activation == "swiglu" else hidden
    per_channel = 1 if config.norm == "rmsnorm" else 2  # RMSNorm has a scale, LayerNorm a bias too
    layer_norm = per_channel * d
    qk_norms = 2 * per_channel * (d // config.n_head) if config.qk_norm == "on" else 0
    attention = (d * 3 * d + 3 * d) + (d * d + d) + qk_norms
    mlp = (d * up_out + up_out) + (hidden * d + d)
    block = 2 * layer_norm + attention + mlp
    embeddings = vocab_size * d + (block_size * d if config.position == "learned" else 0)
    return embeddings + config.n_layer * block + layer_norm
