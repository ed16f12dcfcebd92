"""The genome: the digital DNA of one µLM.

A `Genome` is a frozen value: five traits that fully describe a tiny decoder-only
transformer plus `sigma`, the standard deviation of the weight noise a colony agent
adds when it divides. Pure Python (no torch) so that evolution and reports stay light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from genesis.core.config import check_type
from genesis.errors import GenesisError

ACTIVATIONS = ("relu", "gelu", "silu", "swiglu", "relu2")  # relu2: squared ReLU (Primer)
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rotary")
PRECISIONS = ("fp32", "ternary")
QK_NORMS = ("off", "on")  # on: queries and keys normalized per head (qk-layernorm)
CORE_TRAITS = ("n_layer", "n_head", "d_model", "activation", "sigma")
# Traits that never touch training (colony-only genes): left out of the training identity.
TRAINING_NEUTRAL = ("sigma",)
# What a genome from anywhere (a bundle, a colony, a run folder, a table) may say: wide
# enough for every search space, narrow enough that nothing is built from nonsense. The
# parameter limit (`genesis.train.model.check_size`) then bounds the model's size.
INT_RANGES = {"n_layer": (1, 256), "n_head": (1, 1024), "d_model": (1, 65536), "ffn_mult": (1, 64)}
FLOAT_RANGES = {"sigma": (0.0, 1.0), "dropout": (0.0, 0.99)}
CHOICES = {"activation": ACTIVATIONS, "norm": NORMS, "position": POSITIONS, "weight_precision": PRECISIONS,
           "qk_norm": QK_NORMS}


@dataclass(frozen=True)
class Genome:
    """Architecture traits of one µLM.

    The five core traits are always searched; the optional ones keep their default
    unless a search space gives them a domain.

    Attributes:
        n_layer: number of transformer blocks.
        n_head: attention heads per block; divides `d_model`.
        d_model: width of the residual stream.
        activation: feed-forward non-linearity, one of `ACTIVATIONS`.
        sigma: weight-mutation standard deviation used when a colony agent divides.
        norm: normalization of each block, one of `NORMS` (optional).
        ffn_mult: feed-forward width as a multiple of `d_model` (optional).
        position: position encoding, one of `POSITIONS` (optional).
        dropout: dropout rate in training, on embeddings, attention and residual
            branches (optional).
        weight_precision: "fp32", or "ternary" for BitNet b1.58-style quantization-aware
            training of the blocks' weights (optional).
        qk_norm: "on" normalizes each head's queries and keys (with the block's `norm`)
            before attention, the qk-layernorm of Dehghani et al. 2023 and Wortsman et al.
            2023 that keeps attention logits from growing (optional).
    """

    n_layer: int
    n_head: int
    d_model: int
    activation: str
    sigma: float
    norm: str = "layernorm"
    ffn_mult: int = 4
    position: str = "learned"
    dropout: float = 0.0
    weight_precision: str = "fp32"
    qk_norm: str = "off"

    @property
    def id(self) -> str:
        """A stable content hash: equal genomes share an id in every process and run.

        Optional traits at their default are left out of the hash, so adding a trait to
        genesis does not change the id of any genome recorded before.
        """
        return _content_hash({k: v for k, v in self.to_dict().items()
                              if k in CORE_TRAITS or v != OPTIONAL_DEFAULTS[k]})

    @property
    def training_id(self) -> str:
        """The identity of the model this genome trains: a hash of every trait that
        changes training, so genomes that differ only in colony-only genes (σ) share it,
        and with it their training seed and outcome."""
        return _content_hash({k: v for k, v in self.to_dict().items()
                              if k not in TRAINING_NEUTRAL
                              and (k in CORE_TRAITS or v != OPTIONAL_DEFAULTS[k])})

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_head

    def to_dict(self) -> dict[str, Any]:
        """The traits as a plain JSON-ready dict."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The traits as a JSON object string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genome:
        """Build a genome from a dict, rejecting unknown or missing core traits, bad types
        and values no model can be built from (see `check_traits`); a missing optional
        trait takes its default."""
        if not isinstance(data, dict):
            raise GenesisError("a genome must be an object of traits")
        names = trait_names()
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise GenesisError(f"unknown trait '{unknown[0]}' (traits are: {', '.join(names)})")
        missing = [name for name in CORE_TRAITS if name not in data]
        if missing:
            raise GenesisError(f"genome lacks trait '{missing[0]}'")
        values = {}
        for field in dataclasses.fields(cls):
            value = data.get(field.name, field.default)
            check_type(f"trait '{field.name}'", value, field.type)
            values[field.name] = float(value) if field.type == "float" else value
        genome = cls(**values)
        check_traits(genome)
        return genome

    @classmethod
    def from_json(cls, text: str) -> Genome:
        """Inverse of `to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise GenesisError(f"genome is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise GenesisError("genome JSON must be an object of traits")
        return cls.from_dict(data)

    def describe(self) -> str:
        """A short human-readable summary, e.g. `3L 4H 128d swiglu σ=0.01`."""
        extra = "".join(f" {k}={v}" for k, v in self.to_dict().items()
                        if k not in CORE_TRAITS and v != OPTIONAL_DEFAULTS[k])
        return (
            f"{self.n_layer}L {self.n_head}H {self.d_model}d {self.activation} "
            f"σ={self.sigma:.3g}{extra}"
        )


def check_traits(genome: Genome) -> None:
    """Raise `GenesisError` unless every trait has a value a model can be built from:
    integers and floats within `INT_RANGES` and `FLOAT_RANGES` (finite), a known choice,
    heads that split `d_model` evenly (and into an even head size for rotary positions)."""
    for name, (low, high) in INT_RANGES.items():
        value = getattr(genome, name)
        if not low <= value <= high:
            raise GenesisError(f"trait '{name}' must be in {low}..{high}, got {value}")
    for name, (low, high) in FLOAT_RANGES.items():
        value = getattr(genome, name)
        if not (math.isfinite(value) and low <= value <= high):
            raise GenesisError(f"trait '{name}' must be a finite number in [{low}, {high}], got {value}")
    for name, choices in CHOICES.items():
        if getattr(genome, name) not in choices:
            raise GenesisError(f"trait '{name}' must be one of {', '.join(choices)}, got {getattr(genome, name)!r}")
    if genome.d_model % genome.n_head:
        raise GenesisError(f"n_head={genome.n_head} does not divide d_model={genome.d_model}")
    if genome.position == "rotary" and genome.head_dim % 2:
        raise GenesisError(f"rotary positions need an even head size, not {genome.head_dim}")


def _content_hash(traits: dict[str, Any]) -> str:
    canonical = json.dumps(traits, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def trait_names() -> tuple[str, ...]:
    """The names of all genome traits, in declaration order."""
    return tuple(field.name for field in dataclasses.fields(Genome))


OPTIONAL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Genome) if f.name not in CORE_TRAITS}
