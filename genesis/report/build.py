"""Trait–fitness reports: which genes make a good µLM, and how the population got there.

`build_report(path)` reads a run folder (finished or still going) and returns a
JSON-ready dict; `genesis.report.render` turns it into Markdown, HTML and PNG plots.
Statistics come from scipy and Optuna; where a test has too few samples the report
says so instead of giving a number. Fitness is the validation loss (lower is better).
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats

from genesis.core.records import Record, full_fidelity
from genesis.core.space import ChoiceDomain, FloatDomain, IntDomain, SearchSpace
from genesis.errors import GenesisError
from genesis.report import sections
from genesis.report.traitstats import ALPHA, MIN_SAMPLES, fanova_importance, trait_effects
from genesis.runs.reader import Run, space_of

VARIATION_OPERATORS = ("crossover", "mutation", "crossover+mutation")


def build_report(path: str | Path, top: int = 5, bootstrap_resamples: int = 2000) -> dict[str, Any]:
    """Compute every section of the report for one run folder.

    Args:
        path: the run folder.
        top: how many champions to list.
        bootstrap_resamples: resamples of the bootstrap confidence intervals.
    """
    if top < 0:
        raise GenesisError(f"--top must be 0 or more, not {top}")
    run = Run.load(path)
    space = space_of(run.config)
    distinct = _distinct_trained(run.records)
    summary = run.summary()
    noise = summary["noise"]
    genomes, losses = [r.genome for r in distinct], [_fitness(r) for r in distinct]
    return {
        "run": _run_section(run, summary),
        "noise": noise,
        "baselines": summary["baselines"],
        "best_minus_bigram": summary["best_minus_bigram"],
        "confirmed": summary["confirmed"],
        "convergence": convergence(run.records),
        "diversity": diversity(run.records, space),
        # a fitness is the mean of `replicates` trainings: its noise is the single training's / sqrt(K)
        "traits": trait_effects(genomes, losses, space, noise["val_loss_sd"], noise["df"],
                                bootstrap_resamples, fanova_importance(genomes, losses, space),
                                trainings_per_loss=run.config.get("evaluator", {}).get("replicates", 1)),
        "operators": operator_effects(run.records),
        "sigma": sigma_by_generation(run.records),
        "proxies": proxy_correlations(distinct),
        "pareto": pareto_front(distinct, _searched_objectives(run.config)),
        "champions": champions(run.records, top),
        "alpha": ALPHA,
        **sections.computed(run),
    }


def _searched_objectives(config: dict[str, Any]) -> tuple[str, ...]:
    objectives = tuple(config["evolution"].get("objectives", ("val_loss",)))
    return objectives if len(objectives) > 1 else DEFAULT_FRONT


def _run_section(run: Run, summary: dict[str, Any]) -> dict[str, Any]:
    generations = sorted({r.generation for r in run.records})
    return {
        "id": run.id,
        "path": str(run.path),
        "status": run.status,
        "started": run.config.get("started"),
        "seed": run.config["seed"],
        "recipe": run.config["recipe"]["name"],
        "tokens_per_training": run.config["recipe"]["steps"] * run.config["recipe"]["batch_size"]
        * run.config["recipe"]["seq_len"],
        "data": run.config["data"]["source"],
        "generations_seen": len(generations),
        "generations_planned": run.config["evolution"]["generations"],
        "population": run.config["evolution"]["population_size"],
        "evaluations": summary["evaluations"],
        "trained": summary["trained"],
        "cache_hits": summary["cache_hits"],
        "failed": sum(1 for r in run.records if r.outcome.status != "ok"),
        "given_up": summary["given_up"],
        "compute_tokens": summary["compute"]["search_tokens"],
        "retraining_tokens": summary["compute"]["noise_probe_tokens"] + summary["compute"]["confirmation_tokens"],
        "compute_budget_tokens": run.config["evolution"].get("budget_tokens", 0),
        "strategy": run.config["evolution"].get("strategy", "evolution"),
    }


def _fitness(record: Record) -> float | None:
    value = record.outcome.fitness
    return value if math.isfinite(value) else None


def _distinct_trained(records: Sequence[Record]) -> list[Record]:
    """The first record of every distinct architecture (training identity) that trained
    successfully at the full budget.

    Genomes that differ only in σ are one architecture with one outcome, so they count
    once. Under successive halving, genomes stopped at a lower rung are left out: losses
    are only compared at equal fidelity.
    """
    full = full_fidelity(records)
    seen: dict[str, Record] = {}
    for record in records:
        if _fitness(record) is not None and record.outcome.tokens == full:
            seen.setdefault(record.genome.training_id, record)
    return list(seen.values())


def _by_generation(records: Sequence[Record]) -> dict[int, list[Record]]:
    groups: dict[int, list[Record]] = {}
    for record in records:
        groups.setdefault(record.generation, []).append(record)
    return dict(sorted(groups.items()))


def convergence(records: Sequence[Record]) -> dict[str, Any]:
    """Best, mean and median fitness per generation (full-budget genomes only), the
    compute spent by the end of each generation, time to 95% and total improvement."""
    rows = []
    full = full_fidelity(records)
    spent = 0
    for generation, group in _by_generation(records).items():
        values = [_fitness(r) for r in group if _fitness(r) is not None and r.outcome.tokens == full]
        spent += sum(r.compute_tokens for r in group)
        rows.append({
            "generation": generation,
            "best": min(values) if values else None,
            "mean": float(np.mean(values)) if values else None,
            "median": float(np.median(values)) if values else None,
            "best_ppl": math.exp(min(values)) if values else None,
            "trained": len(values),
            "compute_tokens": spent,
        })
    bests = [row["best"] for row in rows if row["best"] is not None]
    result: dict[str, Any] = {"generations": rows, "generations_to_95": None, "improvement": None}
    if not bests:
        return result
    first, final = bests[0], min(bests)
    # "95% of the final best": the first generation that achieved 95% of the run's total gain.
    threshold = first - 0.95 * (first - final)
    result["generations_to_95"] = next(
        row["generation"] for row in rows if row["best"] is not None and row["best"] <= threshold)
    result["improvement"] = {
        "first_best": first, "final_best": final, "loss_drop": first - final,
        "first_best_ppl": math.exp(first), "final_best_ppl": math.exp(final),
        "ppl_drop_percent": 100 * (1 - math.exp(final - first)),
    }
    return result


def _normalized(space: SearchSpace, name: str, value: Any) -> float:
    """A numeric trait mapped to [0, 1] over its domain (sigma on a log scale)."""
    domain = space.domains[name]
    if isinstance(domain, IntDomain):
        low, high, value = domain.values[0], domain.values[-1], value
    elif isinstance(domain, FloatDomain):
        low, high = domain.low, domain.high
    else:
        low, high, value = math.log(domain.low), math.log(domain.high), math.log(value)
    return 0.0 if high == low else (value - low) / (high - low)


def genome_distance(a: Record, b: Record, space: SearchSpace) -> float:
    """Gower distance of two genomes: the mean per-trait distance, each in [0, 1]."""
    total = 0.0
    for name in space.domains:
        if isinstance(space.domains[name], ChoiceDomain):
            total += float(getattr(a.genome, name) != getattr(b.genome, name))
        else:
            total += abs(_normalized(space, name, getattr(a.genome, name))
                         - _normalized(space, name, getattr(b.genome, name)))
    return total / len(space.domains)


def diversity(records: Sequence[Record], space: SearchSpace) -> list[dict[str, Any]]:
    """Per generation: unique genomes, mean pairwise distance, and per-trait spread.

    Categorical traits report Shannon entropy in bits; numeric traits the standard
    deviation of their value normalized to [0, 1] over the domain.
    """
    rows = []
    for generation, group in _by_generation(records).items():
        traits: dict[str, dict[str, float]] = {}
        for name in space.domains:
            values = [getattr(r.genome, name) for r in group]
            if isinstance(space.domains[name], ChoiceDomain):
                counts = np.array(list(Counter(values).values()), dtype=float)
                traits[name] = {"entropy_bits": float(stats.entropy(counts, base=2))}
            else:
                scaled = [_normalized(space, name, v) for v in values]
                traits[name] = {"spread": float(np.std(scaled)), "distinct": len(set(values))}
        pairs = list(combinations(group, 2))
        rows.append({
            "generation": generation,
            "unique": len({r.genome_id for r in group}),
            "size": len(group),
            "mean_pairwise_distance": (float(np.mean([genome_distance(a, b, space) for a, b in pairs]))
                                       if pairs else 0.0),
            "traits": traits,
        })
    return rows


PROXIES = ("non_embedding_params", "init_grad_norm")


def proxy_correlations(distinct: Sequence[Record]) -> list[dict[str, Any]]:
    """How well each training-free proxy ranks genomes: Spearman ρ with validation loss.

    The non-embedding parameter count ranks transformer LMs well in the literature
    (Lightweight Transformer Search, 2022); the gradient norm at initialization is a
    zero-cost proxy. A negative ρ means larger values go with lower loss.
    """
    rows = []
    for name in PROXIES:
        pairs = [(getattr(r.outcome, name), _fitness(r)) for r in distinct
                 if getattr(r.outcome, name) is not None]
        row: dict[str, Any] = {"proxy": name, "n": len(pairs), "rho": None, "p_value": None, "note": None}
        if len(pairs) < MIN_SAMPLES:
            row["note"] = f"needs at least {MIN_SAMPLES} distinct trained genomes, has {len(pairs)}"
        elif len({p for p, _ in pairs}) < 2:
            row["note"] = "the proxy did not vary"
        else:
            result = stats.spearmanr([p for p, _ in pairs], [f for _, f in pairs])
            row.update(rho=float(result.statistic), p_value=float(result.pvalue))
        rows.append(row)
    return rows


def operator_effects(records: Sequence[Record]) -> list[dict[str, Any]]:
    """How children compare with their best parent, for each variation operator.

    A negative change is an improvement (fitness is a loss). Children that failed to
    train count as not improved and are left out of the mean change.
    """
    fitness_of: dict[str, float | None] = {}
    for record in records:
        fitness_of.setdefault(record.genome_id, _fitness(record))
    rows = []
    for operator in VARIATION_OPERATORS:
        changes, failed = [], 0
        for record in records:
            if record.operator != operator or record.cached:
                continue
            parents = [fitness_of.get(p) for p in record.parents]
            parents = [p for p in parents if p is not None]
            child = _fitness(record)
            if not parents:
                continue
            if child is None:
                failed += 1
            else:
                changes.append(child - min(parents))
        count = len(changes) + failed
        rows.append({
            "operator": operator, "children": count, "failed": failed,
            "improved_share": (sum(c < 0 for c in changes) / count) if count else None,
            "mean_change": float(np.mean(changes)) if changes else None,
        })
    return rows


def sigma_by_generation(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Median, minimum and maximum weight-mutation σ per generation."""
    return [{"generation": g, "median": float(np.median([r.genome.sigma for r in group])),
             "min": min(r.genome.sigma for r in group), "max": max(r.genome.sigma for r in group)}
            for g, group in _by_generation(records).items()]


DEFAULT_FRONT = ("val_loss", "params")  # the front of a run that searched one objective


def pareto_front(distinct: Sequence[Record], objectives: Sequence[str] = DEFAULT_FRONT) -> dict[str, Any]:
    """Genomes not dominated over `objectives` (names of `records.OBJECTIVES`, all minimized).

    A run that searched several objectives is read over its own; any other over
    validation loss and non-embedding parameters. Every point lists all four metrics.
    """
    vectors = [(tuple(r.outcome.objective(name) for name in objectives), r) for r in distinct]
    front = [(v, r) for v, r in vectors if not any(_dominates(w, v) for w, _ in vectors)]
    front.sort(key=lambda item: item[0][1:])
    return {
        "objectives": list(objectives),
        "points": [_front_point(r) for _, r in vectors],
        "front": [_front_point(r) for _, r in front],
    }


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and tuple(a) != tuple(b)


def _front_point(record: Record) -> dict[str, Any]:
    outcome = record.outcome
    return {"genome_id": record.genome_id, "genome": record.genome.to_dict(), "traits": record.genome.describe(),
            "val_ppl": outcome.val_ppl, "params": outcome.non_embedding_params,
            "latency_ms": outcome.latency_ms, "size_bytes": outcome.size_bytes}


def champions(records: Sequence[Record], top: int) -> list[dict[str, Any]]:
    """The best distinct genomes with all their metrics and lineage."""
    from genesis.core.records import best_records

    return [{"rank": rank, "genome_id": r.genome_id, "genome": r.genome.to_dict(),
             "traits": r.genome.describe(), "generation": r.generation, "operator": r.operator,
             "parents": list(r.parents), "metrics": r.outcome.to_dict()}
            for rank, r in enumerate(best_records([r for r in records if _fitness(r) is not None], top), 1)]
