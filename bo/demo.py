"""``curvepfn demo``: the whole idea on a real model, offline, in a few minutes on a laptop CPU.

The model is a small MLP classifying scikit-learn's bundled 8x8 digits (no download); one step is
one epoch, the metric is the validation accuracy (in [0, 1], higher is better).

1. **Freeze-thaw HPO.** :func:`bo.optimize.optimize` with the shipped surrogate spends ``budget``
   epochs over learning rate, weight decay, width, dropout and optimiser. Pausing a run saves its
   model, optimiser and RNG state in the run's folder (freeze); resuming loads them (thaw). Writes
   ``freeze_thaw.png`` and prints the runs table and the best configuration.
2. **Predicting final accuracy from a few epochs.** Random configurations are trained for a few
   epochs, :meth:`pfn.surrogate.Surrogate.predict_final` predicts each one's accuracy at the last
   epoch from the partial curves, read together with every curve of part 1 (the surrogate learns
   from the other runs of the same task how this model's curves go on), and then they are trained
   to the end for the truth. Writes ``extrapolation.png``. These full-length runs are also what
   random search buys with the same budget of epochs, so they are the baseline the freeze-thaw
   result is compared with.

Everything is seeded: the data split, every run's initialisation, shuffling and dropout (a run's
seed is a hash of its configuration), and the search.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bo.optimize import OptimizeResult, optimize
from bo.space import Categorical, Float, Int, Space
from pfn.surrogate import FinalPrediction, RawRun, Surrogate

__all__ = ["DemoResult", "Digits", "DigitsMLP", "PartialRunRow", "digits_space", "run_demo"]

MAX_EPOCHS = 20  # the longest a run is trained: one step = one epoch
BUDGET = 120  # epochs of the search: six full-length runs' worth
BATCH_SIZE = 64  # fixed, so that every epoch costs the same
N_VALIDATION = 600  # of the 1797 digits; the other 1197 train
RANDOM_DRAWS = 4  # independent random searches with the same budget, for the comparison


def digits_space() -> Space:
    """The MLP's hyperparameters (six encoded dimensions)."""
    return Space(
        {
            "lr": Float(1e-4, 0.5, log=True),
            "weight_decay": Float(1e-6, 1e-1, log=True),
            "width": Int(16, 256, log=True),  # of both hidden layers
            "dropout": Float(0.0, 0.6),
            "optimizer": Categorical(["sgd", "adam"]),  # SGD with momentum 0.9
        }
    )


@dataclass(frozen=True)
class Digits:
    """A fixed split of scikit-learn's digits, standardised with the training statistics."""

    x_train: Tensor  # (N_train, 64)
    y_train: Tensor  # (N_train,) int64 labels 0..9
    x_val: Tensor  # (N_val, 64)
    y_val: Tensor  # (N_val,)

    @classmethod
    def load(cls, *, seed: int = 0, n_val: int = N_VALIDATION) -> Digits:
        """The bundled digits (no download), split at random with ``seed``."""
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        order = np.random.default_rng(seed).permutation(len(x))
        val, train = order[:n_val], order[n_val:]
        mean, std = x[train].mean(0), x[train].std(0)
        std[std == 0] = 1.0  # border pixels that are always blank
        x = (x - mean) / std
        f32, i64 = torch.float32, torch.int64
        return cls(
            torch.tensor(x[train], dtype=f32), torch.tensor(y[train], dtype=i64),
            torch.tensor(x[val], dtype=f32), torch.tensor(y[val], dtype=i64),
        )  # fmt: skip


def _run_seed(config: Mapping[str, Any]) -> int:
    """A stable seed per configuration (Python's ``hash`` of a str changes between processes)."""
    return zlib.crc32(json.dumps(dict(config), sort_keys=True).encode())


def _network(config: Mapping[str, Any]) -> nn.Module:
    width, p = int(config["width"]), float(config["dropout"])
    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Dropout(p),
        nn.Linear(width, width), nn.ReLU(), nn.Dropout(p),
        nn.Linear(width, 10),
    )  # fmt: skip


def _optimizer(config: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    lr, wd = float(config["lr"]), float(config["weight_decay"])
    if config["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)


class DigitsMLP:
    """The demo's objective: ``objective(config, step_from, step_to, checkpoint_dir)``.

    Trains the configuration's MLP from epoch ``step_from`` to ``step_to`` and returns the
    validation accuracy after each epoch. State lives in ``checkpoint_dir/state.pt`` (model,
    optimiser and RNG state: a resumed run continues exactly as an uninterrupted one would). An
    epoch whose training loss is not finite returns NaN there (the run diverged) and stops.
    """

    def __init__(self, data: Digits) -> None:
        self.data = data

    def __call__(
        self, config: Mapping[str, Any], step_from: int, step_to: int, checkpoint_dir: Path
    ) -> list[float]:
        state_path = Path(checkpoint_dir) / "state.pt"
        # The run's own RNG stream: the caller's global torch RNG is left as it was.
        with torch.random.fork_rng(devices=[]):
            if step_from == 0:
                torch.manual_seed(_run_seed(config))
            model = _network(config)
            optim = _optimizer(config, model)
            if step_from > 0:  # thaw
                state = torch.load(state_path, weights_only=True)
                model.load_state_dict(state["model"])
                optim.load_state_dict(state["optimizer"])
                torch.set_rng_state(state["rng"])
            values = []
            for _ in range(step_from, step_to):
                values.append(self._epoch(model, optim))
                if math.isnan(values[-1]):
                    return values + [math.nan] * (step_to - step_from - len(values))
            torch.save(  # freeze
                {"model": model.state_dict(), "optimizer": optim.state_dict(),
                 "rng": torch.get_rng_state()},
                state_path,
            )  # fmt: skip
        return values

    def _epoch(self, model: nn.Module, optim: torch.optim.Optimizer) -> float:
        """One pass over the training set; the validation accuracy after it (NaN: diverged)."""
        d = self.data
        model.train()
        order = torch.randperm(len(d.y_train))
        for i in range(0, len(order), BATCH_SIZE):
            idx = order[i : i + BATCH_SIZE]
            loss = nn.functional.cross_entropy(model(d.x_train[idx]), d.y_train[idx])
            if not torch.isfinite(loss):
                return math.nan
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
        model.eval()
        with torch.no_grad():
            return (model(d.x_val).argmax(1) == d.y_val).double().mean().item()


@dataclass(frozen=True)
class PartialRunRow:
    """Part 2, one run: the accuracy predicted from its first epochs, and the truth."""

    config: Mapping[str, Any]
    curve: tuple[float, ...]  # validation accuracy after every epoch (NaN from a divergence on)
    seen_epochs: int  # epochs the prediction saw
    predicted: float  # predicted median accuracy at the last epoch
    lower: float  # 90% interval at the last epoch
    upper: float

    @property
    def actual(self) -> float:
        """Accuracy at the last epoch (NaN: the run diverged)."""
        return self.curve[-1]

    @property
    def last_seen(self) -> float:
        """Accuracy at the last epoch the prediction saw."""
        return self.curve[self.seen_epochs - 1]

    @property
    def covered(self) -> bool:
        """The actual final accuracy lies in the 90% interval."""
        return self.lower <= self.actual <= self.upper


@dataclass(frozen=True)
class DemoResult:
    """What the demo wrote and found (accuracies on the validation split)."""

    freeze_thaw_plot: Path  # incumbent vs epochs spent, and every learning curve
    extrapolation_plot: Path  # partial curves, predictions and the true continuations
    search: OptimizeResult  # part 1: the whole freeze-thaw search
    best_accuracy: float  # part 1: the incumbent's accuracy (best at any epoch of any run)
    best_config: Mapping[str, Any]
    random_search_best: tuple[float, ...]  # same budget in full-length random runs, per draw
    rows: tuple[PartialRunRow, ...]  # part 2, one per run
    prediction_mae: float  # part 2: mean |predicted - actual| final accuracy (finite runs)
    last_value_mae: float  # the same for "the last seen accuracy stays": the naive baseline
    seconds: float  # wall time of the whole demo


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch on one thread: the networks here are tiny, and OpenMP threads that fight any
    other busy process for the cores make every step many times slower, not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_demo(
    out_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    budget: int = BUDGET,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> DemoResult:
    """Run both parts (see the module docstring), printing as it goes; plots go to ``out_dir``.

    Args:
        out_dir: folder for ``freeze_thaw.png``, ``extrapolation.png`` and part 1's run
            checkpoints (``runs/<id>/state.pt``).
        checkpoint: the surrogate (None: the shipped one).
        budget: epochs the search spends; part 2 trains ``budget // max_epochs`` runs (at least
            2) to the end, which is random search with the same budget when ``budget`` is a
            multiple of ``max_epochs`` (of at least 2 runs); otherwise the printout gives both.
        quick: a tiny version for tests: runs of 6 epochs, a budget of at most 12, part 2 sees
            2 epochs, one random-search draw.
        seed: seeds the data split, the search and part 2's configurations.
        progress: show the search's progress bar (on stderr).

    Raises:
        FileNotFoundError: ``checkpoint`` (or the shipped one) is missing.
        ValueError: ``budget < 1``.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    max_epochs, seen_epochs, draws = (6, 2, 1) if quick else (MAX_EPOCHS, 4, RANDOM_DRAWS)
    budget = min(budget, 12) if quick else budget
    n_full = max(2, budget // max_epochs)
    with _single_thread():
        surrogate = Surrogate.load(checkpoint)
        data = Digits.load(seed=seed)
        objective = DigitsMLP(data)
        space = digits_space()
        print(
            f"curvepfn demo: a 2-hidden-layer MLP on scikit-learn's digits ({len(data.y_train)} "
            f"training / {len(data.y_val)} validation images). One step = one epoch; the metric "
            "is the validation accuracy.\n\n"
            f"Part 1: freeze-thaw search, {budget} epochs in all, runs of up to {max_epochs} "
            f"epochs, over\n  {_fmt_space(space)}",
            flush=True,
        )
        search = optimize(
            objective, space, max_steps=max_epochs, budget=budget, minimize=False,
            lower_bound=0.0, upper_bound=1.0, surrogate=surrogate, seed=seed, workdir=out,
            progress=progress, plot=True,
        )  # fmt: skip
        assert search.best is not None and search.plot is not None
        print(_runs_table(search, max_epochs))

        print(
            f"\nPart 2: {n_full} new random configurations, each trained {seen_epochs} of "
            f"{max_epochs} epochs; the surrogate predicts their accuracy at epoch {max_epochs} "
            "from these partial curves and part 1's curves (no fitting), then they are "
            "trained to the end.",
            flush=True,
        )
        configs = space.sample(n_full, seed=seed + 1, method="random")
        rows, preds = _predict_partial_runs(
            objective, space, surrogate, configs, seen_epochs, max_epochs,
            context=_search_curves(search, space),
        )  # fmt: skip
        print(_rows_table(rows))
        finite = [r for r in rows if math.isfinite(r.actual)]  # diverged runs have no truth
        mae = _mean([abs(r.predicted - r.actual) for r in finite])
        naive = _mean([abs(r.last_seen - r.actual) for r in finite])
        print(
            f"90% intervals cover {sum(r.covered for r in finite)}/{len(finite)} actual final "
            f"accuracies; mean |predicted - actual| = {mae:.3f} (keeping the last seen accuracy: "
            f"{naive:.3f})"
        )

        # Random search with the same budget: part 2's runs are one draw; a few more, cheaply.
        random_best = [_best(r.curve for r in rows)]
        for k in range(1, draws):
            more = space.sample(n_full, seed=seed + 1 + k, method="random")
            random_best.append(_best(_train_full(objective, more, max_epochs)))
    med = float(np.median(random_best))
    spread = "" if draws == 1 else (
        f" (median of {draws} draws of {n_full} configurations; "
        f"range {min(random_best):.4f}-{max(random_best):.4f})"
    )  # fmt: skip
    # The search's first configuration is drawn at random, before the surrogate has a say.
    luck = " - with its first, randomly drawn, configuration" if search.best.trial == 0 else ""
    random_epochs = n_full * max_epochs  # whole runs: the budget rounded down, at least 2 runs
    head = (
        f"Same budget, {budget} epochs"
        if random_epochs == budget
        else f"Budgets {random_epochs} epochs (random search, whole runs) and {budget} (search)"
    )
    print(
        f"\n{head}: random search over full-length runs reaches {med:.4f}{spread}; freeze-thaw "
        f"reached {search.best.value:.4f} (one seed) by trying {len(search.runs)} "
        f"configurations{luck}."
    )

    extrapolation = out / "extrapolation.png"
    _plot_extrapolation(extrapolation, rows, preds)
    seconds = time.perf_counter() - start
    print(
        f"\nDone in {seconds:.0f} s. Files:\n"
        f"  {search.plot}: left, the best accuracy so far against epochs spent; right, every "
        "run's learning curve (the best run in red; short curves are runs the search left "
        "paused).\n"
        f"  {extrapolation}: per part-2 run, the first {seen_epochs} epochs (blue), the predicted "
        f"median and 90% band to epoch {max_epochs} (orange), and what training then gave "
        "(grey, dashed).\n"
        f"  {out / 'runs'}/<id>/state.pt: each part-1 run's frozen model, optimiser and RNG state."
    )
    return DemoResult(
        freeze_thaw_plot=search.plot,
        extrapolation_plot=extrapolation,
        search=search,
        best_accuracy=search.best.value,
        best_config=dict(search.best.config),
        random_search_best=tuple(random_best),
        rows=tuple(rows),
        prediction_mae=mae,
        last_value_mae=naive,
        seconds=seconds,
    )


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _best(curves: Iterable[Sequence[float]]) -> float:
    """The best finite accuracy of any epoch of any curve (NaN if none)."""
    finite = [v for c in curves for v in c if math.isfinite(v)]
    return max(finite, default=math.nan)


def _train_full(
    objective: DigitsMLP, configs: Sequence[Mapping[str, Any]], max_epochs: int
) -> list[list[float]]:
    """Each configuration trained from scratch to ``max_epochs``: its learning curve."""
    with tempfile.TemporaryDirectory() as tmp:
        return [objective(c, 0, max_epochs, Path(tmp)) for c in configs]


def _search_curves(search: OptimizeResult, space: Space) -> list[RawRun]:
    """Every run of the search as a :class:`RawRun` (a failure's step is a NaN: diverged)."""
    steps: dict[int, list[int]] = {r.id: [] for r in search.runs}
    values: dict[int, list[float]] = {r.id: [] for r in search.runs}
    for rec in search.history:
        if rec.value is None and not rec.failed:
            continue  # a step trained but not measured: a gap
        steps[rec.trial].append(rec.step)
        values[rec.trial].append(math.nan if rec.value is None else rec.value)
    return [
        RawRun(np.asarray(steps[r.id]), np.asarray(values[r.id]), space.encode(r.config))
        for r in search.runs
        if steps[r.id]
    ]


def _predict_partial_runs(
    objective: DigitsMLP,
    space: Space,
    surrogate: Surrogate,
    configs: Sequence[Mapping[str, Any]],
    seen_epochs: int,
    max_epochs: int,
    *,
    context: Sequence[RawRun] = (),
) -> tuple[list[PartialRunRow], list[FinalPrediction]]:
    """Train each config ``seen_epochs``, predict its final accuracy, then train it to the end.

    ``context``: other runs of the same task (part 1's curves), read together with them.
    """
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [Path(tmp) / str(i) for i in range(len(configs))]
        seen = []
        for config, d in zip(configs, dirs, strict=True):
            d.mkdir()
            seen.append(objective(config, 0, seen_epochs, d))
        # The partial runs read together with the context runs; every run is queried at
        # epochs seen..max, and the partial runs' predictions are the first ones.
        preds = surrogate.predict_final(
            [
                RawRun(np.arange(1, seen_epochs + 1), v, space.encode(c))
                for c, v in zip(configs, seen, strict=True)
            ] + list(context),
            max_step=max_epochs,
            higher_is_better=True,
            lower_bound=0.0,
            upper_bound=1.0,
            steps=np.arange(seen_epochs, max_epochs + 1),
        )[: len(configs)]
        rows = []
        for config, d, v, p in zip(configs, dirs, seen, preds, strict=True):
            rest = (
                [math.nan] * (max_epochs - seen_epochs) if math.isnan(v[-1])  # diverged: stays
                else objective(config, seen_epochs, max_epochs, d)  # thaw, train to the end
            )  # fmt: skip
            rows.append(
                PartialRunRow(
                    config=dict(config), curve=tuple(v + rest), seen_epochs=seen_epochs,
                    predicted=p.final, lower=p.lower, upper=p.upper,
                )
            )  # fmt: skip
    return rows, preds


def _fmt_value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _fmt_config(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in config.items())


def _fmt_space(space: Space) -> str:
    parts = []
    for name, p in space.params.items():
        if isinstance(p, Categorical):
            parts.append(f"{name} in {{{', '.join(map(str, p.choices))}}}")
        else:
            parts.append(f"{name} in [{p.low:g}, {p.high:g}]{' (log)' if p.log else ''}")
    return ", ".join(parts)


def _runs_table(search: OptimizeResult, max_epochs: int, top: int = 8) -> str:
    assert search.best is not None
    finished = sum(r.steps == max_epochs for r in search.runs)
    ranked = sorted(search.runs, key=lambda r: -math.inf if r.best is None else -r.best)
    lines = [
        f"{len(search.runs)} configurations tried, {finished} trained to epoch {max_epochs}; "
        f"the top {min(top, len(ranked))} by best accuracy:",
        "| run | epochs | best | last | config |",
        "|---|---|---|---|---|",
    ]
    for r in ranked[:top]:
        best = "-" if r.best is None else f"{r.best:.4f}"
        last = "diverged" if r.failed or r.last is None else f"{r.last:.4f}"
        lines.append(f"| {r.id} | {r.steps} | {best} | {last} | {_fmt_config(r.config)} |")
    b = search.best
    lines.append(
        f"best: accuracy {b.value:.4f} (run {b.trial}, epoch {b.step}) with {_fmt_config(b.config)}"
    )
    return "\n".join(lines)


def _rows_table(rows: Sequence[PartialRunRow]) -> str:
    seen, last = rows[0].seen_epochs, len(rows[0].curve)
    lines = [
        f"| run | config | epoch {seen} | predicted epoch {last} [90%] | actual epoch {last} |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        if math.isnan(r.actual):
            actual = "diverged"
        else:
            actual = f"{r.actual:.3f}" + ("" if r.covered else " (outside)")
        lines.append(
            f"| {i} | {_fmt_config(r.config)} | {r.last_seen:.3f} | {r.predicted:.3f} "
            f"[{r.lower:.3f}, {r.upper:.3f}] | {actual} |"
        )
    return "\n".join(lines)


def _plot_extrapolation(
    path: Path, rows: Sequence[PartialRunRow], preds: Sequence[FinalPrediction]
) -> None:
    from matplotlib.figure import Figure

    ncols = min(3, len(rows))
    nrows = math.ceil(len(rows) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax in axes[len(rows) :]:
        ax.set_axis_off()
    for i, (ax, row, pred) in enumerate(zip(axes, rows, preds, strict=False)):
        s = row.seen_epochs
        epochs = np.arange(1, len(row.curve) + 1)
        ax.plot(epochs[s - 1 :], row.curve[s - 1 :], color="0.45", ls="--", lw=1.2,
                label="actual continuation")  # fmt: skip
        ax.plot(epochs[:s], row.curve[:s], color="C0", marker="o", ms=3, lw=2,
                label=f"seen ({s} epochs)")  # fmt: skip
        ax.fill_between(pred.steps, pred.lower_path, pred.upper_path, color="C1", alpha=0.25,
                        label="90% band")  # fmt: skip
        ax.plot(pred.steps, pred.median_path, color="C1", lw=1.5, label="predicted median")
        ax.axvline(s, color="0.8", ls=":")
        c = row.config
        actual = "diverged" if math.isnan(row.actual) else f"{row.actual:.3f}"
        ax.set_title(
            f"run {i}: {c['optimizer']}, lr {c['lr']:.2g}, width {c['width']}\n"
            f"predicted {row.predicted:.3f} [{row.lower:.2f}, {row.upper:.2f}], "
            f"actual {actual}",
            fontsize=9,
        )
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    for ax in axes[(nrows - 1) * ncols :]:
        ax.set_xlabel("epoch")
    for ax in axes[::ncols]:
        ax.set_ylabel("validation accuracy")
    fig.suptitle("curvepfn: the final accuracy of each run predicted from its first epochs")
    fig.savefig(path, dpi=110)
