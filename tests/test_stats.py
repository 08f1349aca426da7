"""pytest_mlgates.stats against SciPy (and statsmodels where installed): the binomial tail,
the Clopper-Pearson and Wilson intervals that suspicious_perfection (and later the
``confidence:`` of rate gates) rely on."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_mlgates.stats import (
    beta_cdf,
    binomial_tail,
    clopper_pearson,
    perfect_score_n,
    rate_lower_bound,
    successes,
    wilson,
)

counts = st.integers(min_value=1, max_value=5000).flatmap(
    lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n)))
confidences = st.sampled_from([0.8, 0.9, 0.95, 0.99])


def test_worked_examples() -> None:
    assert binomial_tail(54, 54, 0.99) == pytest.approx(0.99 ** 54)
    assert clopper_pearson(54, 54, 0.95, side="lower") == pytest.approx((0.05 ** (1 / 54), 1.0))
    assert perfect_score_n(0.99, 0.05) == 299 and 0.99 ** 298 >= 0.05 > 0.99 ** 299
    low, high = wilson(3, 3, 0.95)
    assert 0.43 < low < 0.44 and high == 1.0  # a recall of 1.0 on 3 samples clears no 0.8 floor
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** 0.1))


@pytest.mark.parametrize("bad", [(-1, 5, 0.95), (6, 5, 0.95), (1, 0, 0.95), (1, 5, 1.0), (1, 5, 0.0)])
def test_bad_arguments_are_value_errors(bad: tuple[int, int, float]) -> None:
    with pytest.raises(ValueError):
        clopper_pearson(*bad)
    with pytest.raises(ValueError):
        wilson(*bad)


@settings(max_examples=150, deadline=None)
@given(counts, confidences)
def test_clopper_pearson_matches_scipy(kn: tuple[int, int], confidence: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    k, n = kn
    alpha = 1 - confidence
    low, high = clopper_pearson(k, n, confidence)
    want_low = 0.0 if k == 0 else stats.beta.ppf(alpha / 2, k, n - k + 1)
    want_high = 1.0 if k == n else stats.beta.ppf(1 - alpha / 2, k + 1, n - k)
    assert low == pytest.approx(want_low, abs=1e-9) and high == pytest.approx(want_high, abs=1e-9)
    one_sided, _ = clopper_pearson(k, n, confidence, side="lower")
    assert one_sided == pytest.approx(0.0 if k == 0 else stats.beta.ppf(alpha, k, n - k + 1), abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(counts, st.floats(min_value=0.0, max_value=1.0))
def test_binomial_tail_matches_scipy(kn: tuple[int, int], p: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    m, n = kn
    assert binomial_tail(m, n, p) == pytest.approx(float(stats.binom.sf(m - 1, n, p)), abs=1e-10)


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1 - 1e-6), st.floats(min_value=0.05, max_value=500),
       st.floats(min_value=0.05, max_value=500))
def test_beta_cdf_matches_scipy(x: float, a: float, b: float) -> None:
    special = pytest.importorskip("scipy.special")
    assert beta_cdf(x, a, b) == pytest.approx(float(special.betainc(a, b, x)), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(counts, confidences)
def test_intervals_match_statsmodels(kn: tuple[int, int], confidence: float) -> None:
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    k, n = kn
    alpha = 1 - confidence
    assert clopper_pearson(k, n, confidence) == pytest.approx(
        proportion.proportion_confint(k, n, alpha=alpha, method="beta"), abs=1e-9)
    assert wilson(k, n, confidence) == pytest.approx(
        proportion.proportion_confint(k, n, alpha=alpha, method="wilson"), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(counts, confidences)
def test_wilson_is_inside_unit_interval_and_holds_the_rate(kn: tuple[int, int], confidence: float) -> None:
    k, n = kn
    low, high = wilson(k, n, confidence)
    assert 0.0 <= low <= k / n + 1e-12 and k / n - 1e-12 <= high <= 1.0
    assert not math.isnan(low + high)


@settings(max_examples=150, deadline=None)
@given(counts, confidences)
def test_rate_lower_bound_is_the_two_sided_clopper_pearson_lower_end(kn: tuple[int, int], confidence: float) -> None:
    """What class_recall's confidence: holds the floor against, against SciPy's beta quantile."""
    stats = pytest.importorskip("scipy.stats")
    k, n = kn
    want = 0.0 if k == 0 else float(stats.beta.ppf((1 - confidence) / 2, k, n - k + 1))
    assert rate_lower_bound(k, n, confidence) == pytest.approx(want, abs=1e-9)
    assert rate_lower_bound(k, n, confidence) <= k / n


def test_rate_lower_bound_worked_examples() -> None:
    assert rate_lower_bound(3, 3, 0.95) == pytest.approx(0.025 ** (1 / 3))  # 0.292: clears no 0.8 floor
    assert rate_lower_bound(0, 0, 0.95) == 0.0
    with pytest.raises(ValueError):
        rate_lower_bound(0, 0, 1.5)


@settings(max_examples=200, deadline=None)
@given(counts)
def test_successes_gives_back_the_count_of_a_logged_rate(kn: tuple[int, int]) -> None:
    k, n = kn
    assert successes(k / n, n) == k
    assert successes(round(k / n, 4), n) == k or n > 1000  # a rate logged with 4 decimals
    assert successes(float("nan"), n) is None


def test_successes_refuses_a_rate_its_count_does_not_explain() -> None:
    assert successes(0.42, 7) is None  # 2.94 of 7
    assert successes(2 / 3, 3) == 2 and successes(0.667, 3) == 2
    assert successes(1.0, 0) == 0 and successes(0.5, -1) is None


def _coverage(n: int, p: float, interval: object) -> float:
    """The fraction of 20,000 simulated draws of Binomial(n, p) whose interval holds p."""
    import numpy as np

    draws = np.random.default_rng(20).binomial(n, p, size=20_000)
    bounds = {k: interval(k, n) for k in range(n + 1)}  # type: ignore[operator]
    ks, times = np.unique(draws, return_counts=True)
    return sum(t for k, t in zip(ks.tolist(), times.tolist()) if bounds[k][0] <= p <= bounds[k][1]) / len(draws)


@pytest.mark.parametrize("n", [3, 10, 37, 200])
@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.8, 0.97])
def test_95_percent_intervals_cover_simulated_binomial_rates(n: int, p: float) -> None:
    """The 95% Clopper-Pearson interval holds p in at least 94% of simulated draws (it is
    exact: 95% or more in expectation), and its lower end alone -- what class_recall's
    confidence: compares with the floor -- is below p in at least 97% of them."""
    assert _coverage(n, p, lambda k, n: clopper_pearson(k, n, 0.95)) >= 0.94
    assert _coverage(n, p, lambda k, n: (rate_lower_bound(k, n, 0.95), 1.0)) >= 0.97
    if n >= 10:
        assert _coverage(n, p, lambda k, n: wilson(k, n, 0.95)) >= 0.90


def test_wilson_falls_short_on_few_samples_which_is_why_the_gate_uses_clopper_pearson() -> None:
    assert _coverage(3, 0.05, lambda k, n: wilson(k, n, 0.95)) < 0.9
    assert _coverage(3, 0.05, lambda k, n: clopper_pearson(k, n, 0.95)) >= 0.95
