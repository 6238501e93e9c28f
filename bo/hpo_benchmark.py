"""Simulated hyperparameter optimisation on recorded curves (``curvepfn evaluate hpo``).

A curve table (:mod:`pfn.curve_table`) answers ``f(row, step)`` for every configuration (row) at
every recorded step, so an optimizer can be run on it without training anything: the protocol of
the references (``../shared/design/reference.md`` §5). Budget is counted in steps.

* :class:`TableObjective` is the only way an optimizer learns values. Every value read costs one
  step: :meth:`~TableObjective.start` begins a fresh run of a row (pays step 1, and re-pays from
  step 1 if the row had been trained before), :meth:`~TableObjective.advance` trains a started row
  one step further (a paused run resumes where it stopped, as in freeze-thaw). It records the
  incumbent after every step spent and refuses to spend more than the budget, so optimizers cannot
  cheat: they never see the table's curves.
* :class:`TabularOptimizer` is the interface (one method, ``run``); :data:`OPTIMIZERS` the
  registry of the baselines: ``random`` (random search, each row trained to its end), ``hyperband``
  and ``asha`` (Optuna's pruners, see :class:`OptunaPrunerOptimizer`). Add an entry to the
  registry, or pass an instance to :func:`evaluate_hpo`, to evaluate another optimizer.
* :func:`evaluate_hpo` runs every table x seed x optimizer once and reports the normalised regret
  (:class:`RegretScale`) and the average rank (:func:`rank_optimizers`) per step;
  :mod:`bo.hpo_report` writes its files, loads them back and merges results.

Missing values. NaN in a table means "not recorded": the run crashed, diverged or stopped, or (on
LCDB) an evaluation was skipped. Reading a NaN still costs its step and never becomes the
incumbent (nor does ±inf). If a row has no recorded value after that step, its run is over (it
crashed or stopped; training it further is impossible, and the step that crashed was paid);
otherwise the run goes on and later steps can be read.

Shapes: ``C`` rows (configurations), ``T`` steps per row, ``B`` budget in steps, ``O``
optimizers, ``R`` runs per optimizer (tables x seeds).
"""

from __future__ import annotations

import math
import os
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from bo.acquisition import DEFAULT_ACQUISITION
from bo.freeze_thaw import FreezeThawConfig
from pfn.checkpoint import file_sha256
from pfn.curve_table import CurveTable, read_curve_tables
from pfn.evaluate import standard_error
from pfn.scaling import MetricScaler

__all__ = [
    "OPTIMIZERS",
    "REPORT_BUDGETS",
    "BudgetExhausted",
    "HPOEvalResult",
    "HPOSummary",
    "FreezeThawOptimizer",
    "OptunaPrunerOptimizer",
    "RandomSearch",
    "RegretScale",
    "RunRecord",
    "TableObjective",
    "TabularOptimizer",
    "Trajectory",
    "assemble_result",
    "evaluate_hpo",
    "rank_optimizers",
    "simulate",
]

REPORT_BUDGETS = (100, 300, 1000)  # steps at which the summary is reported (capped at the budget)
_HPO_EXTRA_HINT = "pip install curvepfn[hpo]"
_PARENT_POLL_S = 1.0  # how often a worker process checks that its parent lives


class BudgetExhausted(RuntimeError):
    """An optimizer tried to spend a step beyond its budget."""


@dataclass(frozen=True, eq=False)
class Trajectory:
    """What one optimizer did with its budget on one table (built by :class:`TableObjective`)."""

    incumbent: np.ndarray  # (B,) best raw value after each step spent; NaN before any finite one
    rows: np.ndarray  # (B,) row trained at each step; -1 for steps the optimizer left unspent
    steps: np.ndarray  # (B,) 1-based step of that row read then; 0 for unspent steps
    spent: int  # steps spent (< B only if the optimizer stopped early)
    n_starts: int  # runs started (restarts included)
    n_restarts: int  # fresh starts of a row trained before (its steps were paid again)
    n_resumes: int  # continuations of a paused run (another row was trained in between)

    @property
    def budget(self) -> int:
        """B."""
        return int(self.incumbent.shape[0])

    @property
    def n_configs(self) -> int:
        """Distinct rows trained at least one step."""
        return int(np.unique(self.rows[self.rows >= 0]).size)


class TableObjective:
    """Budget accounting on one table: the only access an optimizer has to its values.

    Public: the table's name, sizes, encoded ``configs`` (C, D) and their ``hp_groups``,
    ``steps`` (T,), ``times()``, ``higher_is_better`` and bounds, never its curves. Values come
    from :meth:`start` and :meth:`advance`, one step of budget each; :meth:`observed` repeats
    what a row's current run has paid for.
    """

    def __init__(self, table: CurveTable, *, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        self._table = table
        self._curves = table.curves  # (C, T) private: read only through _pay
        self.name = table.name
        self.metric = table.metric
        self.higher_is_better = table.higher_is_better
        self.lower_bound = table.lower_bound
        self.upper_bound = table.upper_bound
        self.configs = table.configs.copy()  # (C, D) in [0, 1]
        self.hp_groups = table.hp_groups  # the encoded dims of each hyperparameter
        self.steps = table.steps.copy()  # (T,)
        self.budget = int(budget)
        recorded = ~np.isnan(self._curves)  # (C, T)
        last = self.n_steps - np.argmax(recorded[:, ::-1], axis=1)
        self._last_recorded = np.where(recorded.any(axis=1), last, 0)  # (C,) 1-based, 0 = none
        self._progress = np.zeros(self.n_rows, dtype=np.int64)  # (C,) steps of the current run
        self._over = np.zeros(self.n_rows, dtype=bool)  # (C,) current run crashed / stopped
        self._ever_started = np.zeros(self.n_rows, dtype=bool)
        self._inc = math.nan
        self._incumbent = np.full(self.budget, np.nan)  # (B,)
        self._rows = np.full(self.budget, -1, dtype=np.int64)  # (B,)
        self._steps = np.zeros(self.budget, dtype=np.int64)  # (B,)
        self._spent = 0
        self._n_starts = self._n_restarts = self._n_resumes = 0

    @property
    def n_rows(self) -> int:
        """C."""
        return int(self._curves.shape[0])

    @property
    def n_steps(self) -> int:
        """T, the length of a full run."""
        return int(self._curves.shape[1])

    def times(self, mode: str = "step") -> np.ndarray:
        """(T,) normalised times of the steps, as :meth:`pfn.curve_table.CurveTable.times`."""
        return self._table.times(mode)

    @property
    def spent(self) -> int:
        """Steps spent so far."""
        return self._spent

    @property
    def remaining(self) -> int:
        """Steps left."""
        return self.budget - self._spent

    @property
    def exhausted(self) -> bool:
        """True once the whole budget is spent."""
        return self._spent >= self.budget

    @property
    def incumbent(self) -> float:
        """The best finite value read so far (NaN before any)."""
        return self._inc

    def progress(self, row: int) -> int:
        """Steps paid for in ``row``'s current run (0 if never started)."""
        return int(self._progress[row])

    def finished(self, row: int) -> bool:
        """True if ``row``'s current run cannot go on: it reached step T, or crashed / stopped."""
        return bool(self._progress[row] >= self.n_steps or self._over[row])

    def observed(self, row: int) -> np.ndarray:
        """(progress(row),) the values ``row``'s current run has paid for (NaN = not recorded)."""
        return self._curves[row, : self._progress[row]].copy()

    def start(self, row: int) -> float:
        """Start a fresh run of ``row`` and train it one step; returns the value at step 1.

        A row trained before loses its progress: its steps are paid again (an optimizer that
        cannot resume, like Optuna's, restarts). Raises :class:`BudgetExhausted` when no budget
        is left.
        """
        row = self._check_row(row)
        self._check_budget()
        if self._ever_started[row]:
            self._n_restarts += 1
        self._ever_started[row] = True
        self._n_starts += 1
        self._progress[row] = 0
        self._over[row] = False
        return self._pay(row)

    def advance(self, row: int) -> float:
        """Train ``row``'s current run one more step (resuming it if it was paused).

        Returns:
            The value at step ``progress(row)`` (after the call); NaN if not recorded.

        Raises:
            ValueError: ``row`` was never started, or its run is finished.
            BudgetExhausted: no budget left.
        """
        row = self._check_row(row)
        if self._progress[row] == 0:
            raise ValueError(f"row {row} was not started; call start({row}) first")
        if self.finished(row):
            raise ValueError(f"row {row}'s run is finished; start({row}) runs it again")
        self._check_budget()
        if self._spent > 0 and self._rows[self._spent - 1] != row:
            self._n_resumes += 1
        return self._pay(row)

    def trajectory(self) -> Trajectory:
        """The record so far; steps not spent keep the last incumbent (row -1)."""
        inc = self._incumbent.copy()
        if self._spent < self.budget:
            inc[self._spent :] = self._inc
        return Trajectory(
            incumbent=inc,
            rows=self._rows.copy(),
            steps=self._steps.copy(),
            spent=self._spent,
            n_starts=self._n_starts,
            n_restarts=self._n_restarts,
            n_resumes=self._n_resumes,
        )

    def _check_row(self, row: int) -> int:
        row = int(row)
        if not 0 <= row < self.n_rows:
            raise ValueError(f"row must lie in [0, {self.n_rows}), got {row}")
        return row

    def _check_budget(self) -> None:
        if self.exhausted:
            raise BudgetExhausted(f"the budget of {self.budget} steps is spent")

    def _pay(self, row: int) -> float:
        step = int(self._progress[row]) + 1  # 1-based
        value = float(self._curves[row, step - 1])
        self._progress[row] = step
        if math.isnan(value) and step > self._last_recorded[row]:
            self._over[row] = True  # nothing recorded from here on: the run crashed or stopped
        if math.isfinite(value) and (
            math.isnan(self._inc)
            or (value > self._inc if self.higher_is_better else value < self._inc)
        ):
            self._inc = value
        self._incumbent[self._spent] = self._inc
        self._rows[self._spent] = row
        self._steps[self._spent] = step
        self._spent += 1
        return value


class TabularOptimizer(ABC):
    """An optimizer that can be simulated on a curve table."""

    name: str

    def settings(self) -> dict[str, Any]:
        """What a result must record to say how this optimizer was set (JSON-serialisable)."""
        return {}

    @abstractmethod
    def run(self, objective: TableObjective, *, seed: int) -> None:
        """Spend ``objective``'s budget (all of it, unless nothing is left to learn).

        Must be deterministic given ``seed``. Exceeding the budget raises
        :class:`BudgetExhausted`, which :func:`simulate` treats as the end of the run.
        """


def simulate(
    optimizer: TabularOptimizer, table: CurveTable, *, budget: int, seed: int
) -> Trajectory:
    """Run ``optimizer`` once on ``table`` with ``budget`` steps; returns its trajectory."""
    objective = TableObjective(table, budget=budget)
    try:
        optimizer.run(objective, seed=seed)
    except BudgetExhausted:
        pass
    return objective.trajectory()


def _row_stream(n_rows: int, seed: int) -> Iterator[int]:
    """Rows in random order without replacement; a fresh permutation once all were drawn.

    Shared by the baselines so that on the same table and seed they draw the same configurations
    in the same order (common random numbers: their differences come from how they allocate
    steps, not from luck in sampling).
    """
    rng = np.random.default_rng(seed)
    while True:
        yield from (int(r) for r in rng.permutation(n_rows))


class RandomSearch(TabularOptimizer):
    """Random search: rows in random order without replacement, each trained to its end.

    No early stopping, except that a run that crashed (nothing recorded after the step read)
    cannot be trained further. Stops when every row is finished.
    """

    name = "random"

    def run(self, objective: TableObjective, *, seed: int) -> None:
        rows = _row_stream(objective.n_rows, seed)
        for _ in range(objective.n_rows):
            row = next(rows)
            if objective.exhausted:
                return
            objective.start(row)
            while not objective.finished(row) and not objective.exhausted:
                objective.advance(row)


def _import_optuna():
    try:
        import optuna
    except ImportError as err:
        raise ImportError(
            f"the hyperband and asha optimizers need optuna: {_HPO_EXTRA_HINT}"
        ) from err
    return optuna


class OptunaPrunerOptimizer(TabularOptimizer):
    """Random configurations with one of Optuna's pruners: ``"hyperband"`` or ``"asha"``.

    Pruners: ``HyperbandPruner(min_resource=1, max_resource=T, reduction_factor=3)`` or
    ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)`` (asynchronous successive
    halving; a run that survives every rung goes on to step T). Trials run one after another
    through Optuna's ask-and-tell interface: each trial starts a fresh run of one row, reports
    every recorded value with ``trial.report(value, step)`` (1-based steps) and stops when
    ``trial.should_prune()``; Optuna never resumes a pruned trial.

    Rows: enqueued from the same random order as :class:`RandomSearch` (uniform, without
    replacement, seeded; a new permutation once all rows were tried, after which rows repeat and
    re-pay from step 1). The study's ``RandomSampler`` is only a fallback. The study is named
    after the table and seed, since Hyperband assigns trials to brackets by a hash of the name.

    NaN: a value that was not recorded is not reported (nothing was measured; the pruner judges
    the rung at the next recorded step, which matters on LCDB where early evaluations are often
    missing). A run that crashed or stopped (nothing recorded after the step read) is told
    ``FAIL``, as an objective that raised would be. A run reaching step T is told ``COMPLETE``
    with its value there.
    """

    def __init__(self, pruner: str) -> None:
        if pruner not in ("hyperband", "asha"):
            raise ValueError(f"pruner must be 'hyperband' or 'asha', got {pruner!r}")
        _import_optuna()  # fail at construction, not in the middle of an evaluation
        self.name = pruner

    def run(self, objective: TableObjective, *, seed: int) -> None:
        optuna = _import_optuna()
        if self.name == "hyperband":
            pruner = optuna.pruners.HyperbandPruner(
                min_resource=1, max_resource=objective.n_steps, reduction_factor=3
            )
        else:
            pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(
                study_name=f"{objective.name}:{seed}",
                direction="maximize" if objective.higher_is_better else "minimize",
                sampler=optuna.samplers.RandomSampler(seed=seed),
                pruner=pruner,
            )
            rows = _row_stream(objective.n_rows, seed)
            while not objective.exhausted:
                study.enqueue_trial({"row": next(rows)})
                trial = study.ask()
                row = trial.suggest_int("row", 0, objective.n_rows - 1)
                state, value = _train_trial(trial, objective, row)
                study.tell(trial, value, state=state)
        finally:
            optuna.logging.set_verbosity(verbosity)


def _train_trial(trial, objective: TableObjective, row: int) -> tuple:
    """Train ``row`` as one Optuna trial; returns the (state, value) to tell the study."""
    from optuna.trial import TrialState

    value, step = objective.start(row), 1
    while True:
        if math.isfinite(value):
            trial.report(value, step)
            if trial.should_prune():
                return TrialState.PRUNED, None
        if objective.finished(row):
            break
        if objective.exhausted:
            return TrialState.PRUNED, None  # stopped by the budget, not by the pruner
        value, step = objective.advance(row), step + 1
    if step == objective.n_steps and math.isfinite(value):
        return TrialState.COMPLETE, value
    return TrialState.FAIL, None


class FreezeThawOptimizer(TabularOptimizer):
    """The product: :class:`bo.freeze_thaw.FreezeThaw` choosing among the table's rows.

    Every row is a candidate configuration; each decision scores every paused run and the pool
    of unstarted rows that ``config`` asks for (by default 8 random rows of untried
    configurations, as a user's :class:`~bo.freeze_thaw.FreezeThaw` gets;
    ``FreezeThawConfig(n_candidates=1000)`` scores all of TaskSet's rows, as ifBO does). A NaN
    read where the run is over (crashed / diverged) is told as a failure; a NaN in a gap of a
    run that goes on (an evaluation skipped, or not yet recorded at the start) is told as a step
    trained but not measured (:meth:`~bo.freeze_thaw.FreezeThaw.tell_skipped`), as the Optuna
    baselines skip it.
    """

    name = "freeze-thaw"

    def __init__(
        self,
        *,
        acquisition: str = DEFAULT_ACQUISITION,
        checkpoint: str | None = None,
        config: FreezeThawConfig | None = None,
    ) -> None:
        self.acquisition, self.checkpoint = acquisition, checkpoint
        self.config = config  # None: the optimiser's defaults, as a user gets them
        self._surrogate = None

    def settings(self) -> dict[str, Any]:
        """The checkpoint (None: the shipped one), the acquisition and every pool setting."""
        config = self.config if self.config is not None else FreezeThawConfig()
        return {"checkpoint": self.checkpoint, "acquisition": self.acquisition, **asdict(config)}

    def run(self, objective: TableObjective, *, seed: int) -> None:
        from bo.freeze_thaw import FreezeThaw, NothingToAsk
        from bo.space import CandidateTable
        from pfn.surrogate import Surrogate

        if self._surrogate is None:
            self._surrogate = Surrogate.load(self.checkpoint)
        table = CandidateTable.from_encoded(objective.configs, groups=objective.hp_groups)
        ft = FreezeThaw(
            None,
            candidates=table,
            max_steps=objective.n_steps,
            minimize=not objective.higher_is_better,
            lower_bound=objective.lower_bound,
            upper_bound=objective.upper_bound,
            budget=objective.budget,
            surrogate=self._surrogate,
            acquisition=self.acquisition,
            seed=seed,
            config=self.config or FreezeThawConfig(),
        )
        while not objective.exhausted:
            try:
                trial = ft.ask()
            except NothingToAsk:  # every row trained to its end
                return
            row = int(trial.candidate)
            value = objective.start(row) if trial.resume_from == 0 else objective.advance(row)
            if not math.isnan(value):
                ft.tell(trial, value)
            elif objective.finished(row):
                ft.tell_failure(trial)
            else:
                ft.tell_skipped(trial)


OPTIMIZERS: dict[str, Callable[[], TabularOptimizer]] = {
    "freeze-thaw": FreezeThawOptimizer,
    "random": RandomSearch,
    "hyperband": lambda: OptunaPrunerOptimizer("hyperband"),
    "asha": lambda: OptunaPrunerOptimizer("asha"),
}
"""Optimizers by name; add an entry (a factory) to evaluate another one."""


@dataclass(frozen=True)
class RegretScale:
    """Normalised regret on one table, in the score space of a :class:`MetricScaler`.

    Scores come from ``MetricScaler.fit`` on all finite values of the table: a diverged loss of
    1e34 gets a score near 0 instead of stretching a raw min/max normalisation so far that every
    other run would have regret ~0; for a metric with both bounds (accuracy) scores are the raw
    values, linearly. ``regret = (best - s) / (best - worst)`` clipped to [0, 1], where ``best`` is
    the best score in the table (any row, any step: the incumbent is a best-so-far over all steps,
    so it can reach it) and ``worst`` the worst score among the rows' recorded *final* values
    (NaN finals skipped; a finite diverged final counts, near score 0): regret 1 means "no better
    than the worst configuration trained to completion", the outcome of an unlucky pick that any
    optimizer can at least match. The worst value at *any* step would instead be set by the first,
    barely trained steps (for accuracies: chance level at the smallest training size), a reference
    no optimizer ever ends at. Without any recorded final value the worst recorded score at any
    step is used. Before the first observation the regret is 1 (nothing found yet).
    """

    scaler: MetricScaler
    best: float  # score of the best value in the table
    worst: float  # score of the worst recorded final value

    @classmethod
    def fit(cls, table: CurveTable) -> RegretScale:
        """The scale of ``table``.

        Raises:
            ValueError: the table has no finite value.
        """
        finite = np.isfinite(table.curves)
        if not finite.any():
            raise ValueError(f"table {table.name!r} has no finite value")
        scaler = MetricScaler.fit(
            table.curves[finite],
            higher_is_better=table.higher_is_better,
            lower_bound=table.lower_bound,
            upper_bound=table.upper_bound,
        )
        scores = scaler.to_score(table.curves)  # (C, T)
        final = finite[:, -1]
        worst = scores[final, -1].min() if final.any() else scores[finite].min()
        return cls(scaler=scaler, best=float(scores[finite].max()), worst=float(worst))

    def score(self, values: np.ndarray) -> np.ndarray:
        """Raw values -> scores; NaN stays NaN (unobserved), ±inf scores as diverged (0)."""
        values = np.asarray(values, dtype=np.float64)
        return np.where(np.isnan(values), np.nan, self.scaler.to_score(values))

    def regret(self, incumbent: np.ndarray) -> np.ndarray:
        """Raw incumbent values (any shape; NaN = nothing observed yet) -> regret in [0, 1].

        A table whose best and worst scores coincide gives regret 0 once anything is observed.
        """
        s = self.score(incumbent)
        span = self.best - self.worst
        r = (self.best - s) / span if span > 0 else np.zeros_like(s)
        return np.where(np.isnan(s), 1.0, np.clip(r, 0.0, 1.0))


def rank_optimizers(scores: np.ndarray) -> np.ndarray:
    """Rank optimizers per step: 1 = best (highest score), ties averaged.

    Args:
        scores: (O, B) incumbent scores of O optimizers on the same table and seed; NaN (nothing
            observed yet) ranks below every observed score.

    Returns:
        (O, B) ranks in [1, O].
    """
    scores = np.asarray(scores, dtype=np.float64)
    keyed = np.where(np.isnan(scores), np.inf, -scores)  # rankdata ranks ascending
    return rankdata(keyed, method="average", axis=0)


@dataclass(frozen=True)
class RunRecord:
    """One optimizer on one table and seed."""

    optimizer: str
    table: str
    seed: int
    spent: int
    n_starts: int
    n_restarts: int
    n_resumes: int
    n_configs: int
    final_incumbent: float  # raw metric value
    final_regret: float
    wall_time_s: float


@dataclass(frozen=True)
class HPOSummary:
    """Mean normalised regret and rank of one optimizer after ``budget`` steps."""

    optimizer: str
    budget: int
    regret: float  # mean over tables x seeds
    regret_se: float  # its standard error
    rank: float  # mean rank (1 = best)
    n_runs: int


@dataclass(frozen=True, eq=False)
class HPOEvalResult:
    """Everything :func:`evaluate_hpo` measured; runs are ordered table-major, then seed."""

    data: str
    tables: tuple[str, ...]
    optimizers: tuple[str, ...]  # (O,)
    seeds: int
    budget: int  # B
    report_budgets: tuple[int, ...]
    regret: np.ndarray  # (O, R, B) normalised regret after each step
    rank: np.ndarray  # (O, R, B) rank among the optimizers on the same table and seed
    scores: np.ndarray  # (O, R, B) incumbent score after each step (NaN: none yet)
    runs: list[RunRecord]
    summary: list[HPOSummary]
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # optimizer -> settings
    data_sha256: str | None = None  # of the curve file (None: results written before 2026-12-07)

    def mean_regret(self) -> np.ndarray:
        """(O, B) mean normalised regret over runs."""
        return self.regret.mean(axis=1)

    def regret_se(self) -> np.ndarray:
        """(O, B) its standard error (0 with one run)."""
        n = self.regret.shape[1]
        if n < 2:
            return np.zeros(self.regret.shape[::2])
        return self.regret.std(axis=1, ddof=1) / np.sqrt(n)

    def mean_rank(self) -> np.ndarray:
        """(O, B) average rank over runs."""
        return self.rank.mean(axis=1)

    def summary_for(self, optimizer: str, budget: int) -> HPOSummary:
        """The summary row of ``optimizer`` at a reporting budget."""
        for s in self.summary:
            if s.optimizer == optimizer and s.budget == budget:
                return s
        raise KeyError((optimizer, budget))


def _resolve(optimizers: Sequence[str | TabularOptimizer]) -> list[TabularOptimizer]:
    unknown = [o for o in optimizers if isinstance(o, str) and o not in OPTIMIZERS]
    if unknown:
        raise ValueError(
            f"unknown optimizer(s) {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(OPTIMIZERS)}"
        )
    out = [OPTIMIZERS[o]() if isinstance(o, str) else o for o in optimizers]
    names = [o.name for o in out]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"optimizers must be given, each once; got {names}")
    return out


def _run_seed(table: str, seed: int) -> int:
    """A seed per table and seed: TaskSet's tables share their configurations row by row, so
    the same row order on every table would correlate the tables' results."""
    return zlib.crc32(f"{table}:{seed}".encode())


def _run_job(
    opts: Sequence[TabularOptimizer], table: CurveTable, scale: RegretScale, seed: int, budget: int
) -> tuple[np.ndarray, np.ndarray, list[RunRecord]]:
    """Every optimizer once on one table and seed: (scores (O, B), regret (O, B), records)."""
    scores = np.empty((len(opts), budget))  # (O, B)
    regret = np.empty((len(opts), budget))  # (O, B)
    records = []
    for o, opt in enumerate(opts):
        start = time.perf_counter()
        traj = simulate(opt, table, budget=budget, seed=_run_seed(table.name, seed))
        elapsed = time.perf_counter() - start
        scores[o] = scale.score(traj.incumbent)
        regret[o] = scale.regret(traj.incumbent)
        records.append(
            RunRecord(
                optimizer=opt.name,
                table=table.name,
                seed=seed,
                spent=traj.spent,
                n_starts=traj.n_starts,
                n_restarts=traj.n_restarts,
                n_resumes=traj.n_resumes,
                n_configs=traj.n_configs,
                final_incumbent=float(traj.incumbent[-1]),
                final_regret=float(regret[o, -1]),
                wall_time_s=elapsed,
            )
        )
    return scores, regret, records


def _init_worker(parent: int) -> None:
    """A worker process uses one thread: ``workers`` processes share the machine's cores. It
    exits when its parent ``parent`` (pid) is gone: a parent killed without cleanup (SIGTERM,
    SIGKILL) would otherwise leave it computing its job and then waiting forever."""
    import threading

    import torch

    torch.set_num_threads(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def evaluate_hpo(
    path: str | Path,
    *,
    optimizers: Sequence[str | TabularOptimizer],
    seeds: int,
    budget: int,
    tables: Sequence[str] | None = None,
    report_budgets: Sequence[int] = REPORT_BUDGETS,
    progress: bool = True,
    workers: int = 1,
) -> HPOEvalResult:
    """Simulate every optimizer on every table of a curve file, ``seeds`` times each.

    Args:
        path: an HDF5 curve file in the shared layout.
        optimizers: names in :data:`OPTIMIZERS`, or optimizer instances (picklable ones when
            ``workers > 1``).
        seeds: runs per table and optimizer (seeds 0 .. seeds-1).
        budget: steps per run.
        tables: table names to use; None for all.
        report_budgets: steps at which to summarise; those below ``budget`` are kept and
            ``budget`` itself is always added.
        progress: show a progress bar (one tick per table and seed).
        workers: processes that run (table, seed) jobs side by side, one thread each; the
            results are identical to ``workers=1``, since every job is seeded on its own and
            runs on one torch thread there too (restored after).

    Returns:
        Regret and rank per step and run, per-run records and the summary.

    Raises:
        ValueError: an unknown optimizer name, ``seeds``, ``budget`` or ``workers`` < 1, or a
            bad table.
        ImportError: a baseline needs optuna and it is not installed.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm import tqdm

    if seeds < 1 or budget < 1 or workers < 1:
        raise ValueError(
            f"seeds, budget and workers must be >= 1, got {seeds}, {budget} and {workers}"
        )
    opts = _resolve(optimizers)
    curve_tables = read_curve_tables(path, list(tables) if tables else None)
    scales = [RegretScale.fit(t) for t in curve_tables]
    reported = tuple(sorted({b for b in report_budgets if 0 < b < budget} | {budget}))
    jobs = [(t, s) for t in range(len(curve_tables)) for s in range(seeds)]
    n_runs = len(jobs)
    results: list = [None] * n_runs
    bar = tqdm(total=n_runs, desc="hpo", unit="task-seed", disable=not progress)
    if workers == 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as a worker process: the same float operations, results
        try:  # equal to workers > 1 (with 2 threads, 1 of 24 LCDB searches took another turn)
            for r, (t, seed) in enumerate(jobs):
                results[r] = _run_job(opts, curve_tables[t], scales[t], seed, budget)
                bar.update()
        finally:
            torch.set_num_threads(threads)
    else:
        ctx = get_context("spawn")  # no fork of a process that holds torch threads
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
        ) as pool:
            futures = {
                pool.submit(_run_job, opts, curve_tables[t], scales[t], seed, budget): r
                for r, (t, seed) in enumerate(jobs)
            }
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    bar.close()
    return assemble_result(
        data=str(path),
        tables=tuple(t.name for t in curve_tables),
        seeds=seeds,
        budget=budget,
        report_budgets=reported,
        optimizers=tuple(o.name for o in opts),
        scores=np.stack([res[0] for res in results], axis=1),
        regret=np.stack([res[1] for res in results], axis=1),
        runs=[record for res in results for record in res[2]],
        settings={o.name: o.settings() for o in opts},
        data_sha256=file_sha256(path),
    )


def assemble_result(
    *,
    data: str,
    tables: tuple[str, ...],
    seeds: int,
    budget: int,
    report_budgets: tuple[int, ...],
    optimizers: tuple[str, ...],
    scores: np.ndarray,
    regret: np.ndarray,
    runs: list[RunRecord],
    settings: dict[str, dict[str, Any]],
    data_sha256: str | None = None,
) -> HPOEvalResult:
    """An :class:`HPOEvalResult` from the (O, R, B) incumbent ``scores`` and ``regret`` of
    its runs (R = tables x seeds, table-major): the ranks among the O optimizers and the summary
    at each of ``report_budgets`` (sorted, the last being ``budget``) are worked out here. Used
    by :func:`evaluate_hpo` and by :mod:`bo.hpo_report` (loading and merging results)."""
    rank = np.stack(  # (O, R, B): ranked per run, among the optimizers
        [rank_optimizers(scores[:, r]) for r in range(scores.shape[1])], axis=1
    )
    summary = [
        HPOSummary(
            optimizer=name,
            budget=b,
            regret=float(regret[o, :, b - 1].mean()),
            regret_se=standard_error(regret[o, :, b - 1]),
            rank=float(rank[o, :, b - 1].mean()),
            n_runs=regret.shape[1],
        )
        for o, name in enumerate(optimizers)
        for b in report_budgets
    ]
    return HPOEvalResult(
        data=data,
        tables=tables,
        optimizers=optimizers,
        seeds=seeds,
        budget=budget,
        report_budgets=report_budgets,
        regret=regret,
        rank=rank,
        scores=scores,
        runs=runs,
        summary=summary,
        settings=settings,
        data_sha256=data_sha256,
    )
