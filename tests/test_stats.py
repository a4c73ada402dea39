"""Intervals and the paired test of diffjpeg.eval.stats against known values and their definitions."""
from __future__ import annotations

import pytest
from scipy.stats import binom

from diffjpeg.eval.stats import paired_test, proportion_interval


@pytest.mark.parametrize("k, lo, hi", [
    # Clopper-Pearson 95 % intervals for k of 20 (standard tables; 0/20 upper = 1 - 0.025 ** (1/20))
    (0, 0.0, 0.16843),
    (10, 0.27196, 0.72804),
    (20, 0.83157, 1.0),
    (2, 0.01235, 0.31698),
])
def test_clopper_pearson_known_values(k, lo, hi):
    got = proportion_interval(k, 20)
    assert got == pytest.approx((lo, hi), abs=1e-5)


@pytest.mark.parametrize("k, n", [(1, 20), (7, 20), (19, 20), (3, 100), (500, 1000)])
def test_clopper_pearson_is_the_binomial_test_inversion(k, n):
    lo, hi = proportion_interval(k, n)
    assert binom.sf(k - 1, n, lo) == pytest.approx(0.025, rel=1e-6)  # P(X >= k | lo) = alpha / 2
    assert binom.cdf(k, n, hi) == pytest.approx(0.025, rel=1e-6)  # P(X <= k | hi) = alpha / 2
    assert lo < k / n < hi


def test_interval_arguments():
    assert proportion_interval(0, 20, confidence=0.99)[1] == pytest.approx(1 - 0.005 ** (1 / 20))
    with pytest.raises(ValueError, match=r"k must be an integer in \[0, 20\], got 21"):
        proportion_interval(21, 20)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        proportion_interval(0, 0)
    with pytest.raises(ValueError, match="confidence"):
        proportion_interval(1, 2, confidence=1.0)


def test_paired_test_exact_mcnemar():
    # discordant pairs: 6 robust under A only, 0 under B only: p = 2 * 0.5 ** 6
    a = [True] * 6 + [False] * 10 + [True] * 4
    b = [False] * 6 + [False] * 10 + [True] * 4
    t = paired_test(a, b)
    assert (t.only_a, t.only_b) == (6, 0) and t.p_value == pytest.approx(2 * 0.5 ** 6)
    assert paired_test(b, a).p_value == t.p_value  # symmetric
    assert paired_test(a, a).p_value == 1.0  # never disagree
    t = paired_test([True, False, True], [False, True, True])  # one each way
    assert (t.only_a, t.only_b, t.p_value) == (1, 1, 1.0)
    with pytest.raises(ValueError, match="same examples"):
        paired_test([True], [True, False])
