"""Tests of priors.curves: basis curves, time bending, tail, noise."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from priors.curves import (
    CurveParams,
    basis_curve,
    bend_time,
    mean_curve,
    observe,
    prepare,
    prepared_mean,
)

Y0, YINF = 0.2, 0.8


def _t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


@pytest.mark.parametrize("kind", [0, 1, 2, 3])
@pytest.mark.parametrize(
    "alpha,prec,xsat", [(0.5, 10.0, 0.3), (1.0, 100.0, 1.0), (3.0, 1000.0, 2.5)]
)
def test_basis_passes_through_y0_and_saturation_point(kind, alpha, prec, xsat):
    a = alpha + 1.0 if kind == 2 else alpha  # the log basis needs alpha > 1
    kw = dict(y0=_t(Y0), yinf=_t(YINF), alpha=_t(a), xsat=_t(xsat), prec=_t(prec))
    y = basis_curve(kind, _t(0.0, xsat), **kw)
    assert y[0].item() == pytest.approx(Y0, abs=1e-9)
    assert y[1].item() == pytest.approx(YINF - (YINF - Y0) / prec, rel=1e-6)


@pytest.mark.parametrize(
    "kind,alpha,prec,expected_gap",
    [
        (0, 1.0, 4.0, 1 / 2.5),  # pow: ((4 - 1) * 0.5 + 1)^-1
        (1, 1.0, 4.0, 0.5),  # exp: 4^-0.5
        (2, 2.0, 3.0, math.log(2) / math.log(5)),  # log: ln 2 / ln((8 - 2) * 0.5 + 2)
        (3, 2.0, 5.0, 0.5),  # hill: 1 / (0.25 * 4 + 1)
    ],
)
def test_basis_hand_values(kind, alpha, prec, expected_gap):
    y = basis_curve(
        kind, _t(0.25), y0=_t(Y0), yinf=_t(YINF), alpha=_t(alpha), xsat=_t(0.5), prec=_t(prec)
    )
    assert y.item() == pytest.approx(YINF - (YINF - Y0) * expected_gap, rel=1e-9)


def test_bend_time_hand_values():
    x = bend_time(_t(0.2, 0.5, 1.0), _t(0.5), _t(-2.0))
    assert x.tolist() == pytest.approx([0.2, 0.5, 0.5 - 2.0 * 0.5])


def test_tail_is_value_and_slope_continuous_and_decays():
    kw = dict(y0=_t(Y0), yinf=_t(YINF), alpha=_t(1.0), xsat=_t(0.5), prec=_t(10.0))
    h = 1e-6
    y = basis_curve(0, _t(-h, 0.0, h), **kw)
    left, right = (y[1] - y[0]) / h, (y[2] - y[1]) / h
    assert y[0].item() == pytest.approx(Y0, abs=1e-4)
    assert left.item() == pytest.approx(right.item(), rel=1e-3)
    far = basis_curve(0, _t(-10.0), **kw)
    assert 0.0 <= far.item() < 1e-6


def _params(n: int, sigma: float) -> CurveParams:
    g = torch.Generator().manual_seed(0)
    return CurveParams(
        y0=torch.full((n,), Y0),
        yinf=torch.full((n,), YINF),
        weights=torch.full((n, 4), 0.25),
        alpha=torch.tensor([2.0, 1.0, 1.1, 1.5]).expand(n, 4),
        xsat=torch.rand(n, 4, generator=g) + 0.1,
        prec=torch.full((n, 4), 100.0),
        rate=torch.full((n, 4), -1.0),
        sigma=torch.full((n,), sigma),
    )


def test_weighted_sum_and_noise_clipped():
    p = _params(2000, 0.05)
    t = torch.full((2000,), 0.05)
    mean = mean_curve(p, t)
    assert torch.all((mean >= 0) & (mean <= 1))
    y = observe(p, t, generator=torch.Generator().manual_seed(1))
    assert torch.all((y >= 0) & (y <= 1))
    assert (y - mean).std().item() == pytest.approx(0.05, rel=0.1)
    # at t = 0 every basis is at y0, so the convex combination is too
    assert torch.allclose(mean_curve(p, torch.zeros(2000)), torch.full((2000,), Y0))


def test_prepared_curves_taken_at_indices_match_mean_curve_of_gathered_params():
    g = torch.Generator().manual_seed(2)
    n = 50
    p = CurveParams(
        y0=torch.rand(n, generator=g) * 0.5,
        yinf=0.5 + torch.rand(n, generator=g) * 0.5,
        weights=torch.rand(n, 4, generator=g).softmax(-1),
        alpha=torch.rand(n, 4, generator=g) * 2 + torch.tensor([0.1, 0.1, 1.1, 0.1]),
        xsat=torch.rand(n, 4, generator=g) + 0.05,
        prec=1.0 + torch.rand(n, 4, generator=g) * 100,
        rate=1.0 - 2.0 * torch.rand(n, 4, generator=g),  # some curves turn down into the tail
        sigma=torch.rand(n, generator=g) * 0.1,
    )
    index = torch.randint(0, n, (3, 40), generator=g)
    t = torch.rand(3, 40, generator=g) * 2.0
    taken = prepare(p).take(index)
    assert torch.equal(taken.sigma, p.sigma[index])
    gathered = CurveParams(**{f.name: getattr(p, f.name)[index] for f in dataclasses.fields(p)})
    # the definition: the weighted sum of the basis curves at bent time
    expected = sum(
        gathered.weights[..., k]
        * basis_curve(
            k,
            bend_time(t, gathered.xsat[..., k], gathered.rate[..., k]),
            y0=gathered.y0,
            yinf=gathered.yinf,
            alpha=gathered.alpha[..., k],
            xsat=gathered.xsat[..., k],
            prec=gathered.prec[..., k],
        )
        for k in range(4)
    )
    assert (bend_time(t[..., None], gathered.xsat, gathered.rate) < 0).any()  # tails are used
    torch.testing.assert_close(prepared_mean(taken, t), expected)
    torch.testing.assert_close(mean_curve(gathered, t), expected)
    torch.testing.assert_close(
        prepared_mean(taken, t)[1, 2], mean_curve(p, t[1, 2])[index[1, 2]], rtol=1e-6, atol=1e-6
    )
