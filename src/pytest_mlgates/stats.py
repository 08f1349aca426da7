"""Small, exact statistics for rates measured on n samples: binomial tails and intervals.

A rate (accuracy, a class's recall) measured on ``n`` samples is ``k`` successes of ``n``
trials; how much it says depends on ``n``.  A recall of 1.0 on 3 samples is consistent
with a true recall of 0.4; an accuracy of 1.0 on 54 samples is what a model that is right
99% of the time scores more often than not (``0.99 ** 54 = 0.58``)::

    >>> round(binomial_tail(54, 54, 0.99), 3)        # P(all 54 right | 99% accurate)
    0.581
    >>> clopper_pearson(54, 54, 0.95, side="lower")  # one-sided 95% lower bound
    (0.946..., 1.0)
    >>> wilson(3, 3, 0.95)
    (0.438..., 1.0)

Pure Python (``math`` and ``statistics`` only), so every gate can use it without an extra.
The regularized incomplete beta function is evaluated by its continued fraction (Lentz's
method, as in Numerical Recipes' ``betacf``); quantiles by bisection on it, to 1e-12.
``tests/test_stats.py`` checks them against SciPy and statsmodels where those are installed.
"""

from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["beta_cdf", "beta_ppf", "binomial_tail", "clopper_pearson", "perfect_score_n", "rate_lower_bound",
           "successes", "wilson"]

_EPS = 1e-15
_TINY = 1e-300


def _check(k: int, n: int, confidence: float) -> None:
    if not (isinstance(n, int) and n > 0):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not (isinstance(k, int) and 0 <= k <= n):
        raise ValueError(f"k must be an integer in [0, n={n}], got {k!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b): the Beta(a, b) CDF at ``x``."""
    if a <= 0 or b <= 0:
        raise ValueError("a and b must be > 0")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b), by bisection on :func:`beta_cdf` (to 1e-12)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    if q == 0.0:
        return 0.0
    if q == 1.0:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if beta_cdf(mid, a, b) < q:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2.0


def binomial_tail(m: int, n: int, p: float) -> float:
    """P(X >= m) for X ~ Binomial(n, p): how likely a model right with probability ``p``
    gets at least ``m`` of ``n`` samples right.  ``binomial_tail(n, n, p) == p ** n``."""
    if not (isinstance(n, int) and n >= 0) or not isinstance(m, int):
        raise ValueError("m and n must be integers, n >= 0")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    if m <= 0:
        return 1.0
    if m > n:
        return 0.0
    if m == n:
        return p ** n
    return beta_cdf(p, m, n - m + 1)  # the identity P(X >= m) = I_p(m, n - m + 1)


def clopper_pearson(k: int, n: int, confidence: float = 0.95, side: str = "two-sided") -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a rate from ``k`` successes in ``n`` trials.

    ``side="two-sided"`` splits ``1 - confidence`` between both ends; ``"lower"`` gives
    the one-sided lower bound (upper = 1), ``"upper"`` the one-sided upper bound (lower = 0).
    With ``k == n`` the lower bound is ``alpha ** (1 / n)`` (one-sided).
    """
    _check(k, n, confidence)
    if side not in ("two-sided", "lower", "upper"):
        raise ValueError(f"side must be 'two-sided', 'lower' or 'upper', got {side!r}")
    alpha = 1.0 - confidence
    tail = alpha / 2.0 if side == "two-sided" else alpha
    if k == 0:
        low = 0.0
    elif k == n:
        low = tail ** (1.0 / n)
    else:
        low = beta_ppf(tail, k, n - k + 1)
    if k == n:
        high = 1.0
    elif k == 0:
        high = 1.0 - tail ** (1.0 / n)
    else:
        high = beta_ppf(1.0 - tail, k + 1, n - k)
    if side == "lower":
        high = 1.0
    elif side == "upper":
        low = 0.0
    return low, high


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval (two-sided): closed form, close to exact coverage, never
    outside [0, 1]; the usual choice for a quick interval of a recall or an accuracy."""
    _check(k, n, confidence)
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def perfect_score_n(honest: float, alpha: float) -> int:
    """The fewest samples on which a model right with probability ``honest`` scores
    perfectly with probability below ``alpha``: the smallest n with ``honest ** n < alpha``
    (299 for 0.99 and 0.05)."""
    if not 0.0 < honest < 1.0 or not 0.0 < alpha < 1.0:
        raise ValueError("honest and alpha must be in (0, 1)")
    n = math.floor(math.log(alpha) / math.log(honest)) + 1
    while n > 1 and honest ** (n - 1) < alpha:
        n -= 1
    while honest ** n >= alpha:
        n += 1
    return n


def rate_lower_bound(k: int, n: int, confidence: float) -> float:
    """The lower end of the two-sided Clopper-Pearson ``confidence`` interval of ``k / n``:
    what ``class_recall``'s ``confidence:`` holds a floor against.  Exact, so the interval
    covers the true rate at least ``confidence`` of the time whatever ``n`` is (the
    conservative choice an auditor expects; Wilson's covers it about that often, and less
    on a few samples).  ``rate_lower_bound(3, 3, 0.95) == 0.025 ** (1 / 3)`` (0.292).
    0.0 for ``n == 0``: no sample shows anything."""
    if n == 0 and k == 0:
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
        return 0.0
    return clopper_pearson(k, n, confidence)[0]


def successes(rate: float, n: int, tolerance: float = 5e-4) -> int | None:
    """The whole number ``k`` of ``n`` samples that a logged ``rate`` is (``k / n``), or None
    when none is within ``tolerance`` of it (the count does not belong to the rate, or the
    rate was logged with fewer than 3 decimals).  ``successes(2 / 3, 3) == 2``."""
    if not (isinstance(n, int) and n >= 0) or not math.isfinite(rate):
        return None
    if n == 0:
        return 0
    k = round(rate * n)
    return k if 0 <= k <= n and abs(rate - k / n) <= tolerance else None
