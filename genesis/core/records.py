"""What an evaluation produces and what a run records: pure Python value types.

An `Outcome` is the result of training one genome; a `Record` is one line of a run's
`evaluations.jsonl`: which genome, where it came from, and its outcome.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from genesis.core.config import check_type
from genesis.core.genome import Genome
from genesis.errors import GenesisError

WORST_FITNESS = math.inf  # validation loss given to a genome that failed to train
CURVE_POINTS = 8  # points of a learning curve; early stopping checks at each but the last
TIMING_FIELDS = ("tokens_per_s", "wall_s", "latency_ms")  # the only fields that vary between equal runs
STATUSES = ("ok", "diverged", "oom", "error", "lost")  # see `Outcome.status`
OBJECTIVES = {  # name -> what it minimizes, read from an Outcome
    "val_loss": "validation loss",
    "params": "non-embedding parameter count",
    "latency_ms": "inference latency of one sequence, milliseconds",
    "size_bytes": "bytes to store the weights (ternary weights at 1.58 bits)",
}


@dataclass(frozen=True)
class Outcome:
    """The result of training and evaluating one genome.

    Attributes:
        status: "ok", or why the genome has no fitness: "diverged" (NaN/inf loss),
            "oom" (out of memory), "error" (any other exception) or "lost" (the
            machine lost the training: a worker process died, a remote task failed;
            nothing is known about the genome, so a later genome that shares its
            training trains again).
        val_loss: mean cross-entropy on the recipe's fixed validation batches.
        val_ppl: exp(val_loss).
        train_loss: mean training loss over the last tenth of the steps.
        params: exact trainable parameter count (tied head counted once).
        non_embedding_params: params without token and position embeddings.
        init_grad_norm: global gradient norm on the first batch, before any update
            (a training-free proxy of trainability).
        tokens: training tokens consumed (the fidelity of every number here).
        tokens_per_s: training throughput (wall clock, evaluation excluded).
        latency_ms: median time of one forward pass over a single full-length sequence
            (inference latency; varies with the machine and its load).
        size_bytes: bytes to store the weights (32 bits each, 1.58 for ternary ones).
        wall_s: wall time of the whole evaluation, model build to validation.
        reason: for a failed status, a one-line explanation.
        curve: the learning curve, mean training loss over each of `CURVE_POINTS` equal
            parts of the step budget (empty for budgets of fewer steps).
        stopped_at: the step after which training was given up as hopeless (early
            stopping), None when it ran its whole budget.
        test_loss: mean cross-entropy on fixed windows of the held-out test split, only
            measured when asked (sweeps, confirmation); selection never sees it.
        replicates: with several training seeds, every replicate's own outcome (as a
            dict); the fields above then hold their mean (losses) or their total
            (wall time), and `tokens` the fewest any replicate reached.
    """

    status: str
    val_loss: float | None = None
    val_ppl: float | None = None
    train_loss: float | None = None
    params: int | None = None
    non_embedding_params: int | None = None
    init_grad_norm: float | None = None
    tokens: int = 0
    tokens_per_s: float | None = None
    latency_ms: float | None = None
    size_bytes: int | None = None
    wall_s: float = 0.0
    reason: str = ""
    curve: list[float] = field(default_factory=list)
    stopped_at: int | None = None
    test_loss: float | None = None
    replicates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fitness(self) -> float:
        """The value evolution minimizes: validation loss, or the worst for a failure."""
        if self.status != "ok" or self.val_loss is None or not math.isfinite(self.val_loss):
            return WORST_FITNESS
        return self.val_loss

    def rank(self, objective: str = "val_loss") -> tuple[int, float]:
        """Sort key, best first: more training tokens (compare at equal fidelity), then
        the lower value of `objective`; failures last."""
        return (-self.tokens if self.status == "ok" else 0, self.objective(objective))

    def objective(self, name: str) -> float:
        """The value of objective `name` (see `OBJECTIVES`), worst for a failure."""
        if self.status != "ok":
            return WORST_FITNESS
        if name == "val_loss":
            return self.fitness
        value = {"params": self.non_embedding_params, "latency_ms": self.latency_ms,
                 "size_bytes": self.size_bytes}[name]
        return WORST_FITNESS if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        """Inverse of `to_dict`, checking every field's type (a record may come from
        someone else's run folder or table).

        Raises:
            GenesisError: an unknown field, or a value of another type.
        """
        if not isinstance(data, dict):
            raise GenesisError("metrics must be an object")
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise GenesisError(f"unknown metric '{unknown[0]}'")
        for name, value in data.items():
            check_type(name, value, fields[name])
        return cls(**data)


@dataclass(frozen=True)
class Record:
    """One evaluation in a run: the genome, its origin and its outcome.

    Attributes:
        generation: 0 for the random initial population.
        index: position in the generation's population.
        genome: the evaluated genome.
        parents: ids of the parent genomes (none for random ones).
        operator: how it was made: random, elite, crossover, mutation,
            crossover+mutation, clone (a selected parent copied unchanged), or the
            Optuna sampler that proposed it (tpe, nsga2-optuna).
        outcome: the training result.
        cached: true when the outcome was reused from an earlier evaluation of the same
            genome instead of training again.
        compute_tokens: training tokens this evaluation cost, lower successive-halving
            rungs included; 0 when cached. A run's compute is the sum over its records.
        rung: under successive halving, the rung its training ended at (0 is the first;
            a resumed run ranks each rung over the genomes recorded there too); None for
            a cached repeat or a run with one rung.
    """

    generation: int
    index: int
    genome: Genome
    parents: tuple[str, ...]
    operator: str
    outcome: Outcome
    cached: bool = False
    compute_tokens: int = 0
    rung: int | None = None

    @property
    def genome_id(self) -> str:
        return self.genome.id

    def to_dict(self) -> dict[str, Any]:
        """The record as one JSON-ready dict (a line of `evaluations.jsonl`)."""
        return {
            "generation": self.generation,
            "index": self.index,
            "genome_id": self.genome.id,
            "genome": self.genome.to_dict(),
            "parents": list(self.parents),
            "operator": self.operator,
            "cached": self.cached,
            "compute_tokens": self.compute_tokens,
            **({"rung": self.rung} if self.rung is not None else {}),
            "status": self.outcome.status,
            "fitness": None if math.isinf(self.outcome.fitness) else self.outcome.fitness,
            "metrics": self.outcome.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        """Inverse of `to_dict`, checking every field's type.

        Raises:
            GenesisError: a field of another type (KeyError for a missing one).
        """
        for name, kind in (("generation", "int"), ("index", "int"), ("operator", "str"), ("cached", "bool"),
                           ("compute_tokens", "int"), ("rung", "int | None")):
            if name in data:
                check_type(name, data[name], kind)
        if not isinstance(data["parents"], list) or not all(isinstance(p, str) for p in data["parents"]):
            raise GenesisError("parents must be a list of genome ids")
        return cls(
            generation=data["generation"],
            index=data["index"],
            genome=Genome.from_dict(data["genome"]),
            parents=tuple(data["parents"]),
            operator=data["operator"],
            outcome=Outcome.from_dict(data["metrics"]),
            cached=data.get("cached", False),
            # records written before compute was counted: a fresh training cost its tokens
            compute_tokens=data.get("compute_tokens",
                                    0 if data.get("cached") else data["metrics"].get("tokens", 0)),
            rung=data.get("rung"),
        )


def full_fidelity(records: Iterable[Record]) -> int:
    """The highest fidelity among `records`: the most training tokens of a genome that
    trained successfully (0 when none did). Losses compare only at one fidelity."""
    return max((r.outcome.tokens for r in records if math.isfinite(r.outcome.fitness)), default=0)


SEEDING = "training_id"  # how runs since σ left the training identity key seeds and weights


def training_identity(config: dict[str, Any], genome: Genome) -> str:
    """What keys a genome's training seed and kept weights in a run with `config`: its
    training identity, or, in runs from before σ left it, its genome id."""
    return genome.training_id if config.get("seeding") == SEEDING else genome.id


def training_seed(run_seed: int, training_id: str, replicate: int = 0) -> int:
    """The seed replicate `replicate` of a model trains with: fixed by the run seed, the
    genome's training identity (`Genome.training_id`) and the replicate number.

    Because the seed does not depend on when a genome is evaluated, an equal model
    always gets an equal outcome, which is what makes the fitness cache exact; other
    replicate numbers give fresh, independent seeds.
    """
    key = f"{run_seed}:{training_id}" + (f":{replicate}" if replicate else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def combine_replicates(outcomes: list[Outcome]) -> Outcome:
    """One outcome for a genome trained with several seeds: mean losses, the fewest
    tokens any replicate reached (its fidelity), total wall time, and every replicate's
    own outcome in `replicates`. A failed replicate fails the genome."""
    if len(outcomes) == 1:
        return outcomes[0]
    failed = next((o for o in outcomes if o.status != "ok"), None)
    replicates = [o.to_dict() for o in outcomes]
    wall_s = sum(o.wall_s for o in outcomes)
    if failed is not None:
        return dataclasses.replace(failed, wall_s=wall_s, replicates=replicates)

    def mean(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else sum(values) / len(values)

    val_loss = mean([o.val_loss for o in outcomes])
    curves = [o.curve for o in outcomes]
    curve = ([sum(points) / len(points) for points in zip(*curves)]
             if len({len(c) for c in curves}) == 1 else [])
    stops = [o.stopped_at for o in outcomes if o.stopped_at is not None]
    return dataclasses.replace(
        outcomes[0], val_loss=val_loss, val_ppl=math.exp(val_loss),
        train_loss=mean([o.train_loss for o in outcomes]),
        test_loss=mean([o.test_loss for o in outcomes]),
        init_grad_norm=mean([o.init_grad_norm for o in outcomes]),
        tokens=min(o.tokens for o in outcomes),
        tokens_per_s=mean([o.tokens_per_s for o in outcomes]),
        latency_ms=sorted(o.latency_ms or 0.0 for o in outcomes)[len(outcomes) // 2],
        wall_s=wall_s, curve=curve, stopped_at=min(stops) if stops else None,
        replicates=replicates)


def best_records(records: Iterable[Record], k: int) -> list[Record]:
    """The `k` best distinct models among `records` (first record of each training
    identity that was not lost: genomes that differ only in σ are one model), at the
    highest fidelity first."""
    first: dict[str, Record] = {}
    for record in records:  # a lost training says nothing: a later one of the model stands for it
        known = first.get(record.genome.training_id)
        if known is None or (known.outcome.status == "lost" and record.outcome.status != "lost"):
            first[record.genome.training_id] = record
    ranked = sorted(first.values(), key=lambda r: (r.outcome.rank(), r.generation, r.index))
    return ranked[:k]
