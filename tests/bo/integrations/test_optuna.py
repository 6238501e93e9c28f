"""Tests of bo.integrations.optuna: the PFN pruner in Optuna studies."""

from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial  # noqa: E402

import bo.integrations.optuna as pruner_module  # noqa: E402
from bo.integrations.optuna import PFNPruner, encode_params  # noqa: E402
from pfn.scaling import MetricScaler  # noqa: E402
from pfn.surrogate import Surrogate  # noqa: E402

DISTS = {
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "opt": CategoricalDistribution(["sgd", "adam", "rmsprop"]),
}


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint_path) -> Surrogate:
    """The random-weight tiny model: decides nothing sensible, but runs the whole path."""
    return Surrogate.load(tiny_checkpoint_path)


def finished(state, curve, value=None, params=None, dists=None):
    """A finished trial with ``curve`` reported at steps 1, 2, ..."""
    return create_trial(
        state=state,
        value=value,
        params=params if params is not None else {"lr": 1e-3, "opt": "adam"},
        distributions=dists if dists is not None else DISTS,
        intermediate_values={s + 1: v for s, v in enumerate(curve)},
    )


def running(study, curve, params=None):
    """A running trial of ``study`` with ``params`` (over DISTS) that reported ``curve``."""
    study.enqueue_trial(params if params is not None else {"lr": 1e-3, "opt": "adam"})
    trial = study.ask(fixed_distributions=DISTS)
    for s, v in enumerate(curve):
        trial.report(v, s + 1)
    return trial


def frozen(study, trial):
    """The record of ``trial`` as Optuna hands it to a pruner."""
    return study.trials[trial.number]


# ---- behaviour with the shipped model ------------------------------------------------------------


def test_prunes_a_clearly_bad_trial_and_keeps_a_clearly_good_one():
    """A seeded toy study: loss_t = final + (1 - final) exp(-t/3), final = 0.05 + 1.5 x.

    Enqueued: x=1.0 (a run that gets worse, from 1 towards 1.55) and x=0.3 (ends at 0.52, the
    best to beat) both complete, since nothing is pruned before a trial completes; then x=0.6
    (flat from 0.99 to 0.95: far worse than 0.52) and x=0.0 (ends at 0.08, better than 0.52 from
    step 3 on). The bad one must be pruned by step 5 (half its budget saved; the shipped stage 12
    gives it 0.11, 0.08 and 0.04 at steps 3-5, stage 9 had pruned at step 3), with a probability
    that falls as it stays flat; the good one must finish.
    """
    max_step = 10
    pruner = PFNPruner(max_step=max_step, min_steps=3, surrogate=Surrogate.load())
    probabilities: dict[int, list[float]] = {}

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        final = 0.05 + 1.5 * x
        for step in range(1, max_step + 1):
            loss = final + (1.0 - final) * math.exp(-step / 3)
            trial.report(loss, step)
            prune = trial.should_prune()
            if pruner.last_decision.reason == "forecast":
                probabilities.setdefault(trial.number, []).append(
                    pruner.last_decision.max_probability
                )
            if prune:
                raise optuna.TrialPruned()
        return loss

    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0), pruner=pruner
    )
    for x in (1.0, 0.3, 0.6, 0.0):
        study.enqueue_trial({"x": x})
    study.optimize(objective, n_trials=4)

    states = [t.state for t in study.trials]
    assert states[:2] == [TrialState.COMPLETE, TrialState.COMPLETE]
    bad, good = study.trials[2], study.trials[3]
    assert bad.state == TrialState.PRUNED
    pruned_at = max(bad.intermediate_values)
    assert 3 <= pruned_at <= 5
    assert len(probabilities[2]) == pruned_at - 2  # asked at steps 3..pruned_at
    assert probabilities[2][-1] <= 0.05 and all(p > 0.05 for p in probabilities[2][:-1])
    assert probabilities[2] == sorted(probabilities[2], reverse=True)
    assert good.state == TrialState.COMPLETE
    assert len(probabilities[3]) == max_step - 3  # asked at steps 3..9, never pruned
    assert min(probabilities[3]) > 0.05
    assert study.best_trial.number == 3


# ---- when the pruner does not act ----------------------------------------------------------------


def test_no_pruning_before_min_steps_then_prunes(tiny):
    """The best completed value sits at the hard upper bound (score 1): nothing can beat it, so
    the pruner prunes once it may — but not before ``min_steps`` values, nor at ``max_step``."""
    study = optuna.create_study(direction="maximize")
    study.add_trial(finished(TrialState.COMPLETE, [0.5, 0.8, 0.9, 1.0, 1.0], value=1.0))
    pruner = PFNPruner(max_step=5, min_steps=3, surrogate=tiny, lower_bound=0.0, upper_bound=1.0)
    trial = running(study, [])
    reasons = []
    for step, value in enumerate([0.2, float("nan"), 0.3, 0.4], start=1):
        trial.report(value, step)
        decision = pruner.decide(study, frozen(study, trial))
        reasons.append((decision.reason, decision.prune))
    # the NaN at step 2 does not count as a reported value
    assert reasons == [
        ("min_steps", False),
        ("min_steps", False),
        ("min_steps", False),
        ("forecast", True),
    ]
    assert pruner.decide(study, frozen(study, trial)).probabilities.max() <= 1e-6
    trial.report(0.5, 5)
    last = pruner.decide(study, frozen(study, trial))
    assert (last.reason, last.prune, last.best_value) == ("last_step", False, 1.0)


def test_no_pruning_before_a_trial_completes(tiny):
    """PRUNED and FAILED trials give context but no reference best; the first COMPLETE one does."""
    pruner = PFNPruner(max_step=5, surrogate=tiny, lower_bound=0.0, upper_bound=1.0)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    study.add_trial(finished(TrialState.PRUNED, [0.9, 1.0]))
    study.add_trial(finished(TrialState.FAIL, [1.0]))
    trial = running(study, [0.2, 0.3])
    assert not trial.should_prune()
    assert pruner.last_decision.reason == "no_reference"
    assert pruner.last_decision.best_value is None
    study.add_trial(finished(TrialState.COMPLETE, [0.9, 1.0], value=1.0))
    assert trial.should_prune()
    assert pruner.last_decision.reason == "forecast"
    assert pruner.last_decision.best_value == 1.0
    assert pruner.last_decision.n_curves == 3  # itself, the PRUNED and the COMPLETE trial


# ---- hyperparameters -----------------------------------------------------------------------------


def test_encode_params_by_hand():
    dists = {**DISTS, "width": IntDistribution(8, 64)}
    # sorted names: lr (log: 1e-3 is half-way between 1e-5 and 1e-1), opt (one-hot), width
    x = encode_params({"width": 36, "opt": "adam", "lr": 1e-3}, dists)
    np.testing.assert_allclose(x, [0.5, 0.0, 1.0, 0.0, 0.5], atol=1e-12)
    x = encode_params({"width": 8, "opt": "rmsprop", "lr": 1e-1}, dists)
    np.testing.assert_allclose(x, [1.0, 0.0, 0.0, 1.0, 0.0], atol=1e-12)
    assert encode_params({}, {}).shape == (0,)
    with pytest.raises(ValueError, match="different"):
        encode_params({"lr": 1e-3}, DISTS)
    with pytest.raises(ValueError, match="outside"):
        encode_params({"lr": 1.0, "opt": "adam"}, DISTS)


def test_params_given_only_when_all_trials_share_distributions(tiny):
    def decision(other_dists, **kwargs):
        study = optuna.create_study(direction="minimize")
        params = {"lr": 1e-2} if other_dists is not DISTS else None
        study.add_trial(
            finished(TrialState.COMPLETE, [0.9, 0.5], value=0.5, params=params, dists=other_dists)
        )
        pruner = PFNPruner(max_step=4, surrogate=tiny, **kwargs)
        return pruner.decide(study, frozen(study, running(study, [0.95])))

    d = decision(DISTS)
    assert (d.reason, d.n_curves, d.n_hps) == ("forecast", 2, 4)
    assert decision(DISTS, use_params=False).n_hps == 0
    alone = decision(DISTS, use_other_trials=False)
    assert (alone.n_curves, alone.n_hps) == (1, 4)
    assert decision({"lr": FloatDistribution(1e-5, 1e-1, log=True)}).n_hps == 0
    # one-hot over 40 choices exceeds the model's max_hps: no hyperparameters
    assert tiny.config.max_hps < 40
    study = optuna.create_study(direction="minimize")
    many = {"c": CategoricalDistribution(list(range(40)))}
    study.add_trial(finished(TrialState.COMPLETE, [0.9], value=0.9, params={"c": 3}, dists=many))
    trial = study.ask()
    trial.suggest_categorical("c", list(range(40)))
    trial.report(0.95, 1)
    d = PFNPruner(max_step=4, surrogate=tiny).decide(study, frozen(study, trial))
    assert (d.reason, d.n_hps) == ("forecast", 0)


# ---- consistency with the surrogate --------------------------------------------------------------


def test_probabilities_are_one_minus_cdf_of_a_direct_forecast(tiny):
    """The pruner's numbers, rebuilt by hand from the study: scores, times, configs, queries."""
    study = optuna.create_study(direction="minimize")
    study.add_trial(finished(TrialState.COMPLETE, [2.0, 1.0, 0.7, 0.6], value=0.55))
    study.add_trial(finished(TrialState.PRUNED, [3.0, 2.9], params={"lr": 1e-5, "opt": "sgd"}))
    study.add_trial(
        finished(
            TrialState.COMPLETE,
            [2.5, 1.5, 1.2, 1.1],
            value=1.1,
            params={"lr": 1e-1, "opt": "rmsprop"},
        )
    )
    trial = running(
        study, [2.2, float("nan"), float("inf"), 1.4], params={"lr": 1e-4, "opt": "adam"}
    )
    d = PFNPruner(max_step=8, surrogate=tiny).decide(study, frozen(study, trial))

    scaler = MetricScaler.fit_runs(
        [[2.2, np.inf, 1.4], [2.0, 1.0, 0.7, 0.6, 0.55], [3.0, 2.9], [2.5, 1.5, 1.2, 1.1, 1.1]],
        higher_is_better=False,
    )  # the completed trials' final values count as part of their runs
    configs = [[0.25, 0, 1, 0], [0.5, 0, 1, 0], [0.0, 1, 0, 0], [1.0, 0, 0, 1]]  # (C, D)
    steps = [[1, 3, 4], [1, 2, 3, 4], [1, 2], [1, 2, 3, 4]]
    values = [[2.2, np.inf, 1.4], [2.0, 1.0, 0.7, 0.6], [3.0, 2.9], [2.5, 1.5, 1.2, 1.1]]
    forecast = tiny.forecast(
        configs,
        ctx_curve=np.concatenate([[i] * len(s) for i, s in enumerate(steps)]),
        ctx_t=np.concatenate(steps) / 8,
        ctx_y=scaler.to_score(np.concatenate(values)),
        qry_curve=[0, 0, 0, 0],
        qry_t=np.array([5, 6, 7, 8]) / 8,
    )
    expected = 1.0 - forecast.cdf(scaler.to_score(0.55))
    np.testing.assert_array_equal(d.steps, [5, 6, 7, 8])
    np.testing.assert_allclose(d.probabilities, expected, atol=1e-6)
    assert d.best_value == 0.55
    assert d.max_probability == pytest.approx(expected.max(), abs=1e-6)
    # prune iff *every* later step is at or below the threshold
    lo, hi = float(expected.min()), float(expected.max())
    assert hi - lo > 1e-3  # the random model's probabilities differ between steps
    for threshold, prune in (((lo + hi) / 2, False), (min(hi + 1e-5, 0.999), True)):
        pruner = PFNPruner(max_step=8, surrogate=tiny, threshold=threshold)
        assert pruner.decide(study, frozen(study, trial)).prune == prune


# ---- arguments, loading, import ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_step": 0}, "max_step"),
        ({"max_step": 2.5}, "max_step"),
        ({"max_step": True}, "max_step"),
        ({"max_step": 10, "threshold": 1.0}, "threshold"),
        ({"max_step": 10, "threshold": -0.1}, "threshold"),
        ({"max_step": 10, "threshold": "0.05"}, "threshold"),
        ({"max_step": 10, "min_steps": 0}, "min_steps"),
        ({"max_step": 10, "min_steps": 11}, "min_steps"),
        ({"max_step": 10, "lower_bound": 1.0, "upper_bound": 1.0}, "lower_bound"),
        ({"max_step": 10, "lower_bound": float("nan")}, "lower_bound"),
        ({"max_step": 10, "lower_bound": "0"}, "lower_bound"),
        ({"max_step": 10, "surrogate": "default"}, "surrogate"),
        ({"max_step": 10, "use_params": "yes"}, "use_params"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PFNPruner(**kwargs)


def test_bad_steps_and_multi_objective_studies_raise(tiny):
    pruner = PFNPruner(max_step=5, surrogate=tiny)
    study = optuna.create_study(direction="minimize")
    trial = study.ask()
    trial.report(1.0, 0)  # steps must start at 1
    with pytest.raises(ValueError, match="outside 1 .. max_step"):
        pruner.prune(study, frozen(study, trial))
    study = optuna.create_study(directions=["minimize", "minimize"])
    with pytest.raises(ValueError, match="single-objective"):
        pruner.prune(study, frozen(study, study.ask()))


def test_shipped_surrogate_is_loaded_lazily_once(monkeypatch, tiny):
    calls = []

    def load(path=None, **kwargs):
        calls.append(path)
        return tiny

    monkeypatch.setattr(pruner_module.Surrogate, "load", load)
    pruner = PFNPruner(max_step=5)
    study = optuna.create_study(direction="minimize")
    trial = running(study, [1.0])
    assert not pruner.prune(study, frozen(study, trial))  # no reference: no model needed
    assert calls == []
    study.add_trial(finished(TrialState.COMPLETE, [1.0, 0.5], value=0.5))
    pruner.prune(study, frozen(study, trial))
    pruner.prune(study, frozen(study, trial))
    assert calls == [None]


def test_missing_optuna_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now raises ImportError
    spec = importlib.util.spec_from_file_location("_pruner_without_optuna", pruner_module.__file__)
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(ImportError, match=r"pip install curvepfn\[hpo\]"):
        spec.loader.exec_module(module)
