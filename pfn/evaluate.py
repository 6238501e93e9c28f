"""Offline evaluation of surrogates on recorded curves (``curvepfn evaluate surrogate``).

For every table of a curve file (:mod:`pfn.curve_table`), every context size and every seed, one
:class:`~pfn.eval_tasks.EvalTask` is drawn (the protocol of the references: prefixes of many
curves as context, the final value of every curve seen as targets, see :mod:`pfn.eval_tasks`), and
every method predicts its targets. Per method and context size we report, in score space:

* ``ll``: mean log-likelihood of the targets (per task, then averaged over tasks);
* ``mse``: mean squared error of the predictive mean;
* ``coverage``: share of targets inside the central ``interval`` (default 90%) interval;
* ``coverage_inside``: the same over the targets strictly inside the score range, and
  ``share_on_bound``: the share of targets exactly on one of its ends (a bounded metric at its
  bound, such as 100% accuracy; a diverged run, scored 0; a value clipped at a bound). A
  predictive with a density puts no mass on a single point, so its central interval (almost)
  never reaches such a target, however sure it is that the run ends near the bound; the PFN's
  output reads its edge buckets as atoms on the bounds (``BarDistribution``, ``edge_atoms``), so
  its interval reaches the bound when more than the tail mass lies in the edge bucket. The
  baselines' densities have no atoms. ``coverage`` counts every miss all the same;
* ``time_s``: mean wall-clock seconds of one task's prediction (for a PFN its forward passes:
  two for ``pfn`` and ``pfn-no-hps`` when the surrogate's ``single_weight`` is above 0).

Methods: ``pfn`` (the surrogate's predictive: its context view, every curve with its
hyperparameters, mixed with its single-curve view, see :class:`~pfn.surrogate.Surrogate`),
``pfn-context`` (the context view alone), ``pfn-no-hps`` (the predictive with hyperparameters
hidden: all curves of the task in context), ``pfn-single`` (each curve alone, no
hyperparameters: the LC-PFN use), and the baselines of :mod:`pfn.baselines`.

:func:`evaluate_prior` measures held-out prior tasks (log-likelihood by context share), the
quantity the LC-PFN paper reports at cutoffs 10/20/40/80%.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from pfn.curve_table import TIME_MODES, CurveTable, read_curve_tables
from pfn.eval_tasks import EvalTask, NoTargets, build_eval_task
from pfn.forecast import Forecast, ForecastMethod
from pfn.model import CurveSetInput
from pfn.surrogate import Surrogate

__all__ = [
    "METHODS",
    "MethodScore",
    "PFNMethod",
    "PairedDifference",
    "PriorEvalResult",
    "SurrogateEvalConfig",
    "SurrogateEvalResult",
    "evaluate_prior",
    "evaluate_surrogate",
    "make_method",
    "standard_error",
    "markdown_table",
    "write_report",
]

PFN_MODES = ("pfn", "pfn-context", "pfn-no-hps", "pfn-single")
BASELINE_NAMES = ("last-value", "power-law", "gp")
METHODS = PFN_MODES + BASELINE_NAMES
_PIT_BINS = 20  # calibration histogram bins


class PFNMethod(ForecastMethod):
    """The surrogate as a :class:`~pfn.forecast.ForecastMethod`.

    Modes: ``"pfn"`` (the surrogate's predictive: all curves with their hyperparameters, mixed
    with the single-curve view), ``"pfn-context"`` (the context view alone, no mixture),
    ``"pfn-no-hps"`` (the predictive with hyperparameters hidden), ``"pfn-single"`` (each target
    curve alone, no hyperparameters).
    """

    def __init__(self, surrogate: Surrogate, mode: str = "pfn") -> None:
        if mode not in PFN_MODES:
            raise ValueError(f"mode must be one of {PFN_MODES}, got {mode!r}")
        self.surrogate, self.mode, self.name = surrogate, mode, mode

    def predict(self, task: EvalTask) -> Forecast:
        if self.mode == "pfn-single":
            curves = [task.curve_points(int(c)) for c in task.target_curve]
            return self.surrogate.forecast_single(curves, task.target_t)
        hidden = self.mode == "pfn-no-hps"
        return self.surrogate.forecast(
            np.zeros((task.n_curves, 0)) if hidden else task.configs,
            ctx_curve=task.ctx_curve,
            ctx_t=task.ctx_t,
            ctx_y=task.ctx_y,
            qry_curve=task.target_curve,
            qry_t=task.target_t,
            single_weight=0.0 if self.mode == "pfn-context" else None,
        )


def make_method(name: str, surrogate: Surrogate | None = None) -> ForecastMethod:
    """A method by name (see :data:`METHODS`); PFN modes need ``surrogate``.

    Raises:
        ValueError: unknown name, or a PFN mode without a surrogate.
    """
    if name in PFN_MODES:
        if surrogate is None:
            raise ValueError(f"method {name!r} needs a surrogate")
        return PFNMethod(surrogate, name)
    if name in BASELINE_NAMES:
        from pfn.baselines import make_baseline

        return make_baseline(name)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


@dataclass(frozen=True, kw_only=True)
class SurrogateEvalConfig:
    """What ``evaluate_surrogate`` runs."""

    context_sizes: tuple[int, ...] = (400, 800, 1000, 1400, 1800)  # N, points in each context
    seeds: int = 5  # tasks per table and context size
    methods: tuple[str, ...] = METHODS  # see METHODS
    time_mode: str = "step"  # how steps become times, see CurveTable.times
    interval: float = 0.9  # mass of the central interval whose coverage is reported
    # "bounds": a metric's known bounds are the ends of the score range; "data": the range comes
    # from the context's values (see MetricScaler.fit, bounds_as_ends)
    scaling: str = "bounds"

    def __post_init__(self) -> None:
        if not self.context_sizes or min(self.context_sizes) < 1:
            raise ValueError(f"context_sizes must be positive, got {self.context_sizes}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
        if self.time_mode not in TIME_MODES:
            raise ValueError(f"time_mode must be one of {TIME_MODES}, got {self.time_mode!r}")
        if self.scaling not in ("bounds", "data"):
            raise ValueError(f"scaling must be 'bounds' or 'data', got {self.scaling!r}")
        if not 0 < self.interval < 1:
            raise ValueError(f"interval must lie in (0, 1), got {self.interval}")


@dataclass(frozen=True)
class MethodScore:
    """One method at one context size, averaged over tasks (per-task means, then the mean)."""

    method: str
    n_context: int  # requested context size
    ll: float  # mean log-likelihood of the targets
    ll_se: float  # standard error of `ll` over tasks
    mse: float  # mean squared error of the predictive mean
    coverage: float  # share of targets inside the central interval
    time_s: float  # mean seconds per task
    n_tasks: int
    n_targets: int  # targets in total
    mse_se: float = 0.0  # standard error of `mse` over tasks
    share_on_bound: float = 0.0  # share of the targets on an end of the score range (0 or 1)
    coverage_inside: float = float("nan")  # coverage of the other targets (NaN: there are none;
    # null in results.json)


@dataclass(frozen=True)
class PairedDifference:
    """``method`` minus ``against`` on the same tasks: the mean per-task difference.

    Both methods see identical tasks (same table, context size and seed), so the task-to-task
    spread cancels and ``se`` says whether a lead is more than the draw of the tasks.
    """

    method: str
    against: str
    n_context: int
    metric: str  # "ll" or "mse"
    mean: float  # mean over tasks of (method - against)
    se: float  # its standard error over tasks (0 with one task)
    n_tasks: int


@dataclass(frozen=True)
class TaskRecord:
    """One method on one task."""

    method: str
    table: str
    n_context: int  # requested
    n_context_actual: int
    seed: int
    n_targets: int
    ll: float
    mse: float
    coverage: float
    time_s: float
    n_on_bound: int = 0  # targets on an end of the score range (0 or 1)
    coverage_inside: float = float("nan")  # coverage of the other targets (NaN: none)


@dataclass
class SurrogateEvalResult:
    """Everything ``evaluate_surrogate`` measured."""

    data: str  # the curve file
    checkpoint: str  # what surrogate was evaluated
    config: SurrogateEvalConfig
    scores: list[MethodScore]
    records: list[TaskRecord]
    pit: dict[str, list[int]] = field(default_factory=dict)  # method -> PIT histogram counts
    single_weight: float | None = None  # the surrogate's (None: no PFN method ran)

    def score(self, method: str, n_context: int) -> MethodScore:
        """The score of one method at one context size."""
        for s in self.scores:
            if s.method == method and s.n_context == n_context:
                return s
        raise KeyError((method, n_context))

    def paired(
        self, method: str, against: str, n_context: int, metric: str = "mse"
    ) -> PairedDifference:
        """``method`` minus ``against`` in ``metric`` ("ll" or "mse"), task by task.

        Raises:
            ValueError: an unknown metric, or no task that both methods were scored on.
        """
        if metric not in ("ll", "mse"):
            raise ValueError(f"metric must be 'll' or 'mse', got {metric!r}")

        def per_task(name: str) -> dict[tuple[str, int], float]:
            return {(r.table, r.seed): getattr(r, metric) for r in self.records
                    if r.method == name and r.n_context == n_context}  # fmt: skip

        a, b = per_task(method), per_task(against)
        keys = sorted(a.keys() & b.keys())
        if not keys:
            raise ValueError(f"no task scored for both {method!r} and {against!r} at N={n_context}")
        diff = np.array([a[k] - b[k] for k in keys])
        return PairedDifference(method, against, n_context, metric, float(diff.mean()),
                                standard_error(diff), diff.size)  # fmt: skip


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of ``values`` (1-D); 0 with fewer than two."""
    return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0


def _score_task(
    forecast: Forecast, y: np.ndarray, interval: float
) -> tuple[float, float, np.ndarray]:
    """(mean ll, mse, (M,) bool: target inside the central interval) of one task's targets."""
    ll = forecast.log_prob(y)
    err = (forecast.mean() - y) ** 2
    lo, hi = forecast.interval(interval)
    return float(ll.mean()), float(err.mean()), (y >= lo) & (y <= hi)


def _inside_coverage(covered: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """(targets on an end of [0, 1], coverage of the others: NaN when there are none)."""
    on_bound = (y <= 0.0) | (y >= 1.0)
    inside = covered[~on_bound]
    return int(on_bound.sum()), float(inside.mean()) if inside.size else float("nan")


def evaluate_surrogate(
    data: str | Path,
    *,
    surrogate: Surrogate | None,
    config: SurrogateEvalConfig = SurrogateEvalConfig(),
    tables: Sequence[str] | None = None,
    checkpoint_name: str = "default",
    progress: bool = True,
) -> SurrogateEvalResult:
    """Evaluate the configured methods on every table of a curve file.

    Args:
        data: an HDF5 curve file in the shared layout.
        surrogate: the PFN for the ``pfn*`` methods (None if only baselines run).
        config: context sizes, seeds, methods, interval.
        tables: table (group) names to use; None for all.
        checkpoint_name: how the surrogate is named in the report.
        progress: show a progress bar.

    Returns:
        Scores per method and context size, per-task records and calibration histograms.

    Raises:
        ValueError: a table cannot give tasks, or its configs exceed the model's ``max_hps``.
    """
    from tqdm import tqdm

    curve_tables: list[CurveTable] = read_curve_tables(data, list(tables) if tables else None)
    methods = [make_method(name, surrogate) for name in config.methods]
    if surrogate is not None and any(m in PFN_MODES for m in config.methods):
        for tab in curve_tables:
            if tab.configs.shape[1] > surrogate.config.max_hps:
                raise ValueError(
                    f"table {tab.name!r} has {tab.configs.shape[1]} encoded hyperparameters, more "
                    f"than the model's max_hps={surrogate.config.max_hps}"
                )
    records: list[TaskRecord] = []
    pit = {m.name: np.zeros(_PIT_BINS, dtype=np.int64) for m in methods}
    jobs = [(tab, n, s) for tab in curve_tables for n in config.context_sizes
            for s in range(config.seeds)]  # fmt: skip
    skipped: list[str] = []
    for tab, n, seed in tqdm(jobs, desc="evaluate", unit="task", disable=not progress):
        try:
            task = build_eval_task(
                tab,
                n_context=n,
                seed=seed,
                time_mode=config.time_mode,
                bounds_as_ends=config.scaling == "bounds",
            )
        except NoTargets:  # every method skips it alike, so the comparison stays paired
            skipped.append(f"{tab.name} N={n} seed {seed}")
            continue
        hidden = task.hidden()
        for method in methods:
            start = time.perf_counter()
            forecast = method.predict(hidden)
            elapsed = time.perf_counter() - start
            ll, mse, covered = _score_task(forecast, task.target_y, config.interval)
            n_on_bound, cover_inside = _inside_coverage(covered, task.target_y)
            u = np.clip(forecast.cdf(task.target_y), 0.0, 1.0)
            pit[method.name] += np.histogram(u, bins=_PIT_BINS, range=(0.0, 1.0))[0]
            records.append(
                TaskRecord(
                    method=method.name,
                    table=tab.name,
                    n_context=n,
                    n_context_actual=task.n_context,
                    seed=seed,
                    n_targets=task.n_targets,
                    ll=ll,
                    mse=mse,
                    coverage=float(covered.mean()),
                    time_s=elapsed,
                    n_on_bound=n_on_bound,
                    coverage_inside=cover_inside,
                )
            )
    if skipped:
        warnings.warn(
            f"{len(skipped)} of {len(jobs)} task(s) skipped: none of the curves drawn had a "
            f"recorded final value to score ({', '.join(skipped[:5])}"
            f"{', ...' if len(skipped) > 5 else ''})",
            stacklevel=2,
        )
    unscored = [n for n in config.context_sizes if not any(r.n_context == n for r in records)]
    if unscored:
        raise ValueError(
            f"no task of context size(s) {unscored} could be scored: no curve drawn had a "
            "recorded final value (too few curves at that size, or too many runs stopped early)"
        )
    return SurrogateEvalResult(
        data=str(data),
        checkpoint=checkpoint_name,
        config=config,
        scores=_aggregate(records, config),
        records=records,
        pit={k: v.tolist() for k, v in pit.items()},
        single_weight=None if surrogate is None else surrogate.single_weight,
    )


def _aggregate(records: list[TaskRecord], config: SurrogateEvalConfig) -> list[MethodScore]:
    out = []
    for method in config.methods:
        for n in config.context_sizes:
            rs = [r for r in records if r.method == method and r.n_context == n]
            ll = np.array([r.ll for r in rs])
            mse = np.array([r.mse for r in rs])
            inside = [r.coverage_inside for r in rs if not np.isnan(r.coverage_inside)]
            out.append(
                MethodScore(
                    method=method,
                    n_context=n,
                    ll=float(ll.mean()),
                    ll_se=standard_error(ll),
                    mse=float(mse.mean()),
                    coverage=float(np.mean([r.coverage for r in rs])),
                    time_s=float(np.mean([r.time_s for r in rs])),
                    n_tasks=len(rs),
                    n_targets=int(sum(r.n_targets for r in rs)),
                    mse_se=standard_error(mse),
                    share_on_bound=float(np.mean([r.n_on_bound / r.n_targets for r in rs])),
                    coverage_inside=float(np.mean(inside)) if inside else float("nan"),
                )
            )
    return out


def markdown_table(result: SurrogateEvalResult) -> str:
    """The scores as a markdown table (one row per method and context size), best in bold; with
    ``pfn`` and other methods, a second table of their paired differences against ``pfn``."""
    cfg = result.config
    weight = "" if result.single_weight is None else f" (single_weight {result.single_weight:g})"
    lines = [
        f"Data `{Path(result.data).name}`, surrogate `{result.checkpoint}`{weight}, "
        f"{cfg.seeds} seed(s); score space; {cfg.interval:.0%} interval.",
        "",
        "| N | method | log-lik ↑ | MSE ↓ | coverage | coverage inside | ms/task | tasks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in cfg.context_sizes:
        rows = [result.score(m, n) for m in cfg.methods]
        best_ll = max(r.ll for r in rows)
        best_mse = min(r.mse for r in rows)
        for r in rows:
            ll = f"{r.ll:.3f} ± {r.ll_se:.3f}"
            mse = f"{r.mse:.5f} ± {r.mse_se:.5f}"
            lines.append(
                f"| {n} | {r.method} | {f'**{ll}**' if r.ll == best_ll else ll} | "
                f"{f'**{mse}**' if r.mse == best_mse else mse} | {r.coverage:.3f} | "
                f"{_or_dash(r.coverage_inside)} | {1000 * r.time_s:.0f} | {r.n_tasks} |"
            )
    on_bound = [result.score(cfg.methods[0], n).share_on_bound for n in cfg.context_sizes]
    if max(on_bound) > 0:
        lines += [
            "",
            f"{min(on_bound):.1%}–{max(on_bound):.1%} of the targets (mean per task) lie exactly "
            "on an end of the score range (a bounded metric at its bound, a diverged run). A "
            "predictive with a density (almost) never covers such a point with a central "
            "interval (the PFN's edge buckets are atoms on the bounds, the baselines have "
            "none); *coverage inside* is the coverage of the other targets.",
        ]
    others = [m for m in cfg.methods if m != "pfn"]
    if "pfn" in cfg.methods and others:
        lines += [
            "",
            "Paired against `pfn` on the same tasks (other minus pfn, mean ± s.e. over tasks; "
            "log-lik < 0 and MSE > 0: pfn is better).",
            "",
            "| N | method | Δ log-lik | Δ MSE |",
            "|---|---|---|---|",
        ]
        for n in cfg.context_sizes:
            for m in others:
                ll, mse = (result.paired(m, "pfn", n, k) for k in ("ll", "mse"))
                lines.append(
                    f"| {n} | {m} | {ll.mean:+.3f} ± {ll.se:.3f} | {mse.mean:+.5f} ± {mse.se:.5f} |"
                )
    return "\n".join(lines) + "\n"


def _or_dash(value: float) -> str:
    """``value`` to 3 decimals, or "–" for NaN (nothing to measure)."""
    return "–" if np.isnan(value) else f"{value:.3f}"


def _nan_to_none(row: dict) -> dict:
    """``row`` with NaN floats as None, so that results.json is strict JSON (null)."""
    return {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in row.items()}


def write_report(
    result: SurrogateEvalResult,
    out_dir: str | Path,
    *,
    surrogate: Surrogate | None = None,
) -> list[Path]:
    """Write ``results.json``, ``results.md``, ``metrics.png``, ``calibration.png`` and (with a
    surrogate) ``curves.png`` to ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "data": result.data,
        "checkpoint": result.checkpoint,
        "single_weight": result.single_weight,
        "config": asdict(result.config),
        "scores": [_nan_to_none(asdict(s)) for s in result.scores],
        "records": [_nan_to_none(asdict(r)) for r in result.records],
        "pit_histograms": result.pit,
    }
    paths = [out / "results.json", out / "results.md"]
    paths[0].write_text(json.dumps(payload, indent=1) + "\n")
    paths[1].write_text(markdown_table(result))
    paths.append(_plot_metrics(result, out / "metrics.png"))
    paths.append(_plot_calibration(result, out / "calibration.png"))
    if surrogate is not None:
        paths.append(_plot_curves(result, surrogate, out / "curves.png"))
    return paths


def _plot_metrics(result: SurrogateEvalResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result.config
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for method in cfg.methods:
        rows = [result.score(method, n) for n in cfg.context_sizes]
        axes[0].errorbar(cfg.context_sizes, [r.ll for r in rows], [r.ll_se for r in rows],
                         marker="o", label=method, capsize=2)  # fmt: skip
        axes[1].plot(cfg.context_sizes, [r.mse for r in rows], marker="o", label=method)
        axes[2].plot(cfg.context_sizes, [r.coverage for r in rows], marker="o", label=method)
    axes[1].set_yscale("log")
    axes[2].axhline(cfg.interval, color="k", lw=0.8, ls="--")
    for ax, title in zip(axes, ("log-likelihood ↑", "MSE of the mean ↓", "90% interval coverage"),
                         strict=True):  # fmt: skip
        ax.set_xlabel("context points N")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{Path(result.data).name}: final-value prediction from partial curves")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_calibration(result: SurrogateEvalResult, path: Path) -> Path:
    """Histogram of the PIT values ``cdf(target)``, uniform for a calibrated forecast with a
    density. Targets exactly on a bound are not randomised within an atom: a target at 1 gives 1,
    one at 0 gives the forecast's mass at 0 (the PFN's edge atom, 0 for the baselines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    edges = np.linspace(0, 1, _PIT_BINS + 1)
    for method, counts in result.pit.items():
        counts = np.asarray(counts, dtype=np.float64)
        cum = np.concatenate([[0.0], np.cumsum(counts) / max(counts.sum(), 1.0)])
        ax.plot(edges, cum, marker=".", label=method)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
    ax.set_xlabel("predicted probability P(target ≤ y)  (nominal level)")
    ax.set_ylabel("observed share of targets below")
    ax.set_title("calibration (all context sizes)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_curves(result: SurrogateEvalResult, surrogate: Surrogate, path: Path) -> Path:
    """Six target curves of the first table's largest-context task: prefix, truth, PFN band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result.config
    first = sorted({r.table for r in result.records})[0]
    tab = read_curve_tables(result.data, [first])[0]
    task = build_eval_task(
        tab,
        n_context=max(cfg.context_sizes),
        seed=0,
        time_mode=cfg.time_mode,
        bounds_as_ends=cfg.scaling == "bounds",
    )
    times = tab.times(cfg.time_mode)
    chosen = task.target_curve[np.argsort(task.target_y)][:: max(1, task.n_targets // 6)][:6]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), squeeze=False)
    for ax, curve in zip(axes.flat, chosen, strict=False):
        t_obs, y_obs = task.curve_points(int(curve))
        t_q = times[times > t_obs.max()]
        fc = surrogate.forecast(
            task.configs,
            ctx_curve=task.ctx_curve,
            ctx_t=task.ctx_t,
            ctx_y=task.ctx_y,
            qry_curve=np.full(t_q.size, curve),
            qry_t=t_q,
        )
        truth = task.scaler.to_score(tab.curves[task.rows[curve]])
        lo, hi = fc.interval(cfg.interval)
        ax.plot(times, truth, color="0.6", lw=1, label="true curve")
        ax.plot(t_obs, y_obs, "o", color="C0", ms=3, label="context")
        ax.fill_between(t_q, lo, hi, color="C1", alpha=0.3, label=f"{cfg.interval:.0%} band")
        ax.plot(t_q, fc.quantile(0.5), color="C1", label="median")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("t")
        ax.set_ylabel("score")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{first}: PFN extrapolation, N={task.n_context} context points")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- held-out prior tasks --------------------------------------------------------------------


@dataclass(frozen=True)
class PriorEvalResult:
    """Held-out prior log-likelihood per context share."""

    prior: str
    n_tasks: int
    ll: dict[float, float]  # context share -> mean log-likelihood of the query points
    ll_se: dict[float, float]  # standard error over tasks
    single_weight: float = 0.0  # the surrogate's: the predictive scored (0: the network's output)


def _predictive(
    surrogate: Surrogate, inp: CurveSetInput, i: int, logits: torch.Tensor
) -> torch.Tensor:
    """Task ``i``'s (M, K) predictive from its context view ``logits`` (every query of a prior
    batch is real: ``from_batch`` pads none)."""
    arrays = {
        name: getattr(inp, name)[i].cpu().numpy().astype(np.float64)
        for name in ("ctx_curve", "ctx_t", "ctx_y", "qry_curve", "qry_t")
    }
    mixed = surrogate.mix_single_view(logits.cpu(), surrogate.single_weight, **arrays)
    return mixed.to(logits.device)


def evaluate_prior(
    surrogate: Surrogate,
    *,
    prior: str = "ftpfn",
    fractions: Sequence[float] = (0.1, 0.2, 0.4, 0.8),
    n_tasks: int = 256,
    batch_size: int = 16,
    seed: int = 1_000_003,
    prior_overrides: dict | None = None,
) -> PriorEvalResult:
    """Mean log-likelihood of held-out prior tasks' query points at each context share, under
    the surrogate's predictive (its context view mixed with its single-curve view, with weight
    ``surrogate.single_weight``; 0: the network's output alone).

    Tasks come from a seed stream disjoint from training's (training seeds are small integers
    combined with steps; use a large ``seed``). The same tasks (curves) are cut at every share.
    For ``prior="lcpfn"`` this is the LC-PFN protocol: one curve of 100 steps, the first share of
    it as context, every later point a target.
    """
    from priors.registry import make_prior

    if n_tasks < 1 or batch_size < 1:
        raise ValueError("n_tasks and batch_size must be >= 1")
    if not all(0 < f < 1 for f in fractions):
        raise ValueError(f"fractions must lie in (0, 1), got {fractions}")
    p = make_prior(prior, max_hps=surrogate.config.max_hps, **(prior_overrides or {}))
    dist = surrogate.distribution
    per_task: dict[float, list[torch.Tensor]] = {f: [] for f in fractions}
    for b in range(-(-n_tasks // batch_size)):
        size = min(batch_size, n_tasks - b * batch_size)
        probe = p.sample(size, generator=torch.Generator().manual_seed(seed + b))
        for f in fractions:
            batch = p.sample(
                size,
                generator=torch.Generator().manual_seed(seed + b),
                n_context=min(max(1, round(f * probe.n_tokens)), probe.n_tokens - 1),
            ).to(surrogate.device)
            inp, target = CurveSetInput.from_batch(batch)
            with torch.inference_mode():
                logits = surrogate.model(inp).float()  # (B, M, K): the context view
            if surrogate.single_weight > 0:  # the surrogate's predictive, task by task
                logits = torch.stack(
                    [_predictive(surrogate, inp, i, logits[i]) for i in range(size)]
                )
            ll = -dist.nll(logits, target)  # (B, M)
            mask = inp.qry_mask.float()
            per_task[f].append(((ll * mask).sum(1) / mask.sum(1).clamp_min(1)).cpu())
    lls = {f: torch.cat(v).double().numpy() for f, v in per_task.items()}
    return PriorEvalResult(
        prior=prior,
        n_tasks=n_tasks,
        ll={f: float(v.mean()) for f, v in lls.items()},
        ll_se={f: standard_error(v) for f, v in lls.items()},
        single_weight=surrogate.single_weight,
    )
