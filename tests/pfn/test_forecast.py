"""Forecast distributions on [0, 1] (pfn/forecast.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from pfn.bar_distribution import BarDistribution, uniform_borders
from pfn.forecast import MIN_STD, BarForecast, GaussianForecast, ViewMixture


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


def _mixture(weight: float) -> tuple[ViewMixture, torch.Tensor]:
    """A ViewMixture of 6 targets, 5 reading 3 single-view rows and one (-1) the context view
    alone, and its (6, K) mixture by hand."""
    dist = BarDistribution(uniform_borders(8))
    gen = torch.Generator().manual_seed(0)
    context, single = torch.randn(6, 8, generator=gen), 3 * torch.randn(3, 8, generator=gen)
    index = np.array([2, 0, -1, 1, 2, 2])
    views = ViewMixture(
        BarForecast(context, dist),
        BarForecast(single, dist) if weight else None,
        index if weight else np.full(6, -1),
        weight,
    )
    probs = (1 - weight) * context.softmax(-1) + weight * single.softmax(-1)[index]
    probs[2] = context[2].softmax(-1)
    return views, probs


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_view_mixture_mixes_linear_quantities_from_the_parts(weight):
    views, probs = _mixture(weight)
    by_hand = BarForecast(probs.log(), views.context.distribution)
    assert torch.allclose(views.mixed().logits.softmax(-1), probs, atol=1e-6)
    for t in (0.05, 0.4, 0.77, 0.999):
        np.testing.assert_allclose(views.pi(t), by_hand.pi(t), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(views.ei(t), by_hand.ei(t), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(views.mean(), by_hand.mean(), rtol=1e-5)
    y = np.linspace(0.1, 0.9, 6)
    np.testing.assert_allclose(views.cdf(y), by_hand.cdf(y), atol=1e-6)
    np.testing.assert_allclose(views.log_prob(y), by_hand.log_prob(y), atol=1e-5)
    np.testing.assert_allclose(views.quantile(0.3), by_hand.quantile(0.3), atol=1e-5)
    np.testing.assert_array_equal(views.ei(0.4)[2], views.context.ei(0.4)[2])  # -1: unmixed


def test_view_mixture_checks_its_parts():
    views, _ = _mixture(0.3)
    dist = views.context.distribution
    with pytest.raises(ValueError, match="weight must lie"):
        ViewMixture(views.context, views.single, views.single_index, 1.5)
    with pytest.raises(ValueError, match="single_index"):  # rows to read, but no single view
        ViewMixture(views.context, None, views.single_index, 0.3)
    with pytest.raises(ValueError, match="single_index"):
        ViewMixture(views.context, views.single, np.array([0, 1, 2, 3, 0, 0]), 0.3)  # row 3
    with pytest.raises(ValueError, match="single_index"):
        ViewMixture(views.context, views.single, np.array([0, 1, 2, -2, 0, 0]), 0.3)
    with pytest.raises(ValueError, match="single_index"):
        ViewMixture(views.context, views.single, np.zeros(5, dtype=np.int64), 0.3)  # 5 of 6
    with pytest.raises(ValueError, match="1-D integer"):  # not truncated to rows 0, 1, 1, ...
        ViewMixture(views.context, views.single, np.array([0.5, 1.0, 1.9, 0, 0, 0]), 0.3)
    with pytest.raises(ValueError, match="1-D integer"):
        ViewMixture(views.context, views.single, views.single_index[:, None], 0.3)
    other = BarForecast(views.single.logits, BarDistribution(uniform_borders(8) ** 2))
    with pytest.raises(ValueError, match="bucket borders"):
        ViewMixture(views.context, other, views.single_index, 0.3)
    alone = ViewMixture(BarForecast(torch.zeros(2, 8), dist), None, [-1, -1], 0.3)
    assert alone.pi(0.5).shape == (2,) and alone.mixed() is alone.context
    assert views.mixed() is views.mixed()  # built once
