"""Uncertainty of the benchmark's accuracies: exact intervals and a paired test.

* :func:`proportion_interval` -- the Clopper-Pearson ("exact") interval for a binomial proportion
  ``k / n``: the set of ``p`` that a two-sided binomial test at level ``1 - confidence`` does not
  reject, from the beta quantiles ``Beta(a/2; k, n-k+1)`` and ``Beta(1-a/2; k+1, n-k)``
  (``0`` when ``k = 0``, ``1`` when ``k = n``). It never under-covers, which is what a reported
  robust accuracy needs; it is a little wider than Wilson's score interval.
* :func:`paired_test` -- the exact McNemar test (a two-sided sign test on the discordant pairs) for
  two rows measured **on the same examples**: only examples where the rows disagree carry
  information, and under "no difference" each disagreement goes either way with probability 1/2.

Example::

    proportion_interval(2, 20)                       # (0.0123..., 0.3169...)
    paired_test([1, 1, 0, 1], [0, 0, 0, 1]).p_value  # 0.5: two discordant pairs, both one way
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..arguments import check_int, check_real

__all__ = ["PairedTest", "paired_test", "proportion_interval"]


def proportion_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval ``(lo, hi)`` of the proportion of ``k`` successes in ``n`` trials.

    Args:
        k: successes, ``0 <= k <= n``; n: trials, ``>= 1``; confidence: in (0, 1), default 0.95.
    """
    from scipy.stats import beta

    n = check_int(n, "n", 1)
    k = check_int(k, "k", 0, n)
    confidence = check_real(confidence, "confidence", 0.0, 1.0, lo_open=True, hi_open=True)
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class PairedTest:
    """Outcome of :func:`paired_test`: ``only_a`` examples robust under A alone, ``only_b`` under B
    alone, and the two-sided exact p-value of "A and B have the same accuracy"."""

    only_a: int
    only_b: int
    p_value: float


def paired_test(a: Sequence[bool], b: Sequence[bool]) -> PairedTest:
    """Exact McNemar test of two per-example outcomes ``a`` and ``b`` (same examples, same order).

    ``p_value = min(1, 2 * P(X <= min(only_a, only_b)))`` for ``X ~ Binomial(only_a + only_b, 1/2)``;
    1 when the rows never disagree.
    """
    from scipy.stats import binom

    a, b = [bool(v) for v in a], [bool(v) for v in b]
    if len(a) != len(b) or not a:
        raise ValueError(f"a and b must be non-empty outcomes of the same examples, got lengths {len(a)} and {len(b)}")
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    m = only_a + only_b
    p = 1.0 if m == 0 else min(1.0, 2.0 * float(binom.cdf(min(only_a, only_b), m, 0.5)))
    return PairedTest(only_a, only_b, p)
