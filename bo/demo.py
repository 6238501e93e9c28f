"""``curvepfn demo``: what the library does, in one minute on a laptop CPU, on embedded defaults.

1. Samples a few synthetic tasks from the prior and plots their curves (``prior_curves.png``).
2. Takes a held-out synthetic task (8 configurations of one problem, 50 steps each), observes each
   run only up to a random step (20-60% of the budget), and asks the shipped surrogate for every
   run's whole future in one forward pass. It prints predicted against true final values and
   draws the extrapolations with their 90% bands over the truth (``extrapolation.png``).

The freeze-thaw optimisation part of the demo arrives with the optimizer.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pfn.surrogate import Curve, Surrogate
from priors import cli as priors_cli
from priors.curves import CurveParams, observe
from priors.ftpfn import FTPFNPrior, FTPFNPriorConfig

N_RUNS = 8  # configurations of the held-out task
N_STEPS = 50  # steps of every run
N_HPS = 3  # hyperparameters of the held-out task


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced and measured."""

    prior_plot: Path  # curves of a few prior tasks
    extrapolation_plot: Path  # observed prefixes, predictions and the truth
    true_final: np.ndarray  # (N_RUNS,) true final score of every run
    predicted_final: np.ndarray  # (N_RUNS,) predicted median final score
    covered: np.ndarray  # (N_RUNS,) bool: the true final score lies in the 90% interval
    forward_seconds: float  # wall time of the one predict() call


def _per_run(params: CurveParams) -> CurveParams:
    """Parameters of shape (R,) / (R, 4) -> (R, 1) / (R, 1, 4), to broadcast over steps."""
    return CurveParams(
        **{f.name: getattr(params, f.name).unsqueeze(1) for f in dataclasses.fields(params)}
    )


def held_out_task(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic task the surrogate never saw: configs (R, N_HPS), t (S,), y (R, S) in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    prior = FTPFNPrior(FTPFNPriorConfig(min_hps=N_HPS, max_task_hps=N_HPS, ceiling_prob=0.0))
    draw = prior.sample_parameters(1, N_RUNS, generator=gen)
    t = torch.arange(1, N_STEPS + 1, dtype=torch.float32) / N_STEPS  # (S,)
    y = observe(_per_run(draw.params), t[None, :], generator=gen)  # (R, S)
    configs = draw.configs[0, :, :N_HPS]  # (R, N_HPS)
    return configs.numpy(), t.numpy(), y.numpy()


def run_demo(
    out_dir: str | Path, *, seed: int = 0, checkpoint: str | Path | None = None
) -> DemoResult:
    """Run both parts of the demo, writing the plots into ``out_dir``; prints as it goes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prior_plot = out / "prior_curves.png"
    priors_cli.main(["plot", "--out", str(prior_plot), "--prior", "ftpfn", "--seed", str(seed)])

    surrogate = Surrogate.load(checkpoint)
    configs, t, y = held_out_task(seed + 1)
    rng = np.random.default_rng(seed)
    cuts = rng.integers(int(0.2 * N_STEPS), int(0.6 * N_STEPS) + 1, size=N_RUNS)  # observed steps
    context = [Curve(configs[r], t=t[: cuts[r]], y=y[r, : cuts[r]]) for r in range(N_RUNS)]
    query = [Curve(configs[r], t=t[cuts[r] :]) for r in range(N_RUNS)]
    start = time.perf_counter()
    preds = surrogate.predict(context, query)
    forward = time.perf_counter() - start

    true_final = y[:, -1]
    median = np.array([p.quantile(0.5)[-1] for p in preds])
    low = np.array([p.quantile(0.05)[-1] for p in preds])
    high = np.array([p.quantile(0.95)[-1] for p in preds])
    covered = (low <= true_final) & (true_final <= high)
    print(f"\nheld-out task: {N_RUNS} runs x {N_STEPS} steps, each observed up to 20-60% of it")
    print(f"one forward pass: {forward * 1e3:.0f} ms for {sum(cuts)} observed points")
    print(
        f"{'run':>4} {'seen':>5} {'last seen':>9} {'true final':>10} {'predicted':>9} "
        f"{'90% interval':>15}"
    )
    for r in range(N_RUNS):
        print(
            f"{r:>4} {cuts[r]:>5} {y[r, cuts[r] - 1]:>9.3f} {true_final[r]:>10.3f} "
            f"{median[r]:>9.3f}   [{low[r]:.3f}, {high[r]:.3f}]{'' if covered[r] else '  miss'}"
        )
    print(f"90% intervals cover {covered.sum()}/{N_RUNS} true final values")

    plot = out / "extrapolation.png"
    _plot(plot, t, y, cuts, preds)
    print(f"wrote {prior_plot} and {plot}")
    return DemoResult(prior_plot, plot, true_final, median, covered, forward)


def _plot(path: Path, t: np.ndarray, y: np.ndarray, cuts: np.ndarray, preds) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 6), layout="constrained")
    axes = fig.subplots(2, 4, sharex=True, sharey=True).ravel()
    for r, (ax, pred) in enumerate(zip(axes, preds, strict=True)):
        c = cuts[r]
        ax.plot(t, y[r], color="0.6", lw=1, label="truth (hidden)")
        ax.plot(t[:c], y[r, :c], color="C0", lw=2, label="observed")
        ax.fill_between(
            pred.t,
            pred.quantile(0.05),
            pred.quantile(0.95),
            color="C1",
            alpha=0.3,
            label="90% band",
        )
        ax.plot(pred.t, pred.quantile(0.5), color="C1", lw=1.5, label="predicted median")
        ax.axvline(t[c - 1], color="0.8", ls=":")
        ax.set_title(f"run {r}: seen {c}/{len(t)} steps", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7, loc="lower right")
    for ax in axes[4:]:
        ax.set_xlabel("t (step / budget)")
    fig.suptitle("curvepfn: every run's future from one forward pass over all partial runs")
    fig.savefig(path, dpi=110)
