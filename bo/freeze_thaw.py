"""Freeze-thaw Bayesian optimisation: keep many runs paused, resume the most promising one.

:class:`FreezeThaw` is an ask/tell optimiser. Each :meth:`~FreezeThaw.ask` hands out a
:class:`Trial`: "train run ``id`` (configuration ``config``) from step ``resume_from`` to step
``step``" (one step further; ``resume_from = 0`` starts a new run). The user trains, then calls
:meth:`~FreezeThaw.tell` with the metric at ``step``, or :meth:`~FreezeThaw.tell_failure` if the run
crashed or diverged. Between calls a run is *frozen*: the user keeps its checkpoint, and a later
trial may *thaw* it.

How a trial is chosen (ifBO's loop, ``../shared/design/reference.md`` §4): the first trial starts
a random configuration; after that, every paused run and a pool of new candidate configurations
(by default 8, see :class:`FreezeThawConfig`: Sobol points, uniform random points and
perturbations of the incumbent; with a fixed candidate table, its unstarted rows; only
configurations no run has tried, a repeat only once none is left and no paused run can go on)
are scored in **one prediction** of the PFN surrogate (no fitting: the task's forward pass, mixed
with the single-curve view of the runs, see ``FreezeThawConfig.single_weight``) by an acquisition
of :mod:`bo.acquisition` (MFEI-random by default; the reference's MFPI-random on request), and
the best is advanced by one step.

Units: values are told in the metric's own units (``minimize=True`` for losses). Before each
decision all values are mapped to scores in [0, 1] by a :class:`~pfn.scaling.MetricScaler` fitted
to each run's best value (:meth:`~pfn.scaling.MetricScaler.fit_runs`: robust to diverged values
such as a loss of 1e34, and to diverged runs with many points). Non-finite values:

* ``tell(trial, nan)`` is an error: use ``tell_failure`` (a NaN is more often a bug in the
  caller's code than a result);
* ``tell(trial, ±inf)`` is accepted as a diverged value: recorded, scored 0 (the worst), never the
  incumbent, and the run may still be resumed;
* ``tell_failure(trial)`` ends the run: it is scored 0 at that step and never resumed;
* ``tell_skipped(trial)``: the step was trained but not measured (a run evaluated every few
  steps): spent, with no value; the run goes on, its curve read with a gap.

Parallel workers: ``ask`` may be called again before earlier trials are told. A pending run is not
handed out twice; for the decision, each pending run's next value is *fantasised* as its predicted
median (one extra forward pass), so parallel asks spread out instead of piling onto one region.

Crash safety: with ``state_dir``, every ask, tell, skip, failure and release is appended durably
to a :class:`~bo.journal.Journal` before the call returns; ``FreezeThaw(..., state_dir=same)``
replays it and continues exactly. Trials that were pending when a worker died are in
:attr:`pending`: tell them if their result is known, or :meth:`release` them.

Shapes: ``R`` runs, ``Q`` candidate configurations, ``D`` encoded hyperparameters.
"""

from __future__ import annotations

import functools
import math
import operator
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bo.acquisition import (
    ACQUISITIONS,
    DEFAULT_ACQUISITION,
    acquisition_values,
    draw_lookahead,
    pick_argmax,
    score_context,
)
from bo.journal import Journal, SettingsMismatch
from bo.space import CandidateTable, Space, random_order
from pfn.scaling import MetricScaler
from pfn.surrogate import DEFAULT_SINGLE_WEIGHT, Surrogate

__all__ = [
    "SCORE_RANGES",
    "FreezeThaw",
    "FreezeThawConfig",
    "Incumbent",
    "NothingToAsk",
    "Record",
    "Trial",
]


SCORE_RANGES = ("data", "bounds")  # FreezeThawConfig.score_range: the default first
START_VALUES = ("best", "random")  # FreezeThawConfig.start_value: the default first
_NEW_DRAWS = 100  # random draws for an untried configuration before a repeat is accepted


class NothingToAsk(RuntimeError):
    """Every run is finished, failed or pending, and no new configuration is left."""


@dataclass(frozen=True, kw_only=True)
class FreezeThawConfig:
    """Settings of the candidate pool (new configurations scored at each decision).

    The default pool is **8** fresh configurations (or table rows) per decision, competing with
    every paused run; each configuration is tried once (``repeat_configs``). Measured with the
    shipped surrogate (mean normalised regret, ``curvepfn evaluate hpo``; checkpoints/README.md,
    "In the optimiser"): on ``taskset_dev.h5`` (7 tasks x 10 seeds, budgets 100/300/1000)
    0.153/0.072/0.031 against 0.168/0.081/0.042 for a pool of one; on ``lcdb_dev.h5`` (124
    tables x 3 seeds, budgets 100/200) 0.075/0.049 against 0.079/0.051 for a pool of one that
    repeated configurations once all were tried (a pool of 8 that did so: 0.101/0.076, as it
    started 78 runs in 200 steps, most of them another seed of a learner already tried). ifBO scores
    a pool of thousands, but the argmax of the acquisition over thousands of unseen
    configurations picks those whose prediction is most optimistic, and with our CPU-trained
    surrogate these were the corners of the hyperparameter space, rarely the good configurations
    (on TaskSet's GRU task 0% of its picks against a 4.6% base rate; all 1000 rows scored
    0.36/0.27/0.22 against 0.20/0.17/0.08 for a pool of one, an earlier surrogate with
    ``score_range="bounds"``, seed 0). Larger pools remain available:
    ``FreezeThawConfig(n_candidates=2000)``.
    """

    n_candidates: int = 8  # new configurations per decision (or table rows sampled)
    share_sobol: float = 0.5  # of n_candidates: a fresh scrambled Sobol sample
    share_local: float = 0.25  # perturbations of the incumbent (the rest: uniform random)
    local_scale: float = 0.1  # std of the perturbations in the encoded space
    # Score map of each decision (pfn.scaling.MetricScaler.fit_runs): "data" (default) fits both
    # ends to the observed values (the best one scores 0.9, a known bound is ignored), so the runs'
    # range spreads over more of the surrogate's [0, 1] even when the bound is far from any
    # reachable value, as a loss's 0 is; "bounds" makes a known bound of the metric an end of the
    # score range (a loss's 0 scores 1). Measured on taskset_dev.h5 (regret at 100/300/1000, seeds
    # 1-2): MFPI 0.22/0.17/0.10 with "bounds", 0.23/0.14/0.05 with "data"; the demo's results
    # were equal or better (seeds 0-2).
    score_range: str = "data"
    # Weight of the surrogate's single-curve view in the predictive of each decision (see
    # pfn.surrogate.Surrogate; 0: the context view alone). It mixes into the paused runs'
    # predictive only: a new configuration has no points to read alone. It is journalled, and
    # used instead of the surrogate's own `single_weight`. The default is the shipped surrogate's
    # default, chosen by log-likelihood on real curves; the optimiser's regret with it and with
    # 0 is in checkpoints/README.md, "In the optimiser".
    single_weight: float = DEFAULT_SINGLE_WEIGHT
    # Whether a new run may repeat the configuration of a run already started. False (default):
    # new runs take untried configurations (a table's free rows whose encoding differs from every
    # started run's; a pool sampled from a space less the samples equal to a started run's, as a
    # discrete space's can be); once none is left, a repeat starts only when no paused run can go
    # on. True: a repeat competes like any new configuration. On lcdb_dev.h5, whose rows are up to
    # 20 learners x 25 seeds, 75% of the runs started with repeats allowed were another seed of a
    # learner already tried; trying each configuration once lowered the regret (checkpoints/
    # README.md, "In the optimiser": untried first, 2026-12-07; untried only, with the pool of 8,
    # session 18). No effect where every configuration differs (TaskSet, a space with a Float).
    repeat_configs: bool = False
    # Random orders of the hyperparameters averaged per decision (0: the encoding's order alone).
    # The surrogate's prior is exchangeable over hyperparameter slots and over a categorical's
    # choices, but the trained network is not: it has preferences for slots. Each decision draws
    # this many random orders (of the parameters, and of each categorical's one-hot dimensions),
    # scores every query under each, and averages the acquisition values (for PI and EI, the
    # acquisition of the mixture of the predictives). One order costs no more than none and
    # turns a systematic slot preference into noise; K orders cost K forward passes. Measured
    # (checkpoints/README.md, "In the optimiser"): the network does prefer slots on LCDB, but one
    # order per decision did not make a pool of 8 that repeated configurations work there, so the
    # default stays 0.
    permutations: int = 0
    # Which acquisition value a new run competes with against the paused runs: "best" (default,
    # as ifBO) the pool's largest; "random" that of a pool member drawn at random, an unbiased
    # value of starting a new run, while the pool's best is the one started when new wins. With
    # a pool of one they agree. The largest of many noisy values is biased upwards (the more so
    # the larger the pool), and starts new runs more often; "random" keeps the model's choice of
    # *which* configuration and the pool of one's rate of new runs. Measured with a pool of 8 in
    # checkpoints/README.md, "In the optimiser".
    start_value: str = "best"

    def __post_init__(self) -> None:
        object.__setattr__(self, "single_weight", float(self.single_weight))  # JSON-safe
        if not 0.0 <= self.single_weight <= 1.0:
            raise ValueError(f"single_weight must lie in [0, 1], got {self.single_weight}")
        if self.n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {self.n_candidates}")
        if self.permutations < 0:
            raise ValueError(f"permutations must be >= 0, got {self.permutations}")
        if self.start_value not in START_VALUES:
            raise ValueError(f"start_value must be one of {START_VALUES}, got {self.start_value!r}")
        if self.score_range not in SCORE_RANGES:
            raise ValueError(f"score_range must be one of {SCORE_RANGES}, got {self.score_range!r}")
        if not (0 <= self.share_sobol and 0 <= self.share_local and
                self.share_sobol + self.share_local <= 1):  # fmt: skip
            raise ValueError("share_sobol and share_local must be >= 0 and sum to <= 1")


@dataclass(frozen=True)
class Trial:
    """One unit of work: train run ``id`` from step ``resume_from`` to ``step``."""

    id: int  # the run; a resumed run keeps its id
    config: Mapping[str, Any] = field(hash=False)  # the configuration (do not modify)
    step: int  # train up to this step and report the metric there
    resume_from: int  # the step the run was frozen at; 0: a new run
    candidate: int | None = None  # row of the candidate table, when one was given


@dataclass(frozen=True)
class Record:
    """One told result (immutable): what :attr:`FreezeThaw.history` lists."""

    trial: int  # the run id
    step: int
    value: float | None  # in the metric's units; None: a failure, or a step not measured
    failed: bool


@dataclass(frozen=True)
class Incumbent:
    """The best finite value observed so far, at any step."""

    trial: int
    config: Mapping[str, Any]
    value: float
    step: int


@dataclass
class _Run:
    id: int
    config: dict[str, Any]
    x: np.ndarray  # (D,) encoded
    candidate: int | None
    steps: list[int] = field(default_factory=list)  # the steps with a value (measured)
    values: list[float] = field(default_factory=list)
    step: int = 0  # the last step trained, measured or not (see FreezeThaw.tell_skipped)
    failed: bool = False
    pending: Trial | None = None


def _synchronized(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a public method of :class:`FreezeThaw` under its lock: worker threads may ask and tell
    concurrently, one call at a time."""

    @functools.wraps(method)
    def locked(self: FreezeThaw, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


def _integer(name: str, value: Any) -> int:
    """``value`` as a Python int (NumPy integers too); ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


class FreezeThaw:
    """The freeze-thaw optimiser (see the module docstring).

    Args:
        space: the search space; None when ``candidates`` is given without one.
        max_steps: the longest a run is trained (steps of the fidelity: epochs, ...).
        minimize: True for losses.
        lower_bound, upper_bound: known bounds of the metric (None: unbounded).
        budget: total steps the user plans to spend (sets the look-ahead horizon's range; None:
            up to ``max_steps``). Not enforced: the caller stops asking.
        surrogate: the PFN; None loads the shipped checkpoint.
        acquisition: one of :data:`bo.acquisition.ACQUISITIONS`.
        seed: seeds every random choice (decision ``k`` uses ``(seed, k)``).
        state_dir: folder of the crash-safe journal; None keeps everything in memory. The
            optimiser holds the folder until :meth:`close` (or the end of a ``with`` block, or of
            its process): a second optimiser on the same folder gets
            :class:`bo.journal.JournalInUse`.
        candidates: a fixed table of configurations to choose new runs from (tabular benchmarks,
            fixed grids) instead of sampling ``space``.
        config: the candidate pool's settings.

    Raises:
        ValueError: bad settings, a space wider than the surrogate's ``max_hps``, or a
            ``state_dir`` holding a journal of other settings.
        bo.journal.JournalInUse: another open optimiser holds ``state_dir``.

    The public methods may be called from several threads (parallel workers): each call runs
    alone, under the optimiser's lock.
    """

    def __init__(
        self,
        space: Space | None,
        *,
        max_steps: int,
        minimize: bool = False,
        lower_bound: float | None = None,
        upper_bound: float | None = None,
        budget: int | None = None,
        surrogate: Surrogate | None = None,
        acquisition: str = DEFAULT_ACQUISITION,
        seed: int = 0,
        state_dir: str | Path | None = None,
        candidates: CandidateTable | None = None,
        config: FreezeThawConfig = FreezeThawConfig(),
    ) -> None:
        if space is None and candidates is None:
            raise ValueError("give a space, a candidate table, or both")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        budget = None if budget is None else _integer("budget", budget)
        if budget is not None and budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        seed = _integer("seed", seed)
        if acquisition not in ACQUISITIONS:
            raise ValueError(
                f"unknown acquisition {acquisition!r}; choose from {', '.join(ACQUISITIONS)}"
            )
        if candidates is not None and space is not None and candidates.dim != space.dim:
            raise ValueError(
                f"the candidate table has {candidates.dim} encoded dims, the space {space.dim}"
            )
        self.space, self.candidates = space, candidates
        self.max_steps, self.minimize, self.budget = max_steps, minimize, budget
        self.lower_bound, self.upper_bound = lower_bound, upper_bound
        if lower_bound is not None and upper_bound is not None and not lower_bound < upper_bound:
            raise ValueError(
                f"lower_bound must be below upper_bound, got {lower_bound}, {upper_bound}"
            )
        self.acquisition, self.seed, self.config = acquisition, seed, config
        self.surrogate = surrogate if surrogate is not None else Surrogate.load()
        self.dim = candidates.dim if candidates is not None else space.dim  # type: ignore[union-attr]
        self._groups = candidates.groups if candidates is not None else space.groups  # type: ignore[union-attr]
        if self.dim > self.surrogate.config.max_hps:
            raise ValueError(
                f"the space has {self.dim} encoded dimensions, more than the surrogate's "
                f"max_hps={self.surrogate.config.max_hps}"
            )
        self._runs: list[_Run] = []
        self._history: list[Record] = []
        self._n_asks = 0
        self._started_rows: set[int] = set()
        self._started_keys: set[bytes] = set()  # _config_key of every run sampled from the space
        # a table's rows grouped by configuration once (repeats share a group): (C,) group ids,
        # and which groups a run has started
        self._row_group = np.zeros(0, dtype=np.int64)
        if candidates is not None:
            _, inverse = np.unique(_round_configs(candidates.encoded), axis=0, return_inverse=True)
            self._row_group = inverse.reshape(-1)
        self._group_started = np.zeros(self._row_group.max(initial=-1) + 1, dtype=bool)
        self._lock = threading.RLock()  # one public call at a time (worker threads)
        self._journal: Journal | None = None
        if state_dir is not None:
            try:
                self._journal = Journal(state_dir, self._settings())
            except SettingsMismatch as err:
                if "config.single_weight" not in err.differing:
                    raise
                raise ValueError(
                    f"{err}. A journal written before 2026-12-06, when decisions used the "
                    "context view alone, resumes with FreezeThawConfig(single_weight=0)"
                ) from err
            try:
                self._replay()
            except BaseException:
                self._journal.close()  # release the folder
                raise

    # ---- public API ----------------------------------------------------------------------------

    @property
    def history(self) -> tuple[Record, ...]:
        """Every told result, in order."""
        return tuple(self._history)

    @property
    def pending(self) -> tuple[Trial, ...]:
        """Trials handed out and not yet told, failed or released."""
        return tuple(r.pending for r in self._runs if r.pending is not None)

    @property
    def steps_spent(self) -> int:
        """Steps told so far (values, skipped measurements and failures)."""
        return len(self._history)

    @_synchronized
    def ask(self) -> Trial:
        """The next trial: which run to advance by one step, or which new one to start.

        Raises:
            NothingToAsk: nothing can be asked (every run finished or pending, and no new
                configuration left in the candidate table).
        """
        rng = np.random.default_rng([self.seed, self._n_asks])
        if any(r.steps for r in self._runs):
            run = self._decide(rng)
        elif (waiting := self._unmeasured_paused()) is not None:  # steps skipped, none measured
            run = waiting
        else:  # nothing observed yet: a random start
            run = self._new_run(*self._random_new(rng))
        new = run.id == len(self._runs)  # a new run joins the state once its ask is journalled
        trial = Trial(
            id=run.id,
            config=dict(run.config),
            step=run.step + 1,
            resume_from=run.step,
            candidate=run.candidate,
        )
        self._log("ask", run=run.id, step=trial.step, config=run.config, candidate=run.candidate)
        if new:
            self._add_run(run)
        run.pending = trial
        self._n_asks += 1
        return trial

    @_synchronized
    def tell(self, trial: Trial, value: float) -> None:
        """Report the metric of ``trial`` at ``trial.step`` (in the metric's units).

        Raises:
            ValueError: an unknown trial, one already told / failed / released, a non-numeric
                value, or NaN (use :meth:`tell_failure`).
        """
        run = self._pending_run(trial)
        try:
            value = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"value must be a number, got {value!r}") from err
        if math.isnan(value):
            raise ValueError(
                "value is NaN: call tell_failure(trial) for a crashed or diverged run"
            )
        self._log("tell", run=run.id, step=trial.step, value=value)
        self._apply_tell(run, trial.step, value)

    @_synchronized
    def tell_skipped(self, trial: Trial) -> None:
        """Report that ``trial``'s step was trained but its metric was not measured (say the run
        is evaluated every few steps): the step counts as spent, the run goes on from it, and
        nothing is added to what the surrogate reads (a run's curve may have gaps).

        Raises:
            ValueError: an unknown trial, or one already told / failed / released.
        """
        run = self._pending_run(trial)
        self._log("skip", run=run.id, step=trial.step)
        self._apply_skip(run, trial.step)

    @_synchronized
    def tell_failure(self, trial: Trial) -> None:
        """Report that ``trial``'s run crashed or diverged: it scores worst and is never resumed.

        Raises:
            ValueError: an unknown trial, or one already told / failed / released.
        """
        run = self._pending_run(trial)
        self._log("fail", run=run.id, step=trial.step)
        self._apply_failure(run, trial.step)

    @_synchronized
    def release(self, trial: Trial) -> None:
        """Give back a pending trial unanswered (its worker died): the run is paused again.

        Raises:
            ValueError: an unknown trial, or one that is not pending.
        """
        run = self._pending_run(trial)
        self._log("release", run=run.id, step=trial.step)
        self._apply_release(run)

    @_synchronized
    def configs(self) -> dict[int, dict[str, Any]]:
        """Every run's configuration, by run id."""
        return {r.id: dict(r.config) for r in self._runs}

    @_synchronized
    def best(self) -> Incumbent | None:
        """The best finite value told so far, at any step (None before the first)."""
        best: Incumbent | None = None
        for run in self._runs:
            for step, value in zip(run.steps, run.values, strict=True):
                if not math.isfinite(value):
                    continue
                if best is None or (value < best.value if self.minimize else value > best.value):
                    best = Incumbent(run.id, dict(run.config), value, step)
        return best

    @_synchronized
    def close(self) -> None:
        """Close the journal and release ``state_dir`` (nothing is lost: every call already
        committed). Idempotent; asking or telling afterwards raises."""
        if self._journal is not None:
            self._journal.close()

    def __enter__(self) -> FreezeThaw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- decisions -----------------------------------------------------------------------------

    def _scaler(self) -> MetricScaler:
        runs = [r.values for r in self._runs if any(math.isfinite(v) for v in r.values)]
        bounded = self.config.score_range == "bounds"
        return MetricScaler.fit_runs(
            runs or [[0.0]],
            higher_is_better=not self.minimize,
            lower_bound=self.lower_bound if bounded else None,
            upper_bound=self.upper_bound if bounded else None,
        )

    def _decide(self, rng: np.random.Generator) -> _Run:
        """Score every paused run and a pool of new configurations; return the argmax's run (a
        new one is not added to the state: see :meth:`_new_run`)."""
        scaler = self._scaler()
        runs = self._runs
        # Context: every observed point; a failure was recorded as the worst value (score 0).
        ctx_curve, ctx_t, ctx_y = score_context(
            [(r.steps, r.values) for r in runs], scaler, self.max_steps
        )
        f_best = max(ctx_y)
        configs = np.stack([r.x for r in runs]) if runs else np.zeros((0, self.dim))
        pending = [i for i, r in enumerate(runs) if r.pending is not None]
        if pending:  # fantasise each pending run's next value as its predicted median
            fc = self.surrogate.forecast(
                configs,
                ctx_curve=ctx_curve,
                ctx_t=ctx_t,
                ctx_y=ctx_y,
                qry_curve=pending,
                qry_t=[min(runs[i].step + 1, self.max_steps) / self.max_steps for i in pending],
                single_weight=self.config.single_weight,
            )
            ctx_curve += pending
            ctx_t += [(runs[i].step + 1) / self.max_steps for i in pending]
            ctx_y += fc.quantile(0.5).tolist()
        spent = self.steps_spent + len(pending)
        remaining = self.max_steps if self.budget is None else max(1, self.budget - spent)
        look = draw_lookahead(rng, remaining=remaining, max_steps=self.max_steps, f_best=f_best)
        paused = [i for i, r in enumerate(runs) if self._is_paused(r)]
        new_x, new_rows = self._candidate_pool(rng, hold_repeats=bool(paused))
        if not paused and new_x.shape[0] == 0:
            raise NothingToAsk(
                "nothing to ask: every run is finished, failed or pending and no new "
                "configuration is left"
            )
        all_configs = np.concatenate([configs, new_x]) if new_x.shape[0] else configs
        qry_curve = paused + list(range(len(runs), len(runs) + new_x.shape[0]))
        qry_t = [min(runs[i].step + look.horizon, self.max_steps) / self.max_steps for i in paused]
        qry_t += [min(look.horizon, self.max_steps) / self.max_steps] * new_x.shape[0]

        def acquire(configs: np.ndarray) -> np.ndarray:  # (Q,) the queries' acquisition values
            fc = self.surrogate.forecast_views(  # the acquisition mixes the views' scores
                configs, ctx_curve=ctx_curve, ctx_t=ctx_t, ctx_y=ctx_y,
                qry_curve=qry_curve, qry_t=qry_t, single_weight=self.config.single_weight,
            )  # fmt: skip
            return acquisition_values(self.acquisition, fc, look.threshold)

        k = self.config.permutations
        if k == 0:
            values = acquire(all_configs)
        else:  # the mean over k random orders of the parameters
            orders = [random_order(self._groups, rng) for _ in range(k)]
            values = np.mean([acquire(all_configs[:, order]) for order in orders], axis=0)
        p = len(paused)
        if self.config.start_value == "random" and values.size > p + 1:
            new = values[p:]
            best = pick_argmax(new, rng)
            pick = pick_argmax(np.append(values[:p], new[rng.integers(new.size)]), rng)
            pick = pick if pick < p else p + best
        else:
            pick = pick_argmax(values, rng)
        if pick < p:
            return runs[paused[pick]]
        j = pick - p
        return self._new_run(new_x[j], None if new_rows is None else int(new_rows[j]))

    def _unmeasured_paused(self) -> _Run | None:
        """Before any value is measured: the paused run trained furthest (the first such on a
        tie), or None. A run whose steps were all skipped goes on until it is measured, instead of
        the budget going to new runs that would be skipped alike."""
        paused = [r for r in self._runs if self._is_paused(r) and r.step > 0]
        return max(paused, key=lambda r: r.step, default=None)

    def _candidate_pool(
        self, rng: np.random.Generator, *, hold_repeats: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(Q, D) encoded new configurations, and their table rows (None without a table).
        ``hold_repeats``: a paused run can go on, so once every configuration has been tried
        (unless ``config.repeat_configs``) the pool is empty rather than repeats."""
        n = self.config.n_candidates
        if self.candidates is not None:
            free = self._free_rows(hold_repeats=hold_repeats)
            if free.size > n:
                free = np.sort(rng.choice(free, size=n, replace=False))
            return self.candidates.encoded[free], free
        assert self.space is not None
        n_sobol = int(round(n * self.config.share_sobol))
        best = self.best()
        n_local = int(round(n * self.config.share_local)) if best is not None else 0
        n_local = min(n_local, n - n_sobol)  # two shares rounded up can exceed n together
        n_random = n - n_sobol - n_local
        seed = int(rng.integers(2**31))
        parts = [np.zeros((0, self.dim))]
        if n_sobol:
            parts.append(self.space.sample_encoded(n_sobol, seed=seed, method="sobol"))
        if n_random:
            parts.append(self.space.sample_encoded(n_random, seed=seed + 1, method="random"))
        if n_local and best is not None:
            parts.append(
                self.space.perturb_encoded(best.config, n_local, scale=self.config.local_scale,
                                           seed=seed + 2)
            )  # fmt: skip
        pool = np.concatenate(parts)
        if not self.config.repeat_configs:
            untried = self._untried(pool)
            if untried.any():
                pool = pool[untried]
            elif (x := self._draw_untried(rng)) is not None:  # every sample repeats a run
                pool = x[None, :]
            elif hold_repeats:  # every configuration tried: no repeat while runs can go on
                pool = pool[:0]
        return pool, None

    def _free_rows(self, *, hold_repeats: bool) -> np.ndarray:
        """Rows of the candidate table a new run may take: unstarted and, unless
        ``config.repeat_configs``, of an untried configuration; once none is left, any unstarted
        row, unless ``hold_repeats`` (a paused run can go on): then none."""
        assert self.candidates is not None
        free = np.setdiff1d(np.arange(len(self.candidates)), list(self._started_rows))
        if not self.config.repeat_configs:
            untried = free[~self._group_started[self._row_group[free]]]
            if untried.size or hold_repeats:
                return untried
        return free

    def _is_paused(self, run: _Run) -> bool:
        """Whether ``run`` can go on: not pending, failed or finished."""
        return run.pending is None and not run.failed and run.step < self.max_steps

    def _untried(self, X: np.ndarray) -> np.ndarray:
        """(Q,) bool: which points ``X`` (Q, D) of the space differ from every started run's
        configuration (a table's rows use their groups instead, see :meth:`_free_rows`)."""
        rounded = _round_configs(X)  # one array op, then a set lookup per row
        seen = self._started_keys
        return np.fromiter((r.tobytes() not in seen for r in rounded), bool, count=X.shape[0])

    def _random_new(self, rng: np.random.Generator) -> tuple[np.ndarray, int | None]:
        if self.candidates is not None:
            free = self._free_rows(hold_repeats=False)  # nothing measured: nothing to prefer
            if free.size == 0:
                raise NothingToAsk("nothing to ask: every candidate has been started")
            row = int(rng.choice(free))
            return self.candidates.encoded[row], row
        assert self.space is not None
        if not self.config.repeat_configs and (x := self._draw_untried(rng)) is not None:
            return x, None
        return self._draw(rng), None

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        """(D,) the exact encoding of a uniformly random configuration of the space."""
        assert self.space is not None
        config = self.space.sample(1, seed=int(rng.integers(2**31)), method="random")[0]
        return self.space.encode(config)

    def _draw_untried(self, rng: np.random.Generator) -> np.ndarray | None:
        """(D,) a random configuration of the space that no run has started, or None when
        :data:`_NEW_DRAWS` draws found none (a small discrete space may be exhausted)."""
        for _ in range(_NEW_DRAWS):
            x = self._draw(rng)
            if self._untried(x[None, :])[0]:
                return x
        return None

    def _new_run(self, x: np.ndarray, row: int | None) -> _Run:
        """The next run, for encoded configuration ``x`` (table row ``row``), not yet added to
        the state: :meth:`ask` adds it once its ask is journalled, so a failed write leaves no
        trace."""
        if row is not None and self.candidates is not None:
            config = self.candidates.config(row)
        else:
            assert self.space is not None
            config = self.space.decode(x)
            x = self.space.encode(config)  # the exact encoding of what is run
        return _Run(id=len(self._runs), config=config, x=np.asarray(x, np.float64), candidate=row)

    def _add_run(self, run: _Run) -> None:
        self._runs.append(run)
        if run.candidate is not None:
            self._started_rows.add(run.candidate)
            self._group_started[self._row_group[run.candidate]] = True
        else:
            self._started_keys.add(_config_key(run.x))

    # ---- bookkeeping ---------------------------------------------------------------------------

    def _pending_run(self, trial: Trial) -> _Run:
        if not isinstance(trial, Trial):
            raise ValueError(f"expected a Trial from ask(), got {type(trial).__name__}")
        if not 0 <= trial.id < len(self._runs):
            raise ValueError(f"unknown trial id {trial.id}")
        run = self._runs[trial.id]
        if run.pending is None or run.pending.step != trial.step:
            state = "failed" if run.failed else f"at step {run.step}"
            raise ValueError(
                f"trial {trial.id} (step {trial.step}) is not pending (the run is {state}): "
                "it was already told, failed or released"
            )
        return run

    def _apply_tell(self, run: _Run, step: int, value: float) -> None:
        self._end_step(run, step, value, failed=False)

    def _apply_skip(self, run: _Run, step: int) -> None:
        self._end_step(run, step, None, failed=False)

    def _apply_failure(self, run: _Run, step: int) -> None:
        run.failed = True  # its context point: the worst value, never the incumbent
        self._end_step(run, step, math.inf if self.minimize else -math.inf, failed=True)

    def _end_step(self, run: _Run, step: int, value: float | None, *, failed: bool) -> None:
        """``run``'s pending ``step`` is over: ``value`` joins its curve (None: not measured)."""
        if value is not None:
            run.steps.append(step)
            run.values.append(value)
        run.step = step
        run.pending = None
        self._history.append(Record(run.id, step, None if failed else value, failed))

    @staticmethod
    def _apply_release(run: _Run) -> None:
        run.pending = None

    def _log(self, kind: str, **fields: Any) -> None:
        if self._journal is not None:
            self._journal.append(kind, **fields)

    def _settings(self) -> dict[str, Any]:
        return {
            "space": None if self.space is None else self.space.to_dict(),
            "candidates": None if self.candidates is None else
            np.round(self.candidates.encoded, 12).tolist(),  # fmt: skip
            "max_steps": self.max_steps,
            "minimize": self.minimize,
            "lower_bound": self.lower_bound,
            "upper_bound": self.upper_bound,
            "budget": self.budget,
            "acquisition": self.acquisition,
            "seed": self.seed,
            "config": {
                "n_candidates": self.config.n_candidates,
                "share_sobol": self.config.share_sobol,
                "share_local": self.config.share_local,
                "local_scale": self.config.local_scale,
                "score_range": self.config.score_range,
                # only when nonzero, so that journals written before it existed (with the
                # context view alone, then the default) resume with single_weight=0
                **({"single_weight": w} if (w := self.config.single_weight) else {}),
                # only when set, so that journals written before it existed resume (later
                # decisions then avoid repeats, as the installed default does)
                **({"repeat_configs": True} if self.config.repeat_configs else {}),
                **({"permutations": k} if (k := self.config.permutations) else {}),
                **({"start_value": v} if (v := self.config.start_value) != "best" else {}),
            },
        }

    def _replay(self) -> None:
        assert self._journal is not None
        for ev in self._journal.events():
            if ev.kind == "ask":
                if ev.run == len(self._runs):  # a new run
                    config = ev.config or {}
                    if ev.candidate is not None and self.candidates is not None:
                        x = self.candidates.encoded[ev.candidate]
                    else:
                        assert self.space is not None
                        x = self.space.encode(config)
                    self._add_run(
                        _Run(id=ev.run, config=config, x=np.asarray(x, np.float64),
                             candidate=ev.candidate)
                    )  # fmt: skip
                run = self._runs[ev.run]
                run.pending = Trial(ev.run, dict(run.config), ev.step, ev.step - 1, run.candidate)
                self._n_asks += 1
            elif ev.kind == "tell":
                assert ev.value is not None
                self._apply_tell(self._runs[ev.run], ev.step, ev.value)
            elif ev.kind == "skip":
                self._apply_skip(self._runs[ev.run], ev.step)
            elif ev.kind == "fail":
                self._apply_failure(self._runs[ev.run], ev.step)
            else:
                self._apply_release(self._runs[ev.run])


def _round_configs(X: np.ndarray) -> np.ndarray:
    """Encoded configurations (..., D) rounded so that equal configurations are equal bit for bit
    (encodings of Int and Categorical values are exact; 1e-9 absorbs a float's round trip)."""
    return np.round(np.asarray(X, dtype=np.float64), 9) + 0.0  # + 0.0 turns -0.0 into 0.0


def _config_key(x: np.ndarray) -> bytes:
    """A hashable key of one encoded configuration (D,); see :func:`_round_configs`."""
    return _round_configs(x).tobytes()
