"""Which traits matter: effects of each trait on loss, with intervals, corrected tests
and the noise floor beside them. Used by run reports and by the ground-truth analysis
of sweep tables. No torch.

For every trait: the mean loss of each value and the spread between the best and
worst value (in loss, the unit the noise floor is measured in), eta² (share of loss
variance between values) with a bootstrap interval, and a test of "no effect"
(Spearman for ordered traits, Kruskal–Wallis for categories). p-values are corrected
across the traits tested with Holm's step-down method, and no trait is called
significant on fewer than `MIN_SIGNIFICANT` distinct architectures. fANOVA importance
(Optuna's evaluator) is computed on distinct architectures and repeated over
bootstrap resamples to give its spread.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
from scipy import stats

from genesis.core.genome import TRAINING_NEUTRAL
from genesis.core.noise import selection_margin
from genesis.core.space import ChoiceDomain, SearchSpace

ALPHA = 0.05
MIN_SAMPLES = 5  # distinct architectures below which no effect is computed
MIN_SIGNIFICANT = 10  # distinct architectures below which nothing is called significant


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (None stays None): controls the chance of any
    false "significant" across the family at the level compared with."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def eta_squared(values: Sequence[Any], losses: np.ndarray) -> float:
    """Share of the loss variance that lies between the trait's values."""
    groups: dict[Any, list[float]] = {}
    for value, loss in zip(values, losses):
        groups.setdefault(value, []).append(float(loss))
    grand = float(np.mean(losses))
    between = sum(len(v) * (np.mean(v) - grand) ** 2 for v in groups.values())
    total = float(np.sum((losses - grand) ** 2))
    return float(between / total) if total > 0 else 0.0


def _bootstrap(statistic, n: int, resamples: int, seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile 95% interval of `statistic(indices)` over resamples of n items."""
    if resamples < 1:
        return None, None
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        value = statistic(rng.integers(0, n, n))
        if value is not None and math.isfinite(value):
            draws.append(value)
    if len(draws) < resamples / 2:
        return None, None
    low, high = np.quantile(draws, [0.025, 0.975])
    return float(low), float(high)


def trait_effects(genomes: Sequence[Any], losses: Sequence[float], space: SearchSpace,
                  noise_sd: float | None = None, noise_df: int = 0, resamples: int = 1000,
                  fanova: dict[str, Any] | None = None, trainings_per_loss: int = 1) -> dict[str, Any]:
    """Each trait's effect on loss over distinct architectures, ranked by evidence.

    Args:
        genomes: one genome per distinct architecture.
        losses: the loss of each (lower is better).
        space: the search space (its domains say which traits are categorical).
        noise_sd: the seed noise of one training's loss (sd), to mark effects within it.
        noise_df: its degrees of freedom.
        trainings_per_loss: how many trainings each loss is the mean of (`--replicates`):
            the noise of one loss is then noise_sd / sqrt of it.
        resamples: bootstrap resamples of the intervals.
        fanova: fANOVA importances (`fanova_importance`) to list beside the effects.
    """
    losses = np.asarray(losses, dtype=float)
    fanova = fanova or {}
    if noise_sd is not None:
        noise_sd = noise_sd / math.sqrt(max(1, trainings_per_loss))
    rows = []
    for name, domain in space.domains.items():
        values = [getattr(g, name) for g in genomes]
        row: dict[str, Any] = {"trait": name, "kind": "categorical" if isinstance(domain, ChoiceDomain)
                               else "numeric", "n": len(values), "effect": None, "p_value": None,
                               "p_holm": None, "significant": None, "note": None,
                               "fanova": fanova.get("importances", {}).get(name),
                               "fanova_low": fanova.get("low", {}).get(name),
                               "fanova_high": fanova.get("high", {}).get(name)}
        if name in TRAINING_NEUTRAL:
            row["note"] = "does not change training (a colony-only gene)"
        elif len(values) < MIN_SAMPLES:
            row["note"] = f"needs at least {MIN_SAMPLES} distinct trained architectures, has {len(values)}"
        elif len(set(values)) < 2:
            row["note"] = "the trait did not vary"
        else:
            row.update(_effect(values, losses, row["kind"], resamples, noise_sd, noise_df))
        rows.append(row)
    for row, adjusted in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = adjusted
        if adjusted is not None:
            row["significant"] = adjusted < ALPHA and row["n"] >= MIN_SIGNIFICANT
            if adjusted < ALPHA and row["n"] < MIN_SIGNIFICANT:
                row["note"] = (f"p passes, but {row['n']} architectures are too few to call it "
                               f"(at least {MIN_SIGNIFICANT})")
    ranked = sorted(rows, key=lambda r: (not r["significant"],
                                         -(r["effect"] if r["effect"] is not None else -1)))
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank if row["effect"] is not None else None
    return {"ranking": ranked, "noise_sd": noise_sd, "alpha": ALPHA, "correction": "holm",
            "min_significant": MIN_SIGNIFICANT, "fanova_note": fanova.get("note")}


def _effect(values: list, losses: np.ndarray, kind: str, resamples: int,
            noise_sd: float | None, noise_df: int) -> dict[str, Any]:
    groups: dict[Any, list[float]] = {}
    for value, loss in zip(values, losses):
        groups.setdefault(value, []).append(float(loss))
    per_value = {str(k): {"n": len(v), "mean_loss": float(np.mean(v)), "mean_ppl": math.exp(float(np.mean(v)))}
                 for k, v in sorted(groups.items())}
    eta2 = eta_squared(values, losses)
    eta_low, eta_high = _bootstrap(lambda idx: eta_squared([values[i] for i in idx], losses[idx]),
                                   len(values), resamples)
    result: dict[str, Any] = {"per_value": per_value, "eta2": eta2, "eta2_low": eta_low,
                              "eta2_high": eta_high, "effect": eta2}
    # The spread between the best and the worst value with two or more architectures,
    # in loss: the number the seed noise is compared with.
    measured = {k: v for k, v in groups.items() if len(v) >= 2}
    if len(measured) >= 2:
        best = min(measured, key=lambda k: np.mean(measured[k]))
        worst = max(measured, key=lambda k: np.mean(measured[k]))
        spread = float(np.mean(measured[worst]) - np.mean(measured[best]))
        result.update(best_value=str(best), worst_value=str(worst), loss_spread=spread)
        if noise_sd is not None and noise_df > 0:
            # best and worst are picked after the fact among len(measured) values: noise alone
            # spreads their means up to the studentized range (Tukey-Kramer), not a pairwise t
            margin = selection_margin(len(measured), noise_df, noise_sd, len(measured[best]), len(measured[worst]))
            result.update(noise_margin=margin, within_noise=spread < margin)
    if kind == "numeric":
        numeric = np.array(values, dtype=float)
        test = stats.spearmanr(numeric, losses)
        rho = float(test.statistic)
        if math.isfinite(rho):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", stats.ConstantInputWarning)
                low, high = _bootstrap(lambda idx: float(stats.spearmanr(numeric[idx], losses[idx]).statistic),
                                       len(values), resamples)
            result.update(rho=rho, rho_low=low, rho_high=high, p_value=float(test.pvalue))
    else:
        testable = [v for v in groups.values() if len(v) >= 2]
        if len(testable) >= 2:
            h, p_value = stats.kruskal(*testable)
            result.update(kruskal_h=float(h), p_value=float(p_value))
        else:
            result["note"] = "Kruskal–Wallis needs two values with at least two architectures each"
    return result


def fanova_importance(genomes: Sequence[Any], losses: Sequence[float], space: SearchSpace,
                      resamples: int = 10) -> dict[str, Any]:
    """fANOVA importance of each searched trait over distinct architectures (Optuna's
    evaluator on a study holding one trial each), with a 95% percentile interval over
    `resamples` bootstrap resamples of the architectures."""
    import optuna

    from genesis.search.strategies.optuna import distributions

    dists = {k: v for k, v in distributions(space).items() if k not in TRAINING_NEUTRAL}
    if len(genomes) < MIN_SAMPLES:
        return {"note": f"fANOVA needs at least {MIN_SAMPLES} distinct trained architectures"}

    def importance(indices: Sequence[int]) -> dict[str, float]:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(direction="minimize")
            for i in indices:
                study.add_trial(optuna.trial.create_trial(
                    params={k: getattr(genomes[i], k) for k in dists}, distributions=dists,
                    value=float(losses[i])))
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            return {k: float(v) for k, v in optuna.importance.get_param_importances(
                study, evaluator=evaluator, normalize=True).items()}
        finally:
            optuna.logging.set_verbosity(verbosity)

    try:
        point = importance(range(len(genomes)))
        rng = np.random.default_rng(0)
        draws = [importance(rng.integers(0, len(genomes), len(genomes))) for _ in range(resamples)]
    except Exception as error:  # a degenerate sample must not stop a report
        return {"note": f"fANOVA importance unavailable: {type(error).__name__}: {error}"}
    low = {k: float(np.quantile([d.get(k, 0.0) for d in draws], 0.025)) for k in point} if draws else {}
    high = {k: float(np.quantile([d.get(k, 0.0) for d in draws], 0.975)) for k in point} if draws else {}
    return {"importances": point, "low": low, "high": high, "resamples": resamples,
            "architectures": len(genomes)}
