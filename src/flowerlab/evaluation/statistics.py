"""How sure each number is: the replicated study's statistics, from scipy and statsmodels.

- `across_runs`: mean, sample standard deviation and the 95% Student-t interval of the mean of
  one architecture's replicates (statsmodels' DescrStatsW). It describes the variation the
  replicates sample (training seeds, and splits when they vary), not the photos' sampling.
- `wilson`: one run's accuracy as a proportion of its validation photos, with the 95% Wilson
  score interval (statsmodels' proportion_confint): the sampling error of the photos alone.
- `mcnemar_test`: two architectures' runs of the same replicate on the same validation photos,
  the exact McNemar test on the photos one got right and the other wrong (statsmodels).
- `probability_of_improvement`: P(A > B) for a run of A and a run of B drawn at random, the
  Mann-Whitney U statistic over all pairs of their replicates divided by the number of pairs
  (ties count one half; scipy), as Agarwal et al. (2021) report it for deep RL.
- `course_placement`: where a published figure falls against an interval.

No TensorFlow here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE


@dataclass(frozen=True)
class Spread:
    """A figure across an architecture's replicates. Fewer than two runs have no spread: the
    standard deviation and the interval are then None."""

    runs: int
    mean: float
    sd: float | None
    ci_low: float | None
    ci_high: float | None


def across_runs(values: Sequence[float]) -> Spread:
    """Mean, sample SD (n - 1) and 95% t-interval of the mean of `values` (one per run)."""
    from statsmodels.stats.weightstats import DescrStatsW

    data = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if data.size == 0:
        raise ValueError("no finite value to summarise")
    if data.size < 2:
        return Spread(1, float(data[0]), None, None, None)
    stats = DescrStatsW(data, ddof=1)
    low, high = stats.tconfint_mean(alpha=ALPHA)
    return Spread(int(data.size), float(stats.mean), float(stats.std), float(low), float(high))


def wilson(correct: int, total: int) -> tuple[float, float]:
    """The 95% Wilson score interval of `correct` successes in `total` trials."""
    from statsmodels.stats.proportion import proportion_confint

    if total < 1:
        raise ValueError("a proportion needs at least one trial")
    low, high = proportion_confint(correct, total, alpha=ALPHA, method="wilson")
    return float(low), float(high)


@dataclass(frozen=True)
class McNemar:
    """Two runs on the same photos: how often both, only one, or neither was right; the exact
    McNemar test of `a_only` against `b_only` (binomial, p = 1/2)."""

    photos: int
    both_correct: int
    a_only: int
    b_only: int
    both_wrong: int
    statistic: float  # min(a_only, b_only), the exact test's statistic
    p_value: float


def mcnemar_test(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemar:
    """The exact McNemar test of two runs' per-photo correctness (same photos, same order).
    Identical predictions leave no discordant photo: p = 1."""
    from statsmodels.stats.contingency_tables import mcnemar

    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"McNemar needs two equally long, non-empty runs, not {a.size} and {b.size} photos")
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    result = mcnemar(table, exact=True)
    return McNemar(photos=int(a.size), both_correct=int(table[0, 0]), a_only=int(table[0, 1]),
                   b_only=int(table[1, 0]), both_wrong=int(table[1, 1]), statistic=float(result.statistic),
                   p_value=float(result.pvalue))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels' multipletests): the family of tests reported together."""
    from statsmodels.stats.multitest import multipletests

    if not p_values:
        return []
    return [float(p) for p in multipletests(list(p_values), alpha=ALPHA, method="holm")[1]]


@dataclass(frozen=True)
class Improvement:
    """P(A > B) over all pairs of runs, and the two-sided Mann-Whitney p-value."""

    probability: float
    p_value: float
    pairs: int


def probability_of_improvement(a: Sequence[float], b: Sequence[float]) -> Improvement:
    """P(a run of A scores above a run of B), ties counting one half: U / (n_a n_b)."""
    from scipy.stats import mannwhitneyu

    if not len(a) or not len(b):
        raise ValueError("the probability of improvement needs at least one run of each")
    result = mannwhitneyu(list(a), list(b), alternative="two-sided")
    pairs = len(a) * len(b)
    return Improvement(float(result.statistic) / pairs, float(result.pvalue), pairs)


def course_placement(value: float | None, low: float | None, high: float | None) -> str | None:
    """Where a published figure falls against our interval: inside, above or below (None when
    there is no figure or no interval)."""
    if value is None or low is None or high is None or not np.isfinite(value):
        return None
    if value < low:
        return "below"
    if value > high:
        return "above"
    return "inside"
