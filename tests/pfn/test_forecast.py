"""Forecast distributions on [0, 1] (pfn/forecast.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from pfn.bar_distribution import BarDistribution, uniform_borders
from pfn.forecast import MIN_STD, BarForecast, GaussianForecast


def test_truncated_gaussian_is_a_density_on_the_unit_interval():
    f = GaussianForecast(np.array([0.3, 1.2, -0.5]), np.array([0.1, 0.3, 0.2]))
    for i in range(3):
        mass = integrate.quad(lambda y, i=i: np.exp(f.log_prob(y)[i]), 0, 1, points=[0.3])[0]
        mean = integrate.quad(lambda y, i=i: y * np.exp(f.log_prob(y)[i]), 0, 1)[0]
        assert mass == pytest.approx(1.0, abs=1e-6)
        assert f.mean()[i] == pytest.approx(mean, abs=1e-6)
    np.testing.assert_allclose(f.cdf(0.0), 0.0, atol=1e-12)
    np.testing.assert_allclose(f.cdf(1.0), 1.0, atol=1e-12)
    np.testing.assert_allclose(f.cdf(f.quantile(0.3)), 0.3, atol=1e-9)
    assert np.isneginf(f.log_prob(1.5)).all()
    # against scipy's truncnorm directly, inside the support
    a, b = (0 - 0.3) / 0.1, (1 - 0.3) / 0.1
    assert f.log_prob(0.45)[0] == pytest.approx(stats.truncnorm(a, b, 0.3, 0.1).logpdf(0.45))


def test_truncated_gaussian_far_tails_stay_finite():
    f = GaussianForecast(np.array([5.0, -4.0]), np.array([0.05, 0.05]))
    ll = f.log_prob(np.array([1.0, 0.0]))
    assert np.isfinite(ll).all() and (ll > 0).all()  # mass piles up at the near border
    assert GaussianForecast(np.array([0.5]), np.array([0.0])).scale[0] == MIN_STD


def test_gaussian_rejects_bad_parameters():
    with pytest.raises(ValueError, match="same shape"):
        GaussianForecast(np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        GaussianForecast(np.array([np.nan]), np.ones(1))
    with pytest.raises(ValueError, match="mass"):
        GaussianForecast(np.zeros(1), np.ones(1)).interval(1.0)


def test_bar_forecast_matches_its_distribution():
    dist = BarDistribution(uniform_borders(10))
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    f = BarForecast(logits, dist)
    np.testing.assert_allclose(f.mean(), dist.mean(logits).double().numpy())
    np.testing.assert_allclose(f.cdf(0.35), dist.cdf(logits, 0.35).double().numpy())
    lo, hi = f.interval(0.8)
    np.testing.assert_allclose(f.cdf(lo), 0.1, atol=1e-5)
    np.testing.assert_allclose(f.cdf(hi), 0.9, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        BarForecast(torch.zeros(4, 9), dist)
