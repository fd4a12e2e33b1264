"""flowerlab.evaluation.statistics against scipy and statsmodels on hand-made inputs.

Each figure is checked against a second, independent computation of the same statistic (the
other library, or the definition counted out by hand), including the edge cases a replicated
study meets: runs with identical predictions, and replicates that all agree.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from flowerlab.evaluation import statistics


def test_spread_across_runs_is_the_sample_sd_and_the_student_t_interval() -> None:
    values = [0.862, 0.872, 0.883, 0.881]
    spread = statistics.across_runs(values)
    assert spread.runs == 4
    assert spread.mean == pytest.approx(np.mean(values))
    assert spread.sd == pytest.approx(np.std(values, ddof=1))
    low, high = stats.t.interval(0.95, df=3, loc=np.mean(values), scale=stats.sem(values))
    assert (spread.ci_low, spread.ci_high) == pytest.approx((low, high))


def test_replicates_that_all_agree_have_no_spread() -> None:
    spread = statistics.across_runs([0.8, 0.8, 0.8])
    assert spread.mean == pytest.approx(0.8)
    assert spread.sd == pytest.approx(0.0, abs=1e-12)
    assert (spread.ci_low, spread.ci_high) == pytest.approx((0.8, 0.8), abs=1e-12)


def test_one_run_has_a_mean_and_nothing_else() -> None:
    assert statistics.across_runs([0.7]) == statistics.Spread(1, 0.7, None, None, None)
    with pytest.raises(ValueError, match="no finite value"):
        statistics.across_runs([])


@pytest.mark.parametrize("correct, total", [(598, 680), (0, 20), (20, 20), (1, 3)])
def test_wilson_interval_matches_scipy(correct: int, total: int) -> None:
    expected = stats.binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
    assert statistics.wilson(correct, total) == pytest.approx((expected.low, expected.high))


def test_mcnemar_counts_the_discordant_photos_and_matches_the_exact_binomial_test() -> None:
    a = [True] * 50 + [True] * 9 + [False] * 2 + [False] * 5
    b = [True] * 50 + [False] * 9 + [True] * 2 + [False] * 5
    result = statistics.mcnemar_test(a, b)
    assert (result.photos, result.both_correct, result.a_only, result.b_only, result.both_wrong) == (66, 50, 9, 2, 5)
    assert result.statistic == 2
    assert result.p_value == pytest.approx(stats.binomtest(2, 11, 0.5).pvalue)


def test_identical_predictions_are_no_evidence_of_a_difference() -> None:
    same = [True, False, True, True, False]
    result = statistics.mcnemar_test(same, same)
    assert result.a_only == result.b_only == 0
    assert result.p_value == 1.0


def test_mcnemar_needs_the_same_photos() -> None:
    with pytest.raises(ValueError, match="equally long"):
        statistics.mcnemar_test([True, False], [True])


def test_probability_of_improvement_counts_every_pair_of_runs() -> None:
    a, b = [0.80, 0.83, 0.85], [0.81, 0.83, 0.90]
    by_hand = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in itertools.product(a, b)) / 9
    result = statistics.probability_of_improvement(a, b)
    assert result.probability == pytest.approx(by_hand) == pytest.approx(3.5 / 9)
    assert result.pairs == 9
    assert result.p_value == pytest.approx(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    assert statistics.probability_of_improvement(b, a).probability == pytest.approx(1 - by_hand)


def test_replicates_that_all_agree_are_an_even_chance() -> None:
    assert statistics.probability_of_improvement([0.8, 0.8], [0.8, 0.8]).probability == 0.5


def test_holm_adjusts_a_family_of_p_values() -> None:
    p = [0.01, 0.04, 0.03, 0.5]
    # Holm by hand: sorted p times (m - rank), running maximum, capped at 1, in the original order
    order = np.argsort(p)
    adjusted = np.empty(4)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, p[index] * (4 - rank)))
        adjusted[index] = running
    assert statistics.holm(p) == pytest.approx(list(adjusted))
    assert statistics.holm([]) == []


@pytest.mark.parametrize(
    "value, expected",
    [(0.80, "inside"), (0.70, "below"), (0.95, "above"), (0.75, "inside"), (None, None)],
)
def test_course_placement(value, expected) -> None:
    assert statistics.course_placement(value, 0.75, 0.85) == expected
    assert statistics.course_placement(0.8, None, None) is None
