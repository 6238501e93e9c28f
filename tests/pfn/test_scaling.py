"""Tests for pfn/scaling.py against values worked out by hand.

Hand example for the squashing: with tail 0.1 and a soft worst end, the linear part has slope
r = 0.9 (best end hard) or 0.8 (both soft) per unit of progress u, and k = r / 0.1. A value one
``(e - 1) / k`` beyond the worst end has ``log1p(k d) = 1``, so its score is 0.1 / 2 = 0.05.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pfn.scaling import MetricScaler

E1 = math.e - 1


def test_bounded_accuracy_is_the_identity():
    s = MetricScaler.fit([0.5, 0.7], higher_is_better=True, lower_bound=0.0, upper_bound=1.0)
    assert (s.worst, s.best, s.worst_is_bound, s.best_is_bound) == (0.0, 1.0, True, True)
    np.testing.assert_allclose(s.to_score([0.0, 0.25, 0.7, 1.0]), [0.0, 0.25, 0.7, 1.0])
    # Past the bounds: clipped; diverged: worst.
    np.testing.assert_array_equal(s.to_score([-0.1, 1.2, np.nan, np.inf, -np.inf]), [0, 1, 0, 0, 0])
    np.testing.assert_allclose(s.to_metric([0.0, 0.3, 1.0]), [0.0, 0.3, 1.0])


def test_bounded_loss_is_flipped_linearly():
    s = MetricScaler.fit([1.0], higher_is_better=False, lower_bound=0.0, upper_bound=2.0)
    assert (s.worst, s.best) == (2.0, 0.0)
    np.testing.assert_allclose(s.to_score([0.0, 0.5, 2.0, 3.0]), [1.0, 0.75, 0.0, 0.0])
    np.testing.assert_allclose(s.to_metric(0.75), 0.5)


def test_soft_worst_end_by_hand():
    s = MetricScaler(
        higher_is_better=False, worst=1.0, best=0.0, worst_is_bound=False, best_is_bound=True
    )
    x = [0.0, 0.5, 1.0, 1.0 + E1 / 9]
    np.testing.assert_allclose(s.to_score(x), [1.0, 0.55, 0.1, 0.05], rtol=1e-12)
    np.testing.assert_allclose(s.to_metric([1.0, 0.55, 0.1, 0.05]), x, rtol=1e-12)
    np.testing.assert_array_equal(s.to_score([np.nan, np.inf, -np.inf]), [0.0, 0.0, 0.0])
    assert s.to_metric(0.0) == np.inf  # the worst score of an unbounded loss
    assert s.to_score(-1.0) == 1.0  # below the loss's hard bound 0: clipped


def test_soft_ends_on_both_sides_by_hand():
    s = MetricScaler(
        higher_is_better=True, worst=0.0, best=1.0, worst_is_bound=False, best_is_bound=False
    )
    x = [-E1 / 8, 0.0, 0.5, 1.0, 1.0 + E1 / 8]
    np.testing.assert_allclose(s.to_score(x), [0.05, 0.1, 0.5, 0.9, 0.95], rtol=1e-12)
    np.testing.assert_allclose(s.to_metric([0.05, 0.1, 0.5, 0.9, 0.95]), x, rtol=1e-12)
    assert s.to_metric(1.0) == np.inf and s.to_metric(0.0) == -np.inf


def test_slope_is_continuous_at_the_soft_ends():
    s = MetricScaler(
        higher_is_better=True, worst=0.0, best=1.0, worst_is_bound=False, best_is_bound=False
    )
    h = 1e-6
    for end in (0.0, 1.0):
        left = (s.to_score(end) - s.to_score(end - h)) / h
        right = (s.to_score(end + h) - s.to_score(end)) / h
        assert left == pytest.approx(0.8, rel=1e-4) and right == pytest.approx(0.8, rel=1e-4)


def test_fit_caps_the_worst_end_against_divergence():
    # v = -loss sorted: [-1e30, -0.6, -0.5, -0.5, -0.5, -0.2]; median -0.5, best -0.2,
    # spread = best - median = 0.3; the 5% quantile is ~-7.5e29,
    # so the worst end is the cap -0.5 - 3 * 0.3 = -1.4, i.e. a loss of 1.4.
    losses = [0.2, 0.5, 0.5, 0.5, 0.6, 1e30, np.nan]
    s = MetricScaler.fit(losses, higher_is_better=False, lower_bound=0.0)
    assert s.worst == pytest.approx(1.4) and s.best == 0.0
    assert not s.worst_is_bound and s.best_is_bound
    np.testing.assert_allclose(s.to_score([0.0, 0.7, 1.4]), [1.0, 0.55, 0.1])


def test_fit_ignores_a_large_minority_of_diverged_points():
    # 40% diverged: an interquartile range would span 1e30; best - median = 0.3 does not.
    losses = [0.2, 0.5, 0.5, 0.5, 0.6, 0.6] + [1e30] * 4
    s = MetricScaler.fit(losses, higher_is_better=False, lower_bound=0.0)
    # sorted: 0.2 0.5 0.5 0.5 0.6 | 0.6 1e30 ...: median 0.6, spread 0.4, cap 0.6 + 3 * 0.4 = 1.8
    assert s.worst == pytest.approx(1.8)
    assert s.to_score(0.2) == pytest.approx(1.0 - 0.9 * 0.2 / 1.8)


def test_fit_with_two_runs_one_diverged_keeps_a_usable_range():
    # quantiles of [0.72, 5.45e8] put the worst end near 5e8 and 0.72 at a score of ~1; the bound
    # caps the worst end at 10 x 0.72 from it
    s = MetricScaler.fit_runs([[0.75, 0.72], [5.45e8]], higher_is_better=False, lower_bound=0.0)
    assert s.worst == pytest.approx(7.2)
    assert s.to_score(0.72) == pytest.approx(1.0 - 0.9 * 0.1)
    assert 0 < s.to_score(5.45e8) < 0.01
    unbounded = MetricScaler.fit_runs([[0.72], [5.45e8]], higher_is_better=False)
    assert unbounded.worst > 1e8  # no bound, no scale: the quantile rule alone


def test_fit_uses_the_worst_quantile_when_it_is_closer():
    # v = -[0.1, ..., 1.0]: 5% quantile at position 0.45 -> -0.955; cap -0.55 - 3 * 0.45 = -1.9.
    s = MetricScaler.fit(np.linspace(0.1, 1.0, 10), higher_is_better=False, lower_bound=0.0)
    assert s.worst == pytest.approx(0.955)


def test_fit_unbounded_best_end_is_the_best_observation():
    s = MetricScaler.fit([0.3, 0.6, 0.5], higher_is_better=True)
    assert s.best == pytest.approx(0.6) and not s.best_is_bound
    assert s.to_score(0.6) == pytest.approx(0.9)


def test_fit_degenerate_data_opens_the_range():
    s = MetricScaler.fit([0.7, 0.7], higher_is_better=False)
    assert s.worst == pytest.approx(0.7) and s.best == pytest.approx(0.63)
    # towards the worse side when the better one is bounded there, even if not a hard end
    acc = MetricScaler.fit(
        [1.0, 1.0], higher_is_better=True, lower_bound=0.0, upper_bound=1.0, bounds_as_ends=False
    )
    assert acc.best == pytest.approx(1.0) and acc.worst == pytest.approx(0.9)
    assert acc.to_score(1.0) == pytest.approx(0.9)


def test_fit_runs_of_one_run_spans_its_points():
    # one loss curve: its best alone gives no scale, so its points set the range
    one = MetricScaler.fit_runs([[2.0, 1.0, 0.7, 0.6, np.nan]], higher_is_better=False)
    # points 2.0, 1.0, 0.7, 0.6: best 0.6, median 0.85, spread 0.25, worst end min(5%-worst
    # 1.85, 0.85 + 3 x 0.25 = 1.6)
    assert one.best == pytest.approx(0.6) and one.worst == pytest.approx(1.6)
    np.testing.assert_allclose(one.to_score([0.6, 0.7]), [0.9, 0.82])
    # two runs with one best between them (repeats): the same, over both runs' points (median
    # 0.7, spread 0.1: worst end 0.7 + 3 x 0.1)
    same = MetricScaler.fit_runs([[2.0, 0.6], [1.0, 0.7, 0.6]], higher_is_better=False)
    assert same.best == pytest.approx(0.6) and same.worst == pytest.approx(1.0)
    # a constant run still opens the range around its value
    flat = MetricScaler.fit_runs([[0.7, 0.7, 0.7]], higher_is_better=False)
    assert flat.worst == pytest.approx(0.7) and flat.best == pytest.approx(0.63)


def test_monotone_round_trip_and_diverged_order():
    s = MetricScaler.fit([0.36, 0.5, 0.69, 0.7, 0.71, 3.0], higher_is_better=False, lower_bound=0)
    x = np.concatenate([np.linspace(0.0, 3.0, 301), np.logspace(0.5, 34, 50)])
    score = s.to_score(x)
    assert np.all(np.diff(score) < 0)  # strictly decreasing in the loss
    assert 0 < s.to_score(1e34) < s.to_score(1e6) < 0.01
    inside = score > 0.001  # away from float saturation of the far tail
    np.testing.assert_allclose(s.to_metric(score[inside]), x[inside], rtol=1e-9, atol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="finite"):
        MetricScaler.fit([np.nan, np.inf], higher_is_better=False)
    with pytest.raises(ValueError, match="lower_bound"):
        MetricScaler.fit([0.5], higher_is_better=True, lower_bound=1.0, upper_bound=0.0)
    with pytest.raises(ValueError, match="strictly"):
        MetricScaler(
            higher_is_better=False, worst=0.0, best=1.0, worst_is_bound=True, best_is_bound=True
        )
    s = MetricScaler.fit([0.5], higher_is_better=True, lower_bound=0.0, upper_bound=1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s.to_metric([0.5, 1.5])


def test_bounds_as_ends_false_takes_the_range_from_the_data():
    acc = [0.5, 0.7, 0.8, 0.9]
    hard = MetricScaler.fit(acc, higher_is_better=True, lower_bound=0.0, upper_bound=1.0)
    assert hard.to_score(0.9) == pytest.approx(0.9)  # the identity
    soft = MetricScaler.fit(
        acc, higher_is_better=True, lower_bound=0.0, upper_bound=1.0, bounds_as_ends=False
    )
    assert not soft.worst_is_bound and not soft.best_is_bound
    # best end = best value (score 0.9); median 0.75, spread 0.15: the cap 0.3 is below the 5%
    # quantile 0.53, which is the worst end (score 0.1)
    assert soft.best == pytest.approx(0.9) and soft.to_score(0.9) == pytest.approx(0.9)
    assert soft.worst == pytest.approx(0.53) and soft.to_score(0.53) == pytest.approx(0.1)


def test_fit_runs_counts_each_run_once():
    # three sane runs and two diverged ones with many points each: per point, the diverged
    # values are the majority and would become the median; per run, they are 2 of 5
    runs = [[0.9, 0.6, 0.5], [0.8, 0.7], [0.75, 0.65], [1e10] * 50, [5e8] * 50 + [np.nan]]
    # (no lower bound: with one, the worst end is also capped at 10 x the best value)
    per_point = MetricScaler.fit(np.concatenate(runs), higher_is_better=False)
    per_run = MetricScaler.fit_runs(runs, higher_is_better=False)
    assert per_point.worst > 1e8  # the diverged runs took over the range
    # bests: 0.5, 0.65, 0.7, 5e8, 1e10 -> median 0.7, spread 0.2, cap 0.7 + 3 * 0.2 = 1.3
    assert per_run.worst == pytest.approx(1.3)
    assert per_run.to_score(0.5) > per_run.to_score(0.7) > 0.5 > per_run.to_score(1e10)
    with pytest.raises(ValueError, match="finite"):
        MetricScaler.fit_runs([[np.nan]], higher_is_better=False)
