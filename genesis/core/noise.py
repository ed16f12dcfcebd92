"""Seed noise and confirmed champions: what a run's numbers are worth.

One brief training is a noisy measurement: the same architecture trained with another
seed lands a few hundredths of a nat away, as far as many differences between
architectures. And the best genome of a run is the minimum of many such draws,
measured on the validation windows that selected it, so its loss is optimistic. Two
kinds of *retraining* (a training with a fresh seed, never used for selection) answer
both problems:

- **noise probes**: after each generation the best model(s) so far train again with a
  fresh seed; the spread between trainings of one architecture is the run's noise floor.
- **confirmation**: at the end, the best models are trained with fresh seeds (probes of
  them count) and measured on the held-out *test* split: the confirmed champions.

A fresh seed is a replicate number the run has not used for that architecture
(`genesis.core.records.training_seed`). Retrainings are kept in the run folder's
`retrainings.jsonl`, so a resumed run redoes none of them. Pure Python: no torch.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from genesis.core.genome import Genome
from genesis.core.records import Outcome, Record, best_records, full_fidelity

PROBE, CONFIRM = "probe", "confirm"


@dataclass(frozen=True)
class Retraining:
    """One fresh-seed training of a model, outside selection.

    Attributes:
        kind: "probe" (noise floor, after a generation) or "confirm" (end of run).
        generation: the generation after which it ran (the last one + 1 for confirmation).
        genome: the genome retrained (its training identity is what counts).
        replicate: the replicate number that seeded it (never one selection used).
        outcome: its result; `test_loss` is measured.
    """

    kind: str
    generation: int
    genome: Genome
    replicate: int
    outcome: Outcome

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "generation": self.generation, "genome": self.genome.to_dict(),
                "training_id": self.genome.training_id, "replicate": self.replicate,
                "metrics": self.outcome.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Retraining:
        return cls(data["kind"], data["generation"], Genome.from_dict(data["genome"]),
                   data["replicate"], Outcome.from_dict(data["metrics"]))


def fresh_replicates(used: Iterable[int], first: int, count: int) -> list[int]:
    """The `count` smallest replicate numbers from `first` on that are not in `used`."""
    taken, found, candidate = set(used), [], first
    while len(found) < count:
        if candidate not in taken:
            found.append(candidate)
        candidate += 1
    return found


def pooled_sd(groups: Iterable[Sequence[float]]) -> tuple[float | None, int]:
    """The pooled within-group standard deviation and its degrees of freedom.

    Each group holds repeated measurements of one thing (losses of one architecture
    under different seeds); groups of one add nothing. None when no group has two.
    """
    squares, df = 0.0, 0
    for values in groups:
        values = [v for v in values if v is not None and math.isfinite(v)]
        if len(values) >= 2:
            mean = sum(values) / len(values)
            squares += sum((v - mean) ** 2 for v in values)
            df += len(values) - 1
    return (math.sqrt(squares / df), df) if df else (None, 0)


@functools.lru_cache(maxsize=1024)
def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided Student t quantile for `df` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


@functools.lru_cache(maxsize=1024)  # about 0.1 s a call: a run's summary asks for few distinct ones, often
def _studentized_range(level: float, groups: int, df: int) -> float:
    from scipy import stats

    return float(stats.studentized_range.ppf(level, groups, df))


def selection_margin(groups: int, df: int, sd: float, a: int, b: int, level: float = 0.95) -> float:
    """How far apart noise alone puts the best and the worst of `groups` means picked after
    the fact (means of `a` and `b` trainings with seed noise `sd` on `df` degrees of
    freedom): the studentized range's quantile (Tukey-Kramer). For two groups it is the
    pairwise t margin."""
    q = _studentized_range(level, max(2, groups), df)
    return q * sd * math.sqrt((1 / a + 1 / b) / 2)


def noise_floor(retrainings: Sequence[Retraining], records: Sequence[Record] = ()) -> dict[str, Any]:
    """The run's seed noise: pooled standard deviation of validation loss between
    trainings of one architecture with different seeds.

    Uses fresh-seed retrainings and, for genomes trained with several replicates,
    their replicates. The training that selected a genome is left out: it was picked
    for being low, so it would inflate the spread.
    """
    # one group per model: its replicates and its retrainings together (as two groups a
    # model with both would count twice, and its two means would hide their spread)
    groups: dict[str, list[float]] = {}
    for record in records:
        if not record.cached and len(record.outcome.replicates) > 1 and record.outcome.status == "ok":
            groups.setdefault(record.genome.training_id, []).extend(r["val_loss"] for r in record.outcome.replicates)
    for retraining in retrainings:
        if retraining.outcome.status == "ok" and retraining.outcome.stopped_at is None:
            groups.setdefault(retraining.genome.training_id, []).append(retraining.outcome.val_loss)
    sd, df = pooled_sd(groups.values())
    return {
        "val_loss_sd": sd,
        "df": df,
        "ppl_percent": None if sd is None else 100 * (math.exp(sd) - 1),
        "architectures": sum(1 for g in groups.values() if len(g) >= 2),
        "trainings": len(retrainings),
    }


def best_full(records: Sequence[Record], k: int) -> list[Record]:
    """The best `k` distinct models that trained fully at the run's highest fidelity."""
    full = full_fidelity(records)
    return [r for r in best_records(records, k)
            if r.outcome.status == "ok" and math.isfinite(r.outcome.fitness) and r.outcome.tokens == full
            and r.outcome.stopped_at is None]


def confirmed_champions(records: Sequence[Record], retrainings: Sequence[Retraining], count: int,
                        level: float = 0.95) -> list[dict[str, Any]]:
    """The `count` best models at selection, confirmed: best test loss first.

    For each: the mean test loss of its fresh-seed retrainings (noise probes and
    confirmations), and an interval of that mean from the pooled between-seed spread
    of test loss over all of them (degrees of freedom add up across models), beside
    the validation loss that selected it. Models without a retraining are left out.
    """
    selected = {r.genome.training_id: r for r in best_full(records, count)}
    groups: dict[str, list[float]] = {}
    for retraining in retrainings:
        outcome = retraining.outcome
        if (outcome.status == "ok" and outcome.test_loss is not None and outcome.stopped_at is None
                and retraining.genome.training_id in selected):
            groups.setdefault(retraining.genome.training_id, []).append(outcome.test_loss)
    sd, df = pooled_sd(groups.values())
    half_width = None if sd is None else t_quantile(df, level)
    champions = []
    for training_id, losses in groups.items():
        record = selected[training_id]
        mean = statistics.fmean(losses)
        margin = None if half_width is None else half_width * sd / math.sqrt(len(losses))
        champions.append({
            "genome_id": record.genome_id,
            "training_id": training_id,
            "genome": record.genome.to_dict(),
            "traits": record.genome.describe(),
            "seeds": len(losses),
            "test_loss": mean,
            "test_ppl": math.exp(mean),
            "test_ppl_low": None if margin is None else math.exp(mean - margin),
            "test_ppl_high": None if margin is None else math.exp(mean + margin),
            "test_loss_sd": sd,
            "selection_val_loss": record.outcome.val_loss,
            "selection_val_ppl": record.outcome.val_ppl,
        })
    champions.sort(key=lambda c: c["test_loss"])
    for rank, champion in enumerate(champions, start=1):
        champion["rank"] = rank
        best = champions[0]
        # #1 is picked after the fact among all the confirmed: a selection-aware margin
        champion["within_noise_of_best"] = (
            rank > 1 and sd is not None
            and champion["test_loss"] - best["test_loss"]
            < selection_margin(len(champions), df, sd, champion["seeds"], best["seeds"], level))
    return champions
