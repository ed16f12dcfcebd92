"""Early stopping of hopeless trainings: the median stopping rule (Golovin et al. 2017,
Google Vizier) as Optuna's MedianPruner / PercentilePruner apply it, at any quantile.

A training is given up after point k of its learning curve when the lowest point it has
reached so far is above the `quantile` of earlier full trainings' curves at point k. At
0.5 this is the median rule; a higher quantile gives up only on clearly hopeless
trainings. (Vizier's own form compares with the others' running averages; with learning
curves that fall as steeply as a µLM's first steps, those averages are far above any
current loss and nothing is ever stopped: measured, see benchmarks/README.md.)

No torch: the evaluator computes the bounds, the trainer only compares against them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from genesis.core.records import CURVE_POINTS

MIN_REFERENCES = 4  # earlier full trainings needed before any training is given up
FIRST_CHECK = 1  # no check at the first curve point: that early, losses mostly tell warm-up apart


def give_up_bounds(references: Sequence[Sequence[float]], quantile: float) -> tuple[float | None, ...]:
    """One bound per curve point but the last (None: no check there), from the learning
    curves of earlier full trainings; no bounds at all with too few references.

    Args:
        references: learning curves (`Outcome.curve`) of trainings that ran their whole
            budget; curves of another length are ignored.
        quantile: in (0, 1]; which quantile of the earlier curves bounds each point.
    """
    curves = [curve for curve in references if len(curve) == CURVE_POINTS]
    if len(curves) < MIN_REFERENCES:
        return ()
    bounds: list[float | None] = [None] * FIRST_CHECK
    for point in range(FIRST_CHECK, CURVE_POINTS - 1):
        bounds.append(float(np.quantile([curve[point] for curve in curves], quantile)))
    return tuple(bounds)

