"""``bo.optimize``: run a whole freeze-thaw search over a user's training function.

The user writes one function::

    def objective(config, step_from, step_to, checkpoint_dir) -> list[float]:
        # restore the run's state from checkpoint_dir if step_from > 0 (thaw),
        # train from step_from to step_to, save the state to checkpoint_dir (freeze),
        # return the metric after each step step_from + 1 .. step_to

and :func:`optimize` calls it with the trials of a :class:`~bo.freeze_thaw.FreezeThaw` (one step
at a time) until ``budget`` steps are spent. ``checkpoint_dir`` is a folder per run
(``workdir/runs/<id>``) that only the user's code reads and writes.

Failures: an exception raised by ``objective`` or a NaN it returns marks the run failed (it is
never resumed, and never the incumbent); the search goes on. With ``state_dir`` the search is
crash-safe: run ``optimize`` again with the same arguments and it continues where it stopped,
first re-running the trials that were in flight (from their last checkpoint). A crash can fall
after the objective saved its checkpoint at ``step_to`` and before the value was journalled, so an
objective should answer a trial whose run is already at ``step_to`` with that run's values, as
:func:`bo.integrations.lightning.lightning_objective` does, rather than fail it.
"""

from __future__ import annotations

import math
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bo.acquisition import DEFAULT_ACQUISITION
from bo.freeze_thaw import FreezeThaw, FreezeThawConfig, Incumbent, NothingToAsk, Record, Trial
from bo.space import CandidateTable, Space
from pfn.surrogate import Surrogate

__all__ = ["OptimizeResult", "RunSummary", "optimize"]

Objective = Callable[[Mapping[str, Any], int, int, Path], "float | Sequence[float]"]


@dataclass(frozen=True)
class RunSummary:
    """One run of the search."""

    id: int
    config: Mapping[str, Any]
    steps: int  # steps trained
    last: float | None  # value at the last step measured (None: failed, or none measured)
    best: float | None  # best finite value of the run
    failed: bool


@dataclass(frozen=True)
class OptimizeResult:
    """What :func:`optimize` found."""

    best: Incumbent | None  # the incumbent (best finite value at any step)
    runs: tuple[RunSummary, ...]  # every run, by id
    history: tuple[Record, ...]  # every told step, in order
    steps_spent: int
    minimize: bool
    plot: Path | None  # the PNG written, if any
    stopped_by_time: bool = False  # ``time_limit_s`` ran out before the budget was spent

    def table(self, *, top: int = 10) -> str:
        """The ``top`` runs by best value as a markdown table."""
        finite = [r for r in self.runs if r.best is not None]
        sign = 1.0 if self.minimize else -1.0
        order = sorted(finite, key=lambda r: sign * r.best)[:top]  # type: ignore[operator]
        lines = ["| run | steps | best | last | config |", "|---|---|---|---|---|"]
        for r in order:
            last = "failed" if r.failed else "-" if r.last is None else f"{r.last:.6g}"
            lines.append(f"| {r.id} | {r.steps} | {r.best:.6g} | {last} | {dict(r.config)} |")
        return "\n".join(lines) + "\n"


def optimize(
    objective: Objective,
    space: Space,
    *,
    max_steps: int,
    budget: int,
    minimize: bool = False,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    surrogate: Surrogate | None = None,
    acquisition: str = DEFAULT_ACQUISITION,
    seed: int = 0,
    workdir: str | Path = "freeze_thaw_runs",
    state_dir: str | Path | None = None,
    config: FreezeThawConfig | None = None,
    candidates: CandidateTable | None = None,
    progress: bool = True,
    plot: bool = True,
    time_limit_s: float | None = None,
) -> OptimizeResult:
    """Spend ``budget`` training steps on the most promising runs (see the module docstring).

    Args:
        objective: ``objective(config, step_from, step_to, checkpoint_dir)`` returning the metric
            after each step from ``step_from + 1`` to ``step_to`` (a float is taken as the value at
            ``step_to``); None where a step was trained but not measured (a run evaluated every
            few steps: the search reads its curve with gaps); NaN or an exception: the run
            failed.
        space: the search space.
        max_steps: the longest a run is trained.
        budget: total training steps to spend (summed over runs).
        minimize: True for losses.
        lower_bound, upper_bound: known bounds of the metric.
        surrogate: the PFN (None: the shipped one).
        acquisition: see :data:`bo.acquisition.ACQUISITIONS`.
        seed: seeds the search.
        workdir: where run folders (``runs/<id>``) and the plot go.
        state_dir: journal folder for crash-safe resumption (None: in memory only).
        config: the candidate pool's settings (None: the defaults).
        candidates: a fixed grid of configurations to choose new runs from (see
            :class:`~bo.space.CandidateTable`); None samples new ones from ``space``.
        progress: show a progress bar with the current trial and the incumbent.
        plot: write ``workdir/freeze_thaw.png`` (incumbent vs steps, and every learning curve).
        time_limit_s: wall-clock seconds, from this call's start, after which no new trial
            starts (the one running then finishes and is told); None: no limit. The result
            says whether it ended the search (``stopped_by_time``). A later call with the same
            ``state_dir`` continues the search, under a limit of its own.

    Returns:
        The incumbent, per-run summaries and the history.

    Raises:
        ValueError: bad arguments (see :class:`~bo.freeze_thaw.FreezeThaw`), ``budget < 1``, or
            a ``time_limit_s`` that is not a positive number.
    """
    from tqdm import tqdm

    start = time.monotonic()
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if time_limit_s is not None:
        number = isinstance(time_limit_s, int | float | np.integer | np.floating) and not (
            isinstance(time_limit_s, bool)
        )
        if not (number and math.isfinite(time_limit_s) and time_limit_s > 0):
            raise ValueError(
                f"time_limit_s must be a positive number of seconds or None, got {time_limit_s!r}"
            )
    work = Path(workdir)
    ft = FreezeThaw(
        space,
        max_steps=max_steps,
        minimize=minimize,
        lower_bound=lower_bound,
        upper_bound=upper_bound,
        budget=budget,
        surrogate=surrogate,
        acquisition=acquisition,
        seed=seed,
        state_dir=state_dir,
        candidates=candidates,
        config=config or FreezeThawConfig(),
    )
    bar = tqdm(total=budget, initial=min(ft.steps_spent, budget), unit="step",
               desc="freeze-thaw", disable=not progress)  # fmt: skip
    out_of_time = False
    try:
        in_flight = list(ft.pending)  # left by a crashed earlier call: run them again
        while ft.steps_spent < budget:
            if time_limit_s is not None and time.monotonic() - start >= time_limit_s:
                out_of_time = True
                break
            if in_flight:
                trial = in_flight.pop(0)
            else:
                try:
                    trial = ft.ask()
                except NothingToAsk:
                    break
            _run_trial(ft, objective, trial, work)
            bar.update(1)
            best = ft.best()
            bar.set_postfix(
                run=trial.id,
                step=trial.step,
                new="yes" if trial.resume_from == 0 else "thaw",
                best="-" if best is None else f"{best.value:.4g}",
            )
    finally:
        if out_of_time:
            bar.set_description(f"freeze-thaw (stopped at the {time_limit_s:g} s time limit)")
        bar.close()
        ft.close()
    runs = _summaries(ft)
    result = OptimizeResult(
        best=ft.best(),
        runs=runs,
        history=ft.history,
        steps_spent=ft.steps_spent,
        minimize=minimize,
        plot=None,
        stopped_by_time=out_of_time,
    )
    if plot:
        work.mkdir(parents=True, exist_ok=True)
        result = replace(result, plot=_plot(result, work / "freeze_thaw.png"))
    return result


def _run_trial(ft: FreezeThaw, objective: Objective, trial: Trial, work: Path) -> None:
    ckpt = work / "runs" / str(trial.id)
    ckpt.mkdir(parents=True, exist_ok=True)
    try:
        out = objective(dict(trial.config), trial.resume_from, trial.step, ckpt)
    except Exception:  # the user's training crashed: this run fails, the search goes on
        warnings.warn(
            f"run {trial.id} failed at step {trial.step}:\n{traceback.format_exc()}",
            stacklevel=2,
        )
        ft.tell_failure(trial)
        return
    if np.ndim(out) == 0:  # a number: Python, NumPy (np.float32, 0-d array) or a 0-d tensor
        values = [out]
    else:
        try:
            values = list(out)
        except TypeError:
            raise ValueError(
                f"objective must return a number or a list of numbers, got {type(out).__name__}"
            ) from None
    expected = trial.step - trial.resume_from
    if len(values) != expected:
        raise ValueError(
            f"objective returned {len(values)} value(s) for steps {trial.resume_from + 1}.."
            f"{trial.step}; expected {expected}"
        )
    if values[-1] is None:  # trained, not measured
        ft.tell_skipped(trial)
        return
    try:
        value = float(values[-1])
    except (TypeError, ValueError):
        raise ValueError(
            f"objective returned {values[-1]!r} for step {trial.step}; expected a number"
        ) from None
    if math.isnan(value):
        ft.tell_failure(trial)
    else:
        ft.tell(trial, value)


def _summaries(ft: FreezeThaw) -> tuple[RunSummary, ...]:
    by_run: dict[int, list[Record]] = {}
    for rec in ft.history:
        by_run.setdefault(rec.trial, []).append(rec)
    configs = ft.configs()
    out = []
    for run_id, recs in sorted(by_run.items()):
        finite = [r.value for r in recs if r.value is not None and math.isfinite(r.value)]
        best = (min(finite) if ft.minimize else max(finite)) if finite else None
        measured = [r.value for r in recs if r.value is not None]
        out.append(
            RunSummary(
                id=run_id,
                config=configs[run_id],
                steps=recs[-1].step,
                last=None if recs[-1].failed or not measured else measured[-1],
                best=best,
                failed=recs[-1].failed,
            )
        )
    return tuple(out)


def _plot_series(
    result: OptimizeResult,
) -> tuple[np.ndarray, dict[int, tuple[list[int], list[float]]]]:
    """What :func:`_plot` draws: the incumbent after each step spent (S,) (NaN until a finite
    value is measured), and each run's measured curve ``{run id: (steps, values)}``. A step
    trained but not measured is no point (the line joins its neighbours); a failed step is a NaN
    point (a break in the line)."""
    finite = np.array(
        [r.value if r.value is not None and math.isfinite(r.value) else np.nan
         for r in result.history],
        dtype=np.float64,
    )  # fmt: skip
    acc = np.fmin.accumulate(finite) if result.minimize else np.fmax.accumulate(finite)
    curves: dict[int, tuple[list[int], list[float]]] = {}
    for rec in result.history:
        steps, ys = curves.setdefault(rec.trial, ([], []))
        if rec.value is not None or rec.failed:  # a step not measured is a gap, not a point
            steps.append(rec.step)
            ys.append(rec.value if rec.value is not None and math.isfinite(rec.value) else np.nan)
    return acc, curves


def _plot(result: OptimizeResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_inc, ax_curves) = plt.subplots(1, 2, figsize=(12, 4.5))
    acc, curves = _plot_series(result)
    ax_inc.plot(np.arange(1, len(acc) + 1), acc, color="C3")
    ax_inc.set_xlabel("training steps spent")
    ax_inc.set_ylabel("incumbent (best value so far)")
    ax_inc.set_title("incumbent vs budget")
    ax_inc.grid(alpha=0.3)
    best_id = result.best.trial if result.best is not None else None
    for run_id, (steps, ys) in curves.items():
        is_best = run_id == best_id
        ax_curves.plot(steps, ys, color="C3" if is_best else "0.5", lw=2 if is_best else 0.8,
                       alpha=1.0 if is_best else 0.6, marker="." if len(steps) < 4 else None,
                       zorder=3 if is_best else 1)  # fmt: skip
    ax_curves.set_xlabel("step")
    ax_curves.set_ylabel("metric")
    ax_curves.set_title(f"all {len(curves)} runs (incumbent's run in red)")
    ax_curves.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
