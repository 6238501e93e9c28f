"""Tests of priors/registry.py: names, overrides, and config dict round trips."""

from __future__ import annotations

import json

import pytest

from priors.ftpfn import FTPFNPrior, FTPFNPriorConfig
from priors.lcpfn import LCPFNPrior, LCPFNPriorConfig
from priors.mixture import MixturePrior
from priors.registry import (
    PRIOR_NAMES,
    MixturePriorConfig,
    build_prior,
    make_prior,
    make_prior_config,
    prior_config_from_dict,
    prior_config_to_dict,
    prior_from_dict,
    prior_name,
)


def _configs():
    return [
        FTPFNPriorConfig(),
        FTPFNPriorConfig(max_hps=12, seq_len=200, n_configs=50),
        LCPFNPriorConfig(),
        LCPFNPriorConfig(n_steps=40, seq_len=20, max_hps=3, clip_observations=False),
        MixturePriorConfig(),
        make_prior_config("mixture", max_hps=12, lcpfn_weight=0.5, ftpfn={"seq_len": 300}),
    ]


@pytest.mark.parametrize("config", _configs(), ids=lambda c: type(c).__name__)
def test_config_dict_round_trip_through_json(config):
    data = json.loads(json.dumps(prior_config_to_dict(config)))
    assert data["name"] == prior_name(config)
    assert prior_config_from_dict(data) == config


def test_names_build_their_priors():
    assert isinstance(make_prior("lcpfn"), LCPFNPrior)
    assert isinstance(make_prior("ftpfn"), FTPFNPrior)
    mix = make_prior("mixture")
    assert isinstance(mix, MixturePrior) and mix.probabilities == pytest.approx([0.9, 0.1])
    assert [type(p) for p in mix.priors] == [FTPFNPrior, LCPFNPrior]
    assert set(PRIOR_NAMES) == {"ftpfn", "lcpfn", "mixture"}


def test_overrides():
    assert make_prior("lcpfn", n_steps=30).config == LCPFNPriorConfig(n_steps=30)
    mix = make_prior_config("mixture", max_hps=16, ftpfn={"seq_len": 200})
    assert mix.ftpfn.max_hps == mix.lcpfn.max_hps == 16
    assert mix.ftpfn.seq_len == 200 and mix.lcpfn == LCPFNPriorConfig(max_hps=16)
    assert make_prior("mixture", max_hps=16).max_hps == 16
    # The flat spec of pfn.train's TrainConfig.prior.
    assert make_prior(**{"name": "lcpfn", "max_hps": 5}).max_hps == 5


def test_prior_from_dict_rebuilds_the_prior():
    config = LCPFNPriorConfig(n_steps=20)
    prior = prior_from_dict(prior_config_to_dict(config))
    assert isinstance(prior, LCPFNPrior) and prior.config == config
    mix = build_prior(MixturePriorConfig(lcpfn_weight=1.0, ftpfn_weight=3.0))
    assert mix.probabilities == pytest.approx([0.75, 0.25])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="'nope'.*ftpfn, lcpfn, mixture"):
        make_prior("nope")
    with pytest.raises(ValueError, match="bogus"):
        make_prior("lcpfn", bogus=1)
    with pytest.raises(ValueError, match="bogus"):
        make_prior("mixture", bogus=1)
    with pytest.raises(ValueError, match="lcpfn_weight"):
        make_prior("mixture", lcpfn_weight=0.0)
    with pytest.raises(ValueError, match="max_hps"):
        MixturePriorConfig(lcpfn=LCPFNPriorConfig(max_hps=3))
    with pytest.raises(ValueError, match="'lcpfn'.*seq_len"):
        make_prior_config("mixture", seq_len=500)  # too long for the 100-step LC-PFN curves
    with pytest.raises(ValueError, match="'name' and 'config'"):
        prior_config_from_dict({"name": "lcpfn"})
    with pytest.raises(ValueError, match="unknown prior"):
        prior_config_from_dict({"name": "gp", "config": {}})
    with pytest.raises(ValueError, match="not a registered prior config"):
        prior_config_to_dict(object())
