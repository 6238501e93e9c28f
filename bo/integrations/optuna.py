"""An Optuna pruner that stops runs the PFN surrogate deems hopeless (the LC-PFN rule).

:class:`PFNPruner` reads a running trial's reported values (``trial.report(value, step)``, steps
``1 .. max_step``) as a partial learning curve and asks the surrogate
(:meth:`pfn.surrogate.Surrogate.forecast`) how the rest of the curve may go. It prunes the trial
once the curve is unlikely to beat the best *final* value of the study's completed trials at any
later step:

    prune  iff  P(y_t' > y_best) <= threshold  for every later step t' = last + 1, ..., max_step,

with "better than" in the study's direction and ``threshold = 0.05`` by default. This is the
early-stopping rule of LC-PFN (Adriaensen et al., "Efficient Bayesian Learning Curve Extrapolation
using Prior-Data Fitted Networks", NeurIPS 2023), reported there to save 2-6x compute on LCBench,
TaskSet and PD1 at no loss in final performance. Unlike LC-PFN, which sees one curve alone, the
surrogate here also reads the curves of the study's finished trials and (optionally) every trial's
hyperparameters, as in freeze-thaw (FT-PFN). The rule is only as good as the surrogate's
extrapolation: to prune less, raise ``min_steps`` or lower ``threshold``.

How a decision is made (:meth:`PFNPruner.decide`):

* No pruning before ``min_steps`` values are reported, nor while no trial has completed with a
  finite value (there is no reference best yet), nor at ``max_step`` (nothing left to save).
* Raw values become scores in [0, 1] (higher is better) with a :class:`~pfn.scaling.MetricScaler`
  fitted by ``fit_runs`` to the curves of the trial and of the study's COMPLETE and PRUNED trials
  (a completed trial's final value counts as part of its curve). NaN values are ignored; ±inf
  counts as diverged (score 0). Steps become ``t = step / max_step``.
* Context: the trial's own curve (curve 0) and, with ``use_other_trials``, each other COMPLETE or
  PRUNED trial's curve, in trial-number order. With ``use_params``, every curve carries its trial's
  hyperparameters encoded by :func:`encode_params`, if all those trials share the same
  distributions and the encoding fits the surrogate's ``max_hps``; otherwise none (D = 0).
* The probability of beating the best at each later step is ``1 - cdf(score(y_best))`` of the
  forecast of curve 0 there.

Example (a toy objective; put one epoch of training where the loss is computed)::

    import math

    import optuna

    from bo.integrations.optuna import PFNPruner

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        final = 0.1 + abs(math.log10(lr) + 2.5)  # the best lr is 10**-2.5
        for epoch in range(1, 21):  # steps 1 .. max_step
            loss = final + (2.0 - final) * math.exp(-epoch / 4)
            trial.report(loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return loss

    pruner = PFNPruner(max_step=20, min_steps=3, lower_bound=0.0)  # a loss: bounded below by 0
    study = optuna.create_study(direction="minimize", pruner=pruner)
    study.optimize(objective, n_trials=30)
    pruner.last_decision  # why the last trial was (or was not) pruned

Shapes: ``C`` curves, ``D`` encoded hyperparameters, ``N`` context points, ``L`` later steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

try:
    import optuna
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna.study import StudyDirection
    from optuna.trial import FrozenTrial, TrialState
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("bo.integrations.optuna needs optuna: pip install curvepfn[hpo]") from err

from bo.pruning import beat_probabilities, check_rule
from pfn.surrogate import Surrogate

__all__ = ["PFNPruner", "PruneDecision", "encode_params"]

Reason = Literal["min_steps", "no_reference", "last_step", "forecast"]


@dataclass(frozen=True, eq=False)
class PruneDecision:
    """What :meth:`PFNPruner.decide` concluded about one trial at its latest report.

    ``reason`` says how the decision was reached: ``"min_steps"`` (too few values reported),
    ``"no_reference"`` (no completed trial with a finite value yet), ``"last_step"`` (the trial
    reached ``max_step``) or ``"forecast"`` (the surrogate was asked; only then are ``steps`` and
    ``probabilities`` non-empty).
    """

    trial: int  # the trial's number
    prune: bool
    reason: Reason
    last_step: int | None  # the latest reported step (None: nothing reported)
    best_value: float | None  # the reference: best final value of a COMPLETE trial
    steps: np.ndarray  # (L,) later steps queried: last_step + 1 .. max_step
    probabilities: np.ndarray  # (L,) P(value at the step beats best_value)
    n_curves: int  # curves in the surrogate's context (C), 0 without a forecast
    n_hps: int  # encoded hyperparameters given to the surrogate (D)

    @property
    def max_probability(self) -> float:
        """The largest probability of beating the best over later steps (NaN without forecast)."""
        return float(self.probabilities.max()) if self.probabilities.size else math.nan


def encode_params(
    params: Mapping[str, Any], distributions: Mapping[str, BaseDistribution]
) -> np.ndarray:
    """A trial's parameters as a point of [0, 1]^D, parameters in sorted name order.

    A float or int parameter is one dimension, min-max scaled to [0, 1] between the
    distribution's ``low`` and ``high`` (on the log of the values when ``log=True``; 0.5 when
    ``low == high``). A categorical with k choices is k one-hot dimensions.

    Args:
        params: name -> value (``FrozenTrial.params``).
        distributions: name -> its distribution (``FrozenTrial.distributions``), same names.

    Returns:
        (D,) float64.

    Raises:
        ValueError: names differ, a value lies outside its distribution, or a distribution is of
            an unknown kind.
    """
    if set(params) != set(distributions):
        raise ValueError(
            f"params {sorted(params)} and distributions {sorted(distributions)} name different "
            "parameters"
        )
    parts: list[np.ndarray] = []
    for name in sorted(distributions):
        dist, value = distributions[name], params[name]
        if isinstance(dist, CategoricalDistribution):
            try:
                index = dist.to_internal_repr(value)
            except ValueError as err:
                raise ValueError(f"parameter {name!r}: {err}") from None
            one_hot = np.zeros(len(dist.choices))
            one_hot[int(index)] = 1.0
            parts.append(one_hot)
        elif isinstance(dist, (FloatDistribution, IntDistribution)):
            lo, hi, v = float(dist.low), float(dist.high), float(value)
            if not lo <= v <= hi:
                raise ValueError(f"parameter {name!r} = {value!r} lies outside [{lo}, {hi}]")
            if dist.log:
                lo, hi, v = math.log(lo), math.log(hi), math.log(v)
            u = 0.5 if hi == lo else (v - lo) / (hi - lo)
            parts.append(np.array([min(max(u, 0.0), 1.0)]))
        else:
            raise ValueError(
                f"parameter {name!r} has an unsupported distribution {type(dist).__name__}"
            )
    return np.concatenate(parts) if parts else np.zeros(0)


class PFNPruner(optuna.pruners.BasePruner):
    """Prune a trial once the PFN gives it at most ``threshold`` chance of beating the best.

    The rule is LC-PFN's (Adriaensen et al., NeurIPS 2023): prune iff
    ``P(y_t' > y_best) <= threshold`` for every later step ``t'`` up to ``max_step``, where
    ``y_best`` is the best final value of the study's COMPLETE trials and ">" means better in the
    study's direction. See the module docstring for how the surrogate's context is built.

    Args:
        max_step: the last step a trial reports (its full budget); steps run ``1 .. max_step``.
        threshold: prune when no later step beats the best with a probability above this, in
            [0, 1).
        min_steps: never prune a trial with fewer reported (non-NaN) values.
        surrogate: the network; None loads the shipped checkpoint (``Surrogate.load()``) at the
            first decision that needs it.
        lower_bound, upper_bound: known bounds of the reported metric (e.g. 0 for a loss, 0 and 1
            for an accuracy), used for the metric -> score map; None for an unbounded side.
        use_other_trials: give the surrogate the curves of the study's finished trials, not just
            the trial's own curve.
        use_params: give the surrogate the trials' hyperparameters (see :func:`encode_params`).

    Attributes:
        last_decision: the :class:`PruneDecision` of the latest :meth:`prune` call (None before).

    Raises:
        ValueError: an argument is out of range or of the wrong type.
    """

    def __init__(
        self,
        *,
        max_step: int,
        threshold: float = 0.05,
        min_steps: int = 1,
        surrogate: Surrogate | None = None,
        lower_bound: float | None = None,
        upper_bound: float | None = None,
        use_other_trials: bool = True,
        use_params: bool = True,
    ) -> None:
        rule = check_rule(
            max_step=max_step,
            min_steps=min_steps,
            threshold=threshold,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            surrogate=surrogate,
        )
        self.max_step, self.min_steps = rule.max_step, rule.min_steps
        self.threshold = rule.threshold
        self.lower_bound, self.upper_bound = rule.lower_bound, rule.upper_bound
        for name, flag in (("use_other_trials", use_other_trials), ("use_params", use_params)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be a bool, got {flag!r}")
        self.use_other_trials = use_other_trials
        self.use_params = use_params
        self._surrogate = surrogate
        self.last_decision: PruneDecision | None = None

    @property
    def surrogate(self) -> Surrogate:
        """The network, loaded on first access when none was given."""
        if self._surrogate is None:
            self._surrogate = Surrogate.load()
        return self._surrogate

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        """Whether to stop ``trial`` now (Optuna calls this from ``trial.should_prune()``)."""
        decision = self.decide(study, trial)
        self.last_decision = decision
        return decision.prune

    def decide(self, study: optuna.study.Study, trial: FrozenTrial) -> PruneDecision:
        """The decision for ``trial`` with its reasons and probabilities; see the class docstring.

        Raises:
            ValueError: the study has several objectives, or a trial reported a step outside
                ``1 .. max_step``.
        """
        if len(study.directions) != 1:
            raise ValueError("PFNPruner supports single-objective studies only")
        higher_is_better = study.direction == StudyDirection.MAXIMIZE
        steps, values = self._curve(trial)
        last = max(trial.intermediate_values) if trial.intermediate_values else None

        def no_forecast(reason: Reason, best: float | None = None) -> PruneDecision:
            return PruneDecision(
                trial=trial.number,
                prune=False,
                reason=reason,
                last_step=last,
                best_value=best,
                steps=np.zeros(0, dtype=np.int64),
                probabilities=np.zeros(0),
                n_curves=0,
                n_hps=0,
            )

        if steps.size < self.min_steps:
            return no_forecast("min_steps")
        finished = [
            t
            for t in study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
            )
            if t.number != trial.number
        ]
        finals = [
            t.value
            for t in finished
            if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
        ]
        if not finals:
            return no_forecast("no_reference")
        best = max(finals) if higher_is_better else min(finals)
        if last >= self.max_step:
            return no_forecast("last_step", best)

        others = [(t, *self._curve(t)) for t in finished]
        runs = [values] + [
            np.append(v, t.value) if t.state == TrialState.COMPLETE and t.value is not None else v
            for t, _, v in others
        ]
        # Context curves: the trial itself first, then finished trials with at least one point.
        curves = [(trial, steps, values)]
        if self.use_other_trials:
            curves += [(t, s, v) for t, s, v in others if s.size]
        configs = self._configs([t for t, _, _ in curves])  # (C, D)
        later, probabilities = beat_probabilities(
            self.surrogate,
            [(s, v) for _, s, v in curves],
            best=best,
            last_step=last,
            max_step=self.max_step,
            higher_is_better=higher_is_better,
            scale_runs=runs,
            configs=configs,
            lower_bound=self.lower_bound,
            upper_bound=self.upper_bound,
        )  # (L,) each
        return PruneDecision(
            trial=trial.number,
            prune=bool((probabilities <= self.threshold).all()),
            reason="forecast",
            last_step=last,
            best_value=float(best),
            steps=later,
            probabilities=probabilities,
            n_curves=len(curves),
            n_hps=configs.shape[1],
        )

    def _curve(self, trial: FrozenTrial) -> tuple[np.ndarray, np.ndarray]:
        """A trial's (steps, values), each (n,), sorted by step, NaN values left out."""
        items = sorted(trial.intermediate_values.items())
        bad = [s for s, _ in items if not 1 <= s <= self.max_step]
        if bad:
            raise ValueError(
                f"trial {trial.number} reported step {bad[0]}, outside 1 .. max_step="
                f"{self.max_step}: report steps starting at 1 (e.g. epoch + 1), or raise max_step"
            )
        items = [(s, v) for s, v in items if not math.isnan(v)]
        steps = np.array([s for s, _ in items], dtype=np.int64)
        values = np.array([v for _, v in items], dtype=np.float64)
        return steps, values

    def _configs(self, trials: list[FrozenTrial]) -> np.ndarray:
        """(C, D) encoded hyperparameters of the context trials; D = 0 when they cannot be used."""
        c = len(trials)
        if not self.use_params:
            return np.zeros((c, 0))
        distributions = trials[0].distributions
        if not distributions or any(t.distributions != distributions for t in trials[1:]):
            return np.zeros((c, 0))
        configs = np.stack([encode_params(t.params, t.distributions) for t in trials])
        if configs.shape[1] > self.surrogate.config.max_hps:
            return np.zeros((c, 0))
        return configs
