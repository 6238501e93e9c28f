"""``bo.pruning``: the stop rule's shared argument checks (the rule itself is tested through
its users, ``tests/bo/integrations/test_early_stopping.py`` and ``test_optuna.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bo.pruning import RuleSettings, check_rule

GOOD = dict(max_step=10, min_steps=2, threshold=0.05, lower_bound=0.0, upper_bound=None,
            surrogate=None)  # fmt: skip


def test_good_arguments_come_back_as_plain_python_numbers():
    rule = check_rule(**{**GOOD, "max_step": np.int64(10), "threshold": np.float32(0.25),
                         "upper_bound": np.int32(1)})  # fmt: skip
    assert rule == RuleSettings(max_step=10, min_steps=2, threshold=0.25, lower_bound=0.0,
                                upper_bound=1.0)  # fmt: skip
    assert type(rule.max_step) is int and type(rule.threshold) is float
    assert type(rule.upper_bound) is float
    zero_d = check_rule(**{**GOOD, "threshold": torch.tensor(0.1), "lower_bound": np.array(0.0)})
    assert zero_d.threshold == pytest.approx(0.1) and zero_d.lower_bound == 0.0


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(max_step=0), "max_step must be an integer >= 1"),
        (dict(max_step=2.0), "max_step"),
        (dict(max_step=True), "max_step"),
        (dict(min_steps="2"), "min_steps"),
        (dict(min_steps=11), "min_steps=11 exceeds max_step=10"),
        (dict(threshold=1.0), "threshold"),
        (dict(threshold=-0.01), "threshold"),
        (dict(threshold=False), "threshold"),
        (dict(threshold=math.nan), "threshold"),
        (dict(lower_bound="0"), "lower_bound must be a finite number"),
        (dict(lower_bound=True), "lower_bound"),
        (dict(lower_bound=np.array(True)), "lower_bound"),
        (dict(upper_bound=math.inf), "or None for an unbounded side"),
        (dict(lower_bound=-math.inf), "lower_bound"),
        (dict(threshold=np.array([0.1])), "threshold"),
        (dict(upper_bound=math.nan), "upper_bound"),
        (dict(lower_bound=1.0, upper_bound=1.0), "smaller than"),
        (dict(surrogate="default"), "surrogate"),
    ],
)
def test_each_bad_argument_is_named(change, match):
    with pytest.raises(ValueError, match=match):
        check_rule(**{**GOOD, **change})


def test_the_caller_names_the_step_counts():
    with pytest.raises(ValueError, match="min_epochs=3 exceeds max_epochs=2"):
        check_rule(**{**GOOD, "max_step": 2, "min_steps": 3}, names=("max_epochs", "min_epochs"))
