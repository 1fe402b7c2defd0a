"""The statistics behind "a gain within the noise is not a gain": a one-sided t-test on repeated measurements.

The check's noise is estimated from every state the run measured more than once (the baseline, each
candidate measured again, each kept state): the pooled within-state standard deviation, whose degrees of
freedom grow as the run goes on. A candidate's gain over the kept state is the difference of their means;
it counts when it exceeds `min_delta` by more than the noise explains at the goal's confidence (a
one-sided Student t-test on the pooled standard deviation).

The test assumes the noise is roughly the same from one state to the next and roughly normal. It does not
see noise that is shared by all measurements of one state (a slow machine for the whole hour).
The Student t tail is computed here (a continued fraction for the regularised incomplete beta function,
as in Numerical Recipes) so that the core install needs no SciPy; tests check it against published values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence


def t_upper_tail(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError("degrees of freedom must be positive")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_quantile(confidence: float, df: float) -> float:
    """The t for which P(T > t) = 1 - confidence (the one-sided critical value), by bisection."""
    low, high = 0.0, 1.0
    while t_upper_tail(high, df) > 1 - confidence:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if t_upper_tail(mid, df) > 1 - confidence else (low, mid)
    return (low + high) / 2


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Lentz's evaluation of the continued fraction for the incomplete beta function."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


@dataclass(frozen=True)
class Noise:
    """The check's noise: the pooled standard deviation of repeated measurements and its degrees of freedom."""

    sd: float
    df: int

    @property
    def known(self) -> bool:
        return self.df > 0


def pooled_noise(groups: Iterable[Sequence[float]]) -> Noise:
    """Pool the within-group variance of every group of two or more measurements of one state."""
    squares, df = 0.0, 0
    for group in groups:
        if len(group) < 2:
            continue
        mean = sum(group) / len(group)
        squares += sum((x - mean) ** 2 for x in group)
        df += len(group) - 1
    return Noise(math.sqrt(squares / df) if df else 0.0, df)


@dataclass(frozen=True)
class Comparison:
    """How a candidate's measurements compare with the kept state's, signed so that a gain is positive."""

    gain: float
    """Mean of the candidate minus mean of the kept state, positive when better."""
    p_value: float
    """One-sided: how likely a gain this large beyond `min_delta` is from noise alone."""
    noise: Noise

    def significant(self, confidence: float) -> bool:
        return self.p_value <= 1 - confidence


def compare(candidate: Sequence[float], kept: Sequence[float], noise: Noise, *, min_delta: float,
            maximize: bool) -> Comparison:
    """One-sided t-test of H0 "the gain is at most `min_delta`" against the pooled noise."""
    sign = 1.0 if maximize else -1.0
    gain = sign * (sum(candidate) / len(candidate) - sum(kept) / len(kept))
    excess = gain - min_delta
    if not noise.known:
        return Comparison(gain, 1.0, noise)
    standard_error = noise.sd * math.sqrt(1 / len(candidate) + 1 / len(kept))
    if standard_error == 0:
        return Comparison(gain, 0.0 if excess > 0 else 1.0, noise)
    return Comparison(gain, t_upper_tail(excess / standard_error, noise.df), noise)
