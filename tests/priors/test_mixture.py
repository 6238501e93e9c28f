"""Tests of priors/mixture.py."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from priors.base import Prior
from priors.lcpfn import LCPFNPrior, LCPFNPriorConfig
from priors.mixture import MixturePrior


def _lc(n_steps: int, max_hps: int = 4) -> LCPFNPrior:
    return LCPFNPrior(LCPFNPriorConfig(n_steps=n_steps, max_hps=max_hps))


def test_components_are_picked_by_weight_and_batches_differ_in_t():
    mix = MixturePrior([_lc(5), _lc(8)], [3.0, 1.0])
    assert isinstance(mix, Prior) and mix.max_hps == 4
    assert mix.probabilities == pytest.approx([0.75, 0.25])
    gen = torch.Generator().manual_seed(0)
    picks = [mix.choose(generator=gen) for _ in range(4000)]
    assert stats.binomtest(picks.count(0), 4000, 0.75).pvalue > 1e-3
    lengths = {mix.sample(2, generator=gen).n_tokens for _ in range(40)}
    assert lengths == {5, 8}


def test_sample_is_the_chosen_components_batch():
    a, b = _lc(5), _lc(8)
    mix = MixturePrior([a, b], [1.0, 1.0])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(5):
        batch = mix.sample(3, generator=g1)
        expected = [a, b][mix.choose(generator=g2)].sample(3, generator=g2)
        assert torch.equal(batch.y, expected.y) and batch.n_context == expected.n_context


def test_deterministic_given_the_generator():
    mix = MixturePrior([_lc(5), _lc(8)], [1.0, 2.0])
    runs = [
        [mix.sample(2, generator=gen).y for _ in range(6)]
        for gen in (torch.Generator().manual_seed(1), torch.Generator().manual_seed(1))
    ]
    assert all(torch.equal(x, y) for x, y in zip(*runs, strict=True))


@pytest.mark.parametrize(
    ("priors", "weights", "match"),
    [
        ([], [], "at least one"),
        ([_lc(5), _lc(6)], [1.0], "weights has 1"),
        ([_lc(5), _lc(6)], [1.0, 0.0], "positive"),
        ([_lc(5), _lc(6)], [1.0, -2.0], "positive"),
        ([_lc(5), _lc(6)], [1.0, float("nan")], "positive"),
        ([_lc(5, 4), _lc(6, 5)], [1.0, 1.0], "max_hps"),
    ],
)
def test_validation(priors, weights, match):
    with pytest.raises(ValueError, match=match):
        MixturePrior(priors, weights)
