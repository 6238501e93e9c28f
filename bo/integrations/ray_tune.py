"""A Ray Tune trial scheduler that runs freeze-thaw: pause every trial after each step, resume the
most promising one.

:class:`FreezeThawScheduler` is the Tune front of :class:`bo.freeze_thaw.FreezeThaw`. Tune's search
algorithm proposes the configurations (``num_samples``, a ``param_space`` of ``tune.uniform`` ...);
the scheduler decides which trial trains next, one step (one ``tune.report``) at a time:

* after each reported step a trial is paused (``on_trial_result`` returns ``PAUSE``), or stopped
  when it reached ``max_steps``, reported NaN, or the ``budget`` (steps over all trials) is spent;
* whenever a slot is free, :meth:`~FreezeThawScheduler.choose_trial_to_run` scores every waiting
  trial (a paused one at its step ``b``, a new one at ``b = 0``) in **one prediction** of the PFN
  surrogate (its predictive, with the surrogate's ``single_weight``) with an acquisition of
  :mod:`bo.acquisition` (MFEI-random by default; ``h``, ``τ`` and ``T`` drawn once per decision,
  ``../shared/design/reference.md`` §4), and resumes or starts the argmax. The first trial,
  before anything is observed, is the first in Tune's order.

A resumed trial restarts from **its own latest checkpoint**: the trainable must report one with
every result (``tune.report(metrics, checkpoint=...)``) and load it from ``tune.get_checkpoint()``;
a trial paused without a checkpoint cannot (Tune would restart its step count), so it is stopped
with a warning and its results so far still count. Pass
``reuse_actors=True`` to ``tune.TuneConfig``: otherwise every resume starts a new worker process
(seconds each). Leave ``max_concurrent_trials`` unset: Tune's limiter counts paused trials, and
the scheduler already runs only as many trials as the resources hold.

New trials are held: the scheduler sets every PENDING trial it did not choose to PAUSED (through
``_set_trial_status``, which Tune opens to schedulers), since Tune's controller otherwise starts
PENDING trials by itself as soon as resources allow. A decision is made only when the chosen
trial's resources are free (from ``ray.cluster_resources()`` minus the running trials): deciding
earlier would ignore the results of the running trials. On an autoscaling cluster this sees only
the current nodes.

Units: ``metric`` in the user's units with ``mode="min"`` for losses; scores in [0, 1] come from a
:class:`~pfn.scaling.MetricScaler` fitted to each trial's best value (``fit_runs``). A reported
NaN is a failure (scored 0 at that step, the trial stopped, never resumed), ±inf a diverged value
(scored 0; the trial may still be resumed), as in :class:`~bo.freeze_thaw.FreezeThaw`. A crashed
trial (``on_trial_error``) is a failure at the step it was training; if Tune retries it
(``FailureConfig(max_failures>0)``), the failure is forgotten and the trial waits as a paused one.

State: :meth:`~FreezeThawScheduler.save` / :meth:`~FreezeThawScheduler.restore` write and read
the scheduler's own state (every trial's curve, by trial id) as JSON. Tune itself never calls them
(it pickles the scheduler once, when the ``Tuner`` is built), so for ``Tuner.restore`` pass
``state_path``: the state is saved there after every change and read back when the scheduler
meets its first trial. Without it, a restored experiment keeps only each trial's last result.

Example (a toy trainable; put one epoch of training where the loss is computed)::

    import json, math, os, tempfile

    from ray import tune

    from bo.integrations.ray_tune import FreezeThawScheduler
    from bo.space import Float, Space

    def trainable(config):
        state = {"epoch": 0}
        if (ckpt := tune.get_checkpoint()) is not None:  # thawed: go on where it was frozen
            with ckpt.as_directory() as d, open(os.path.join(d, "state.json")) as f:
                state = json.load(f)
        final = 0.1 + abs(math.log10(config["lr"]) + 2.5)  # the best lr is 10**-2.5
        while True:  # the scheduler stops the trial at max_steps
            state["epoch"] += 1
            loss = final + (2.0 - final) * math.exp(-state["epoch"] / 4)
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump(state, f)
                tune.report({"loss": loss}, checkpoint=tune.Checkpoint.from_directory(d))

    space = Space({"lr": Float(1e-4, 1e-1, log=True)})
    scheduler = FreezeThawScheduler(
        space, metric="loss", mode="min", max_steps=20, budget=200, lower_bound=0.0
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"lr": tune.loguniform(1e-4, 1e-1)},
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=30, reuse_actors=True),
    )
    results = tuner.fit()
    results.get_best_result(metric="loss", mode="min", scope="all").config

Shapes: ``C`` trials given to the surrogate, ``N`` observed points, ``M`` candidates, ``D``
encoded hyperparameters.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

try:
    import ray
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("bo.integrations.ray_tune needs Ray Tune: pip install curvepfn[ray]") from err

from bo.acquisition import (
    ACQUISITIONS,
    DEFAULT_ACQUISITION,
    acquisition_values,
    draw_lookahead,
    pick_argmax,
    score_context,
)
from bo.space import Space
from pfn.scaling import MetricScaler
from pfn.surrogate import Surrogate

__all__ = ["STATE_FORMAT_VERSION", "Decision", "FreezeThawScheduler", "RunState"]

STATE_FORMAT_VERSION = 1
_STEP_KEY = "training_iteration"  # Tune's count of reports: the step, restored with a checkpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunState:
    """One trial's learning curve as the scheduler sees it (an immutable snapshot)."""

    trial_id: str
    steps: tuple[int, ...]  # reported steps (Tune's training_iteration), increasing
    values: tuple[float, ...]  # the metric there, user units; ±inf: diverged or failed
    failed: bool  # crashed or reported NaN: worst at its last step, never resumed
    finished: bool  # reached max_steps, stopped or removed: never resumed


@dataclass(frozen=True)
class Decision:
    """What one call of :meth:`FreezeThawScheduler.choose_trial_to_run` chose, and why."""

    trial_id: str
    step: int  # the step the trial trains to (its current step + 1)
    n_candidates: int  # waiting trials scored (M)
    horizon: int | None  # h; None: nothing observed yet, the first waiting trial was taken
    threshold: float | None  # T, in score units
    value: float | None  # the pick's acquisition value


@dataclass
class _Run:
    trial_id: str
    x: np.ndarray  # (D,) encoded configuration
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    failed: bool = False
    finished: bool = False

    @property
    def step(self) -> int:
        return self.steps[-1] if self.steps else 0


class FreezeThawScheduler(TrialScheduler):
    """Freeze-thaw scheduling of Ray Tune trials (see the module docstring).

    Args:
        space: the search space; its names must be top-level keys of every trial's config (other
            keys are ignored).
        metric: the reported metric the search optimises.
        mode: ``"min"`` (losses) or ``"max"``.
        max_steps: the longest a trial is trained, in reports (Tune's ``training_iteration``).
        budget: total steps to spend over all trials (None: until every trial reaches
            ``max_steps``); also sets the look-ahead horizon's range.
        surrogate: the PFN, or the path of its checkpoint (loaded at the first model-based
            decision; a path is not pickled with the scheduler); None: the shipped checkpoint.
        acquisition: one of :data:`bo.acquisition.ACQUISITIONS`.
        seed: seeds every random choice (decision ``k`` uses ``(seed, k)``).
        lower_bound, upper_bound: known bounds of the metric (None: unbounded).
        state_path: a JSON file the state is saved to after every change and read from, if it
            exists, when the first trial is added (for ``Tuner.restore``).

    Raises:
        ValueError: bad settings, or a space wider than the surrogate's ``max_hps``.
    """

    _supports_buffered_results = False  # one result per report: every step is a decision

    def __init__(
        self,
        space: Space,
        *,
        metric: str,
        mode: Literal["min", "max"],
        max_steps: int,
        budget: int | None = None,
        surrogate: Surrogate | str | Path | None = None,
        acquisition: str = DEFAULT_ACQUISITION,
        seed: int = 0,
        lower_bound: float | None = None,
        upper_bound: float | None = None,
        state_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(space, Space):
            raise ValueError(f"space must be a bo.space.Space, got {space!r}")
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"metric must be a non-empty string, got {metric!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        if budget is not None and (isinstance(budget, bool) or budget < 1):
            raise ValueError(f"budget must be >= 1, got {budget!r}")
        if acquisition not in ACQUISITIONS:
            raise ValueError(
                f"unknown acquisition {acquisition!r}; choose from {', '.join(ACQUISITIONS)}"
            )
        if lower_bound is not None and upper_bound is not None and not lower_bound < upper_bound:
            raise ValueError(
                f"lower_bound must be below upper_bound, got {lower_bound}, {upper_bound}"
            )
        self.space, self._metric, self._mode = space, metric, mode
        self.max_steps, self.budget = max_steps, budget
        self.acquisition, self.seed = acquisition, seed
        self.lower_bound, self.upper_bound = lower_bound, upper_bound
        self.state_path = None if state_path is None else Path(state_path)
        self._surrogate_source = surrogate
        self._surrogate = surrogate if isinstance(surrogate, Surrogate) else None
        if self._surrogate is not None:
            self._check_surrogate(self._surrogate)
        self._runs: dict[str, _Run] = {}  # by trial id, in the order trials were added
        self._n_decisions = 0
        self._chosen: str | None = None  # returned by choose_trial_to_run, not yet started
        self._loaded = False  # whether state_path was read
        self._decisions: list[Decision] = []

    # ---- public API ----------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``"min"`` or ``"max"``."""
        return self._mode

    @property
    def runs(self) -> dict[str, RunState]:
        """Every trial's curve, by trial id."""
        return {
            i: RunState(i, tuple(r.steps), tuple(r.values), r.failed, r.finished)
            for i, r in self._runs.items()
        }

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """Every decision this scheduler object made, in order (not saved with the state)."""
        return tuple(self._decisions)

    @property
    def last_decision(self) -> Decision | None:
        """The latest decision (None before the first)."""
        return self._decisions[-1] if self._decisions else None

    @property
    def steps_spent(self) -> int:
        """Steps recorded so far over all trials (results and failures)."""
        return sum(len(r.steps) for r in self._runs.values())

    @property
    def surrogate(self) -> Surrogate:
        """The PFN (loaded on first use when given as a path or None)."""
        if self._surrogate is None:
            source = self._surrogate_source
            self._surrogate = self._check_surrogate(Surrogate.load(source))  # type: ignore[arg-type]
        return self._surrogate

    def save(self, checkpoint_path: str | Path) -> None:
        """Write the scheduler's state (settings, curves, decision count) as JSON, atomically."""
        path = Path(checkpoint_path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self._state_dict()))
        os.replace(tmp, path)

    def restore(self, checkpoint_path: str | Path) -> None:
        """Replace the state by the one :meth:`save` wrote.

        Raises:
            ValueError: an unknown format, or a state of another metric, mode, ``max_steps`` or
                space (budget, seed, acquisition and bounds may change).
        """
        state = json.loads(Path(checkpoint_path).read_text())
        if state.get("format_version") != STATE_FORMAT_VERSION:
            raise ValueError(
                f"{checkpoint_path}: format_version {state.get('format_version')!r} is not "
                f"{STATE_FORMAT_VERSION}"
            )
        mine = self._settings()
        if state["settings"] != mine:
            raise ValueError(
                f"{checkpoint_path} holds the state of other settings: {state['settings']} "
                f"!= {mine}"
            )
        self._runs = {
            r["trial_id"]: _Run(
                r["trial_id"],
                np.asarray(r["x"], dtype=np.float64),
                [int(s) for s in r["steps"]],
                [float(v) for v in r["values"]],
                bool(r["failed"]),
                bool(r["finished"]),
            )
            for r in state["runs"]
        }
        self._n_decisions = int(state["n_decisions"])
        self._chosen = None
        self._loaded = True

    # ---- TrialScheduler hooks ------------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Accept Tune's ``metric`` / ``mode`` only when absent or equal to the scheduler's."""
        return (metric is None or metric == self._metric) and (mode is None or mode == self._mode)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        """Record a new trial (or find a known one: restored, or retried by Tune after a crash)."""
        self._load_once()
        run = self._runs.get(trial.trial_id)
        if run is None:
            run = _Run(trial.trial_id, self._encode(trial.config))
            self._runs[trial.trial_id] = run
            # A trial of a restored experiment the state does not know: its last result is all
            # there is (the curve before it is lost without state_path).
            last = trial.last_result or {}
            if last.get(_STEP_KEY) and self._metric in last:
                self._record(run, last)
        elif run.failed and trial.status == Trial.PENDING and not run.finished:
            run.failed = False  # Tune retries it from its checkpoint: forget the failure
            run.steps.pop()
            run.values.pop()
        self._persist()

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        """Record the step; PAUSE, or STOP at ``max_steps``, on NaN, on a repeated result (the
        trainable returned), or when the budget is spent."""
        run = self._runs[trial.trial_id]
        if not self._record(run, result) or run.failed or run.step >= self.max_steps:
            return TrialScheduler.STOP
        if self.budget is not None and self.steps_spent >= self.budget:
            return TrialScheduler.STOP
        return TrialScheduler.PAUSE

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        """A crash: the trial scores worst at the step it was training and is never resumed."""
        run = self._runs[trial.trial_id]
        if not run.failed:
            run.steps.append(min(run.step + 1, self.max_steps))
            run.values.append(self._worst)
            run.failed = True
        self._persist()

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        """The trial ended (stopped, or its function returned): it is never resumed."""
        run = self._runs[trial.trial_id]
        if result and result.get(_STEP_KEY) and self._metric in result:
            self._record(run, result)  # a result Tune's stopper ended before on_trial_result
        run.finished = True
        self._persist()

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        """A paused or pending trial was stopped: it is never resumed."""
        self._runs[trial.trial_id].finished = True
        self._persist()

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        """The waiting trial to resume or start next (None: wait, or nothing left to run).

        Idempotent while the chosen trial waits for its resources. Holds every other PENDING
        trial as PAUSED, and stops the waiting trials that may not run any more (finished, failed,
        or the budget is spent).
        """
        trials = tune_controller.get_trials()
        chosen, running, waiting = None, [], []
        for t in trials:
            if t.status == Trial.RUNNING:
                running.append(t)
            if t.status not in (Trial.PENDING, Trial.PAUSED) or t.trial_id not in self._runs:
                continue
            run = self._runs[t.trial_id]
            if t.trial_id == self._chosen and t.status == Trial.PENDING:
                chosen = t  # staged by Tune, waiting for its resources
            elif run.failed or run.finished or run.step >= self.max_steps:
                self._stop(tune_controller, t)
            elif run.step > 0 and getattr(t, "checkpoint", True) is None:
                # Tune restores a trial's step count only from a checkpoint: thawed without one,
                # it would report step 1 again, so it cannot go on where it stopped
                logger.warning(
                    "trial %s was paused at step %d without a checkpoint, so it cannot resume "
                    "where it stopped: it is stopped (its results count). Report one with every "
                    "result: tune.report(..., checkpoint=...)",
                    t.trial_id, run.step,
                )  # fmt: skip
                run.finished = True
                self._stop(tune_controller, t)
            else:
                if t.status == Trial.PENDING:  # else Tune starts it when resources allow
                    tune_controller._set_trial_status(t, Trial.PAUSED)
                waiting.append(t)
        if chosen is not None:
            return chosen
        self._chosen = None
        if self.budget is not None and self.steps_spent + len(running) >= self.budget:
            for t in waiting:
                self._stop(tune_controller, t)
            return None
        if running:
            waiting = self._fitting(waiting, running)
        if not waiting:
            return None
        trial = self._decide(waiting, n_running=len(running))
        self._chosen = trial.trial_id
        self._persist()
        return trial

    def debug_string(self) -> str:
        """One line for Tune's status output."""
        runs = self._runs.values()
        observed = [r for r in runs if r.steps]
        finite = [(v, r.trial_id, s) for r in runs for s, v in zip(r.steps, r.values, strict=True)
                  if math.isfinite(v)]  # fmt: skip
        spent = f"{self.steps_spent}/{self.budget}" if self.budget else str(self.steps_spent)
        line = (
            f"FreezeThawScheduler ({self.acquisition}): {len(self._runs)} trials, "
            f"{len(observed)} started, {sum(r.finished for r in runs)} finished, "
            f"{sum(r.failed for r in runs)} failed; {spent} steps, {self._n_decisions} decisions"
        )
        if finite:
            value, trial_id, step = (min if self._mode == "min" else max)(finite)
            line += f"; best {self._metric}={value:.6g} (trial {trial_id}, step {step})"
        return line

    # ---- decisions -----------------------------------------------------------------------------

    def _decide(self, waiting: Sequence[Trial], *, n_running: int) -> Trial:
        """Score every waiting trial in one prediction; the argmax of the acquisition."""
        rng = np.random.default_rng([self.seed, self._n_decisions])
        self._n_decisions += 1
        observed = [r for r in self._runs.values() if r.steps]
        cands = [self._runs[t.trial_id] for t in waiting]
        if not observed:  # a first start: Tune's searcher already drew the configuration
            self._decisions.append(Decision(waiting[0].trial_id, 1, len(waiting), None, None, None))
            return waiting[0]
        scaler = MetricScaler.fit_runs(
            [r.values for r in observed if any(math.isfinite(v) for v in r.values)] or [[0.0]],
            higher_is_better=self._mode == "max",
            lower_bound=self.lower_bound,
            upper_bound=self.upper_bound,
        )
        # Context: every observed point; a failure scores 0 at its step (to_score does it).
        ctx_curve, ctx_t, ctx_y = score_context(
            [(r.steps, r.values) for r in observed], scaler, self.max_steps
        )
        runs = observed + [r for r in cands if not r.steps]  # C curves
        index = {r.trial_id: i for i, r in enumerate(runs)}
        spent = self.steps_spent + n_running
        remaining = self.max_steps if self.budget is None else max(1, self.budget - spent)
        look = draw_lookahead(rng, remaining=remaining, max_steps=self.max_steps, f_best=max(ctx_y))
        fc = self.surrogate.forecast_views(  # the acquisition mixes the two views' scores
            np.stack([r.x for r in runs]),  # (C, D)
            ctx_curve=ctx_curve, ctx_t=ctx_t, ctx_y=ctx_y,  # (N,)
            qry_curve=[index[r.trial_id] for r in cands],  # (M,)
            qry_t=[min(r.step + look.horizon, self.max_steps) / self.max_steps for r in cands],
        )  # fmt: skip
        values = acquisition_values(self.acquisition, fc, look.threshold)  # (M,)
        pick = pick_argmax(values, rng)
        self._decisions.append(Decision(
            waiting[pick].trial_id, cands[pick].step + 1, len(waiting),
            look.horizon, look.threshold, float(values[pick]),
        ))  # fmt: skip
        return waiting[pick]

    @staticmethod
    def _stop(tune_controller: Any, trial: Trial) -> None:
        if not getattr(trial, "relative_logdir", True):  # never started: Tune's ResultGrid
            trial.init_local_path()  # needs a trial folder, even an empty one
        tune_controller.stop_trial(trial)

    @staticmethod
    def _fitting(waiting: Sequence[Trial], running: Sequence[Trial]) -> list[Trial]:
        """The waiting trials whose resources are free besides the running trials'."""
        if not ray.is_initialized():
            return list(waiting)
        free = dict(ray.cluster_resources())
        for t in running:
            for key, amount in t.placement_group_factory.required_resources.items():
                free[key] = free.get(key, 0.0) - amount
        return [
            t for t in waiting
            if all(amount <= free.get(key, 0.0) + 1e-9
                   for key, amount in t.placement_group_factory.required_resources.items())
        ]  # fmt: skip

    # ---- bookkeeping ---------------------------------------------------------------------------

    @property
    def _worst(self) -> float:
        return math.inf if self._mode == "min" else -math.inf

    def _record(self, run: _Run, result: Mapping[str, Any]) -> bool:
        """Append the result's (step, value); False if Tune repeats an earlier one (at the end)."""
        step = int(result[_STEP_KEY])
        if step <= run.step or run.failed:
            return False
        raw = result[self._metric]
        try:
            value = float(raw)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"trial {run.trial_id} reported {self._metric}={raw!r}, not a number"
            ) from err
        run.steps.append(step)
        if math.isnan(value):
            run.values.append(self._worst)
            run.failed = True
        else:
            run.values.append(value)
        self._persist()
        return True

    def _encode(self, config: Mapping[str, Any]) -> np.ndarray:
        try:
            return self.space.encode({name: config[name] for name in self.space.names})
        except KeyError as err:
            raise ValueError(
                f"the trial config {dict(config)!r} lacks the space's parameter {err}"
            ) from None

    def _check_surrogate(self, surrogate: Surrogate) -> Surrogate:
        if self.space.dim > surrogate.config.max_hps:
            raise ValueError(
                f"the space has {self.space.dim} encoded dimensions, more than the surrogate's "
                f"max_hps={surrogate.config.max_hps}"
            )
        return surrogate

    def _settings(self) -> dict[str, Any]:
        return {
            "metric": self._metric,
            "mode": self._mode,
            "max_steps": self.max_steps,
            "space": self.space.to_dict(),
        }

    def _state_dict(self) -> dict[str, Any]:
        return {
            "format_version": STATE_FORMAT_VERSION,
            "settings": self._settings(),
            "n_decisions": self._n_decisions,
            "runs": [
                {
                    "trial_id": r.trial_id,
                    "x": r.x.tolist(),
                    "steps": r.steps,
                    "values": [v if math.isfinite(v) else str(v) for v in r.values],  # "inf"
                    "failed": r.failed,
                    "finished": r.finished,
                }
                for r in self._runs.values()
            ],
        }

    def _load_once(self) -> None:
        if not self._loaded:
            self._loaded = True
            if self.state_path is not None and self.state_path.is_file():
                self.restore(self.state_path)

    def _persist(self) -> None:
        if self.state_path is not None:
            self.save(self.state_path)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the scheduler (tuner.pkl): leave out a network that can be loaded again.
        state = self.__dict__.copy()
        if not isinstance(self._surrogate_source, Surrogate):
            state["_surrogate"] = None
        state["_loaded"] = False  # an unpickled scheduler reads state_path again
        return state
