"""Acquisition functions (bo/acquisition.py), checked by hand on simple bar distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bo.acquisition import acquisition_values, draw_lookahead, pick_argmax, score_context
from pfn.bar_distribution import BarDistribution, uniform_borders
from pfn.forecast import BarForecast, ViewMixture
from pfn.scaling import MetricScaler


def test_lookahead_ranges():
    rng = np.random.default_rng(0)
    draws = [draw_lookahead(rng, remaining=7, max_steps=50, f_best=0.6) for _ in range(2000)]
    horizons = {d.horizon for d in draws}
    assert horizons == set(range(1, 8))  # capped by the remaining budget
    taus = np.array([d.tau for d in draws])
    assert taus.min() >= 1e-4 and taus.max() <= 1e-1
    assert np.log10(taus).mean() == pytest.approx(-2.5, abs=0.05)  # log-uniform
    d = draws[0]
    assert d.threshold == pytest.approx(0.6 + d.tau * 0.4)
    capped = {draw_lookahead(rng, remaining=500, max_steps=3, f_best=0.0).horizon
              for _ in range(200)}  # fmt: skip
    assert capped == {1, 2, 3}
    with pytest.raises(ValueError):
        draw_lookahead(rng, remaining=0, max_steps=3, f_best=0.5)


def test_values_by_hand():
    # two candidates: uniform on [0, 1], and all mass in the top tenth
    dist = BarDistribution(uniform_borders(10))
    logits = torch.full((2, 10), -1e4)
    logits[0] = 0.0
    logits[1, 9] = 0.0
    fc = BarForecast(logits, dist)
    pi = acquisition_values("mfpi-random", fc, 0.75)
    np.testing.assert_allclose(pi, [0.25, 1.0], atol=1e-6)
    ei = acquisition_values("mfei-random", fc, 0.75)
    np.testing.assert_allclose(ei, [0.25**2 / 2, 0.95 - 0.75], atol=1e-6)
    ucb = acquisition_values("ucb-random", fc, 0.75)
    np.testing.assert_allclose(ucb, [0.9, 0.99], atol=1e-6)
    with pytest.raises(ValueError, match="unknown acquisition"):
        acquisition_values("greedy", fc, 0.5)


def test_score_context_and_pick_argmax_by_hand():
    identity = MetricScaler(
        higher_is_better=True, worst=0.0, best=1.0, worst_is_bound=True, best_is_bound=True
    )
    curves = [([1, 2], [0.2, 0.4]), ([], []), ([1], [-np.inf])]  # an empty and a failed curve
    ctx_curve, ctx_t, ctx_y = score_context(curves, identity, max_steps=4)
    assert ctx_curve == [0, 0, 2] and ctx_t == [0.25, 0.5, 0.25]
    np.testing.assert_allclose(ctx_y, [0.2, 0.4, 0.0])  # a failure scores 0
    rng = np.random.default_rng(0)
    assert pick_argmax(np.array([0.1, 0.7, 0.3]), rng) == 1
    ties = {pick_argmax(np.array([0.5, 0.1, 0.5]), rng) for _ in range(50)}
    assert ties == {0, 2}


def test_values_of_two_views_are_the_mixture_s():
    # MFPI and MFEI mixed from each view's scores (single view: 2 rows for 4 candidates) equal
    # those of the mixed predictive; UCB reads the mixture's quantile
    dist = BarDistribution(uniform_borders(10))
    gen = torch.Generator().manual_seed(1)
    context, single = (
        BarForecast(torch.randn(4, 10, generator=gen), dist),
        BarForecast(2 * torch.randn(2, 10, generator=gen), dist),
    )
    views = ViewMixture(context, single, np.array([1, 0, 1, 1]), 0.25)
    mixed = views.mixed()
    for name in ("mfpi-random", "mfei-random", "ucb-random"):
        np.testing.assert_allclose(
            acquisition_values(name, views, 0.7), acquisition_values(name, mixed, 0.7),
            rtol=1e-5, atol=1e-7,
        )  # fmt: skip
    assert not np.allclose(acquisition_values("mfei-random", context, 0.7),
                           acquisition_values("mfei-random", views, 0.7))  # fmt: skip
