"""The search space: each trait's domain, read from a TOML file (built-ins in the project's `genomes/`).

A search-space file has one `[traits.NAME]` table per core genome trait (n_layer,
n_head, d_model, activation, sigma), optional tables for the optional traits (norm,
ffn_mult, position, dropout, weight_precision, qk_norm; left out, they keep their default) and an optional `[constraints]` table::

    [constraints]
    min_head_dim = 16          # d_model / n_head must be at least this

    [traits.n_layer]
    type = "int"               # ordered integers: low..high by step, or an explicit list
    low = 1
    high = 4

    [traits.activation]
    type = "choice"            # unordered values, resampled on mutation
    values = ["relu", "gelu", "silu", "swiglu"]

    [traits.sigma]
    type = "log_float"         # a positive float searched on a log scale
    low = 1e-4
    high = 0.05

The space samples, validates and repairs genomes; it never imports torch.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from genesis.core.config import check_keys, read_toml, resolve_data_file
from genesis.core.genome import CHOICES, CORE_TRAITS, FLOAT_RANGES, INT_RANGES, OPTIONAL_DEFAULTS, Genome, trait_names
from genesis.errors import GenesisError

DEFAULT_SEARCH_SPACE = "default"


@dataclass(frozen=True)
class IntDomain:
    """Ordered integer values; mutation moves one step up or down."""

    values: tuple[int, ...]

    def sample(self, rng: random.Random) -> int:
        return rng.choice(self.values)

    def contains(self, value: Any) -> bool:
        return value in self.values

    def mutate(self, value: int, rng: random.Random) -> int:
        """Step to a neighbouring value; at an end of the range the only neighbour."""
        if len(self.values) == 1:
            return value
        index = self.values.index(value)
        if index == 0:
            return self.values[1]
        if index == len(self.values) - 1:
            return self.values[-2]
        return self.values[index + rng.choice((-1, 1))]

    def describe(self) -> dict[str, Any]:
        return {"type": "int", "values": list(self.values)}


@dataclass(frozen=True)
class ChoiceDomain:
    """Unordered categorical values; mutation resamples a different value."""

    values: tuple[str, ...]

    def sample(self, rng: random.Random) -> str:
        return rng.choice(self.values)

    def contains(self, value: Any) -> bool:
        return value in self.values

    def mutate(self, value: str, rng: random.Random) -> str:
        others = [other for other in self.values if other != value]
        return rng.choice(others) if others else value

    def describe(self) -> dict[str, Any]:
        return {"type": "choice", "values": list(self.values)}


@dataclass(frozen=True)
class LogFloatDomain:
    """A positive float on a log scale; mutation is log-normal self-adaptation.

    A mutated value is `x * exp(tau * N(0, 1))`, clipped to the range, so the step is
    relative to the current value, as in evolution strategies. Values keep four
    significant digits: enough resolution, and readable ids and records.
    """

    low: float
    high: float
    tau: float = 0.5

    def sample(self, rng: random.Random) -> float:
        return self._quantize(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))

    def contains(self, value: Any) -> bool:
        return isinstance(value, float) and self.low <= value <= self.high

    def mutate(self, value: float, rng: random.Random) -> float:
        return self._quantize(value * math.exp(self.tau * rng.gauss(0.0, 1.0)))

    def _quantize(self, value: float) -> float:
        return min(self.high, max(self.low, float(f"{value:.4g}")))

    def describe(self) -> dict[str, Any]:
        return {"type": "log_float", "low": self.low, "high": self.high, "tau": self.tau}


@dataclass(frozen=True)
class FloatDomain:
    """A float on a linear scale (e.g. a dropout rate); mutation adds Gaussian noise of
    `scale` times the range, clipped. Values keep three decimals."""

    low: float
    high: float
    scale: float = 0.2

    def sample(self, rng: random.Random) -> float:
        return self._quantize(rng.uniform(self.low, self.high))

    def contains(self, value: Any) -> bool:
        return isinstance(value, float) and self.low <= value <= self.high

    def mutate(self, value: float, rng: random.Random) -> float:
        return self._quantize(value + rng.gauss(0.0, self.scale * (self.high - self.low)))

    def _quantize(self, value: float) -> float:
        return min(self.high, max(self.low, round(value, 3)))

    def describe(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "scale": self.scale}


Domain = Union[IntDomain, ChoiceDomain, LogFloatDomain, FloatDomain]


@dataclass(frozen=True)
class SearchSpace:
    """Each trait's domain plus the constraints that tie traits together."""

    domains: dict[str, Domain]
    min_head_dim: int = 8
    source: str = field(default="", compare=False)

    def sample(self, rng: random.Random) -> Genome:
        """Draw a random valid genome."""
        traits = {name: domain.sample(rng) for name, domain in self.domains.items()}
        return self.repair(Genome(**traits))

    def head_fits(self, d_model: int, n_head: int) -> bool:
        """Whether `n_head` heads split `d_model` into whole heads of a sane width."""
        return d_model % n_head == 0 and d_model // n_head >= self.min_head_dim

    def repair(self, genome: Genome) -> Genome:
        """Return the nearest valid genome: `n_head` moves to the closest fitting value.

        Every `d_model` value is checked at load time to admit some `n_head`, so repair
        always succeeds.
        """
        if self.head_fits(genome.d_model, genome.n_head):
            return genome
        heads = self.domains["n_head"].values
        fitting = [h for h in heads if self.head_fits(genome.d_model, h)]
        nearest = min(fitting, key=lambda h: (abs(math.log(h / genome.n_head)), h))
        return Genome(**{**genome.to_dict(), "n_head": nearest})

    def validate(self, genome: Genome) -> None:
        """Raise `GenesisError` if a trait is outside its domain or heads do not fit.

        An optional trait the space does not search must keep its default.
        """
        for name, domain in self.domains.items():
            value = getattr(genome, name)
            if not domain.contains(value):
                raise GenesisError(f"trait {name}={value!r} is outside the search space")
        for name, default in OPTIONAL_DEFAULTS.items():
            if name not in self.domains and getattr(genome, name) != default:
                raise GenesisError(f"trait {name} is not searched here and must stay {default!r}")
        if not self.head_fits(genome.d_model, genome.n_head):
            raise GenesisError(
                f"n_head={genome.n_head} does not split d_model={genome.d_model} into heads "
                f"of at least {self.min_head_dim}"
            )

    def is_valid(self, genome: Genome) -> bool:
        """`validate` as a predicate."""
        try:
            self.validate(genome)
        except GenesisError:
            return False
        return True

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, written into every run's resolved config."""
        return {
            "source": self.source,
            "constraints": {"min_head_dim": self.min_head_dim},
            "traits": {name: domain.describe() for name, domain in self.domains.items()},
        }


def load_search_space(name_or_path: str | Path = DEFAULT_SEARCH_SPACE) -> SearchSpace:
    """Load a search space from a TOML file, or a built-in one by name (the project's `genomes/`).

    Raises:
        GenesisError: malformed TOML, an unknown or missing trait, an unknown key, or an
            empty or impossible domain.
    """
    path = resolve_data_file(name_or_path, "genomes")
    return parse_search_space(read_toml(path), source=str(path))


def parse_search_space(data: dict[str, Any], source: str = "<dict>") -> SearchSpace:
    """Build a `SearchSpace` from the parsed TOML tables (see the module docstring)."""
    check_keys(data, {"traits", "constraints"}, source)
    constraints = data.get("constraints", {})
    check_keys(constraints, {"min_head_dim"}, f"{source} [constraints]")
    min_head_dim = constraints.get("min_head_dim", 8)
    if not isinstance(min_head_dim, int) or min_head_dim < 1:
        raise GenesisError(f"{source}: min_head_dim must be a positive integer")

    tables = data.get("traits", {})
    for name in tables:
        if name not in trait_names():
            raise GenesisError(
                f"{source}: unknown trait '{name}' (traits are: {', '.join(trait_names())})"
            )
    domains = {}
    for name in trait_names():  # core traits are required; optional ones searched if given
        if name not in tables:
            if name in CORE_TRAITS:
                raise GenesisError(f"{source}: no domain for trait '{name}'")
            continue
        domains[name] = _parse_domain(name, tables[name], f"{source} [traits.{name}]")

    space = SearchSpace(domains=domains, min_head_dim=min_head_dim, source=source)
    for d_model in domains["d_model"].values:
        if not any(space.head_fits(d_model, h) for h in domains["n_head"].values):
            raise GenesisError(
                f"{source}: impossible domain: no n_head in {list(domains['n_head'].values)} "
                f"splits d_model={d_model} into heads of at least {min_head_dim}"
            )
    return space


_EXPECTED_TYPE = {"n_layer": "int", "n_head": "int", "d_model": "int",
                  "activation": "choice", "sigma": "log_float", "norm": "choice", "ffn_mult": "int",
                  "position": "choice", "dropout": "float", "weight_precision": "choice",
                  "qk_norm": "choice"}


def _parse_domain(name: str, table: Any, where: str) -> Domain:
    if not isinstance(table, dict):
        raise GenesisError(f"{where}: expected a table")
    kind = table.get("type")
    if kind != _EXPECTED_TYPE[name]:
        raise GenesisError(f"{where}: type must be \"{_EXPECTED_TYPE[name]}\", got {kind!r}")
    if kind == "int":
        check_keys(table, {"type", "low", "high", "step", "values"}, where)
        if "values" in table:
            values = table["values"]
        else:
            low, high, step = table.get("low"), table.get("high"), table.get("step", 1)
            if not all(isinstance(v, int) for v in (low, high, step)) or step < 1:
                raise GenesisError(f"{where}: needs integer low, high (and step >= 1) or values")
            values = list(range(low, high + 1, step))
        low, high = INT_RANGES[name]
        if not values or not all(isinstance(v, int) and low <= v <= high for v in values):
            raise GenesisError(f"{where}: empty domain or a value outside {low}..{high}")
        return IntDomain(tuple(sorted(set(values))))
    if kind == "choice":
        check_keys(table, {"type", "values"}, where)
        values = table.get("values") or []
        if not values:
            raise GenesisError(f"{where}: empty domain")
        bad = [v for v in values if v not in CHOICES[name]]
        if bad:
            raise GenesisError(
                f"{where}: unknown {name} {bad[0]!r} (known: {', '.join(CHOICES[name])})"
            )
        return ChoiceDomain(tuple(dict.fromkeys(values)))
    if kind == "float":
        check_keys(table, {"type", "low", "high", "scale"}, where)
        low, high, scale = table.get("low"), table.get("high"), table.get("scale", 0.2)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high, scale)):
            raise GenesisError(f"{where}: needs numeric low and high")
        if not FLOAT_RANGES[name][0] <= low <= high <= FLOAT_RANGES[name][1]:
            raise GenesisError(f"{where}: need {FLOAT_RANGES[name][0]} <= low <= high <= "
                               f"{FLOAT_RANGES[name][1]}, got {low}..{high}")
        return FloatDomain(float(low), float(high), float(scale))
    check_keys(table, {"type", "low", "high", "tau"}, where)
    low, high, tau = table.get("low"), table.get("high"), table.get("tau", 0.5)
    if not all(isinstance(v, (int, float)) for v in (low, high, tau)):
        raise GenesisError(f"{where}: needs numeric low and high")
    if not 0 < low <= high <= FLOAT_RANGES[name][1]:
        raise GenesisError(f"{where}: need 0 < low <= high <= {FLOAT_RANGES[name][1]}, got {low}..{high}")
    return LogFloatDomain(float(low), float(high), float(tau))
