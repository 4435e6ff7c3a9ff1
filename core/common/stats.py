"""Tests and intervals for comparing proportions (conversion, click and open rates), in plain
math: the normal and chi-square tails have closed forms for what results need, so no SciPy."""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the two-sided 95% quantile of the standard normal


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for X chi-square with `df` (a positive integer) degrees of freedom."""
    if df < 1:
        raise ValueError("df must be a positive integer")
    if x <= 0:
        return 1.0
    half = x / 2.0
    if df % 2 == 0:
        # Even df: the Poisson sum exp(-x/2) Σ_{i<df/2} (x/2)^i / i!.
        term = total = math.exp(-half)
        for i in range(1, df // 2):
            term *= half / i
            total += term
        return min(1.0, total)
    # Odd df: erfc(√(x/2)) + √(2x/π) e^(-x/2) Σ_{i=1}^{(df-1)/2} x^(i-1) / (1·3···(2i-1)).
    total = math.erfc(math.sqrt(half))
    term = math.sqrt(2.0 * x / math.pi) * math.exp(-half)
    for i in range(1, (df - 1) // 2 + 1):
        total += term
        term *= x / (2 * i + 1)
    return min(1.0, total)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a proportion (sound at 0 and n successes, unlike Wald)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe_diff(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) for p1 - p2, from the two Wilson intervals."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (max(-1.0, lower), min(1.0, upper))


@dataclass(frozen=True)
class TestResult:
    """A test's statistic, degrees of freedom (chi-square only), p-value, and the smallest
    expected cell count (under 5 the approximation is rough)."""

    statistic: float
    df: int | None
    p_value: float
    min_expected: float


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> TestResult:
    """The pooled two-proportion z-test of p1 = p2, two-sided."""
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    expected = min(n * q for n in (n1, n2) for q in (pooled, 1 - pooled))
    if se == 0:  # no successes or no failures anywhere: nothing tells the groups apart
        return TestResult(0.0, None, 1.0, expected)
    z = (x1 / n1 - x2 / n2) / se
    return TestResult(z, None, min(1.0, 2 * normal_sf(abs(z))), expected)


def chi_square_homogeneity(groups: list[tuple[int, int]]) -> TestResult:
    """Pearson's chi-square test that k groups (successes, n) share one proportion; df = k - 1."""
    total_x = sum(x for x, _ in groups)
    total_n = sum(n for _, n in groups)
    pooled = total_x / total_n
    expected = min(n * q for _, n in groups for q in (pooled, 1 - pooled))
    df = len(groups) - 1
    if pooled in (0.0, 1.0):
        return TestResult(0.0, df, 1.0, expected)
    stat = 0.0
    for x, n in groups:
        e_yes, e_no = n * pooled, n * (1 - pooled)
        stat += (x - e_yes) ** 2 / e_yes + ((n - x) - e_no) ** 2 / e_no
    return TestResult(stat, df, chi2_sf(stat, df), expected)
