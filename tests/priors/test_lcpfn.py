"""Tests of the LC-PFN prior (priors/lcpfn.py) against reference.md §2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from priors.base import Prior
from priors.lcpfn import (
    LCPFNCurveParams,
    LCPFNPrior,
    LCPFNPriorConfig,
    draw_curve_params,
    is_accepted,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ks_p(sample: torch.Tensor, dist) -> float:
    return stats.kstest(sample.numpy(), dist.cdf).pvalue


def test_raw_parameter_marginals_match_their_distributions():
    p = draw_curve_params(20_000, generator=_gen(0))
    expected = {
        "pow3_c": stats.uniform(0, 1.25),
        "pow3_a": stats.uniform(-0.6, 1.2),
        "pow3_alpha": stats.lognorm(s=2.0, scale=1.0),
        "ilog2_c": stats.uniform(0, 1),
        "ilog2_a": stats.uniform(-0.5, 1.0),
        "janoschek_alpha": stats.uniform(0, 1),
        "janoschek_beta": stats.uniform(0, 2),
        "janoschek_kappa": stats.lognorm(s=1.0, scale=math.exp(-2.0)),
        "janoschek_delta": stats.lognorm(s=0.5, scale=1.0),
    }
    for name, dist in expected.items():
        assert _ks_p(getattr(p, name), dist) > 1e-3, name
    for k in range(3):
        assert _ks_p(p.weights[:, k], stats.uniform(0, 1)) > 1e-3
    # A wrong distribution is detected (the test can fail).
    assert _ks_p(p.pow3_c, stats.uniform(0, 1)) < 1e-6


def test_values_match_hand_computation():
    one = torch.tensor([1.0], dtype=torch.float64)
    p = LCPFNCurveParams(
        weights=torch.tensor([[0.5, 0.25, 0.2]], dtype=torch.float64),
        pow3_c=0.9 * one,
        pow3_a=0.4 * one,
        pow3_alpha=0.5 * one,
        ilog2_c=0.8 * one,
        ilog2_a=0.3 * one,
        janoschek_alpha=0.7 * one,
        janoschek_beta=0.1 * one,
        janoschek_kappa=0.2 * one,
        janoschek_delta=1.5 * one,
    )
    got = p.values(torch.tensor([1, 4, 100]))
    for j, x in enumerate([1, 4, 100]):
        pow3 = 0.9 - 0.4 * x**-0.5
        ilog2 = 0.8 - 0.3 / math.log(x + 1)
        jan = 0.7 - (0.7 - 0.1) * math.exp(-0.2 * x**1.5)
        assert got[0, j].item() == pytest.approx(0.5 * pow3 + 0.25 * ilog2 + 0.2 * jan, abs=1e-12)


def test_is_accepted_rule():
    values = torch.tensor(
        [
            [0.2, 0.5, 0.6],  # rising, in range: accepted
            [0.6, 0.5, 0.6],  # last == first: rejected
            [0.2, 1.01, 0.6],  # above 1: rejected
            [-0.01, 0.5, 0.6],  # below 0: rejected
            [0.2, float("nan"), 0.6],  # NaN: rejected
            [0.0, 0.3, 1.0],  # borders included
        ]
    )
    assert is_accepted(values).tolist() == [True, False, False, False, False, True]


def test_acceptance_rate_is_about_twenty_percent():
    p = draw_curve_params(40_000, generator=_gen(1))
    rate = is_accepted(p.values(torch.arange(1, 101))).double().mean().item()
    assert 0.18 < rate < 0.23


def test_accepted_curves_satisfy_the_constraints_and_noise_model():
    prior = LCPFNPrior(LCPFNPriorConfig(clip_observations=False))
    curves = prior.sample_curves(3000, generator=_gen(2))
    assert curves.clean.shape == (3000, 100)
    assert bool(is_accepted(curves.clean).all())
    assert bool(((curves.clean >= 0) & (curves.clean <= 1)).all())
    assert bool((curves.clean[:, -1] > curves.clean[:, 0]).all())
    # The values are the parameters' curves.
    torch.testing.assert_close(curves.params.values(torch.arange(1, 101)), curves.clean)
    # ln sigma ~ N(-4, 1), untouched by the rejection.
    assert _ks_p(curves.sigma.log(), stats.norm(-4, 1)) > 1e-3
    # Standardised residuals are N(0, 1) (unclipped).
    z = ((curves.observed - curves.clean) / curves.sigma[:, None])[:, ::7].reshape(-1)
    assert _ks_p(z, stats.norm(0, 1)) > 1e-3
    # Accepted parameters are not the raw marginals: rejection favours c > 0 in pow3 ...
    assert curves.params.pow3_a.mean() > 0.05


def test_zero_curves_is_an_empty_draw():
    none = LCPFNPrior().sample_curves(0, generator=_gen(4))
    assert none.observed.shape == (0, 100) and none.sigma.shape == (0,)
    with pytest.raises(ValueError, match="n must be >= 0"):
        LCPFNPrior().sample_curves(-1, generator=_gen(4))


def test_clipping_is_a_clamp_of_the_unclipped_draw():
    clipped = LCPFNPrior().sample_curves(500, generator=_gen(3))
    raw = LCPFNPrior(LCPFNPriorConfig(clip_observations=False)).sample_curves(
        500, generator=_gen(3)
    )
    torch.testing.assert_close(clipped.observed, raw.observed.clamp(0, 1), rtol=0, atol=0)
    assert bool((raw.observed > 1).any() | (raw.observed < 0).any())  # clipping does something


def test_sample_layout():
    prior = LCPFNPrior(LCPFNPriorConfig(max_hps=7))
    assert isinstance(prior, Prior) and prior.max_hps == 7
    batch = prior.sample(16, generator=_gen(4))
    assert batch.configs.shape == (16, 1, 7) and not batch.configs.any()
    assert batch.hp_mask.shape == (16, 7) and not batch.hp_mask.any()
    assert batch.curve_mask.shape == (16, 1) and batch.curve_mask.all()
    assert batch.curve.shape == (16, 100) and not batch.curve.any()
    assert batch.curve.dtype == torch.long and batch.y.dtype == torch.float32
    expected_t = torch.arange(1, 101, dtype=torch.float64) / 100
    assert torch.equal(batch.t, expected_t.float().expand(16, -1))
    assert 1 <= batch.n_context <= 99
    assert bool(((batch.y >= 0) & (batch.y <= 1)).all())
    # The tokens are the observed curves, in step order (context = the first n_context steps).
    curves = prior.sample_curves(16, generator=_gen(4))
    assert torch.equal(batch.y, curves.observed.float())


def test_subset_tokens_keep_the_prefix_property():
    prior = LCPFNPrior(LCPFNPriorConfig(n_steps=50, seq_len=12))
    batch = prior.sample(32, generator=_gen(5))
    assert batch.t.shape == (32, 12)
    steps = batch.t * 50
    torch.testing.assert_close(steps, steps.round())
    assert bool((steps.diff(dim=1) > 0).all())  # distinct, increasing: queries come after context
    assert bool((steps >= 1).all() and (steps <= 50).all())
    assert len({tuple(row) for row in steps.round().int().tolist()}) > 1  # subsets differ by task


def test_context_size_is_uniform_over_one_to_t_minus_one():
    prior = LCPFNPrior(LCPFNPriorConfig(n_steps=6))
    gen = _gen(6)
    sizes = [prior.sample(1, generator=gen).n_context for _ in range(500)]
    counts = np.bincount(sizes, minlength=6)
    assert counts[0] == 0 and counts[1:].sum() == 500
    assert stats.chisquare(counts[1:]).pvalue > 1e-3
    assert prior.sample(2, generator=gen, n_context=3).n_context == 3


def test_seeding_determinism():
    prior = LCPFNPrior()
    a, b = prior.sample(8, generator=_gen(7)), prior.sample(8, generator=_gen(7))
    c = prior.sample(8, generator=_gen(8))
    assert torch.equal(a.y, b.y) and a.n_context == b.n_context
    assert not torch.equal(a.y, c.y)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_steps": 1}, "n_steps"),
        ({"n_steps": 10.0}, "n_steps"),
        ({"max_hps": -1}, "max_hps"),
        ({"seq_len": 1}, "seq_len"),
        ({"seq_len": 101}, "seq_len"),
        ({"clip_observations": "yes"}, "clip_observations"),
    ],
)
def test_config_validation_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LCPFNPriorConfig(**kwargs)


def test_sample_validation():
    prior = LCPFNPrior()
    with pytest.raises(ValueError, match="batch_size"):
        prior.sample(0, generator=_gen(0))
    with pytest.raises(ValueError, match="n_context"):
        prior.sample(2, generator=_gen(0), n_context=100)
