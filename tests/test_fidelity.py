"""Early-stopping bounds: the median stopping rule over earlier learning curves."""

from __future__ import annotations

import statistics

from hypothesis import given
from hypothesis import strategies as st

from genesis.core.records import CURVE_POINTS
from genesis.search.fidelity import FIRST_CHECK, MIN_REFERENCES, give_up_bounds

curves = st.lists(st.floats(1.0, 10.0), min_size=CURVE_POINTS, max_size=CURVE_POINTS)


def test_no_bounds_from_too_few_references():
    assert give_up_bounds([[5.0] * CURVE_POINTS] * (MIN_REFERENCES - 1), 0.5) == ()
    assert give_up_bounds([[5.0] * 3] * 10, 0.5) == ()  # curves of another budget do not count


@given(st.lists(curves, min_size=MIN_REFERENCES, max_size=12))
def test_the_median_bound_is_the_median_of_earlier_curves_at_each_point(references):
    bounds = give_up_bounds(references, 0.5)
    assert len(bounds) == CURVE_POINTS - 1 and bounds[:FIRST_CHECK] == (None,) * FIRST_CHECK
    for point in range(FIRST_CHECK, CURVE_POINTS - 1):
        assert abs(bounds[point] - statistics.median(curve[point] for curve in references)) < 1e-9


@given(st.lists(curves, min_size=MIN_REFERENCES, max_size=12), st.floats(0.05, 0.95))
def test_a_higher_quantile_never_gives_up_sooner(references, quantile):
    lower, higher = give_up_bounds(references, quantile), give_up_bounds(references, min(1.0, quantile + 0.05))
    assert all(a <= b + 1e-12 for a, b in zip(lower[FIRST_CHECK:], higher[FIRST_CHECK:]))
    top = give_up_bounds(references, 1.0)
    assert all(abs(b - max(c[k] for c in references)) < 1e-9 for k, b in enumerate(top) if b is not None)
