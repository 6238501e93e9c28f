"""Latency of ``FreezeThaw.ask`` with many observations and candidates (target: <= 0.1 s).

The optimiser's state is built by writing a journal directly (``--runs`` runs with
``--observations`` told steps in all, spread unevenly over the runs like a freeze-thaw history) and
replaying it, so no time is spent filling it. Then ``ask`` is timed ``--repeats`` times, each
followed by a ``tell`` as in a live loop (so the state grows by one observation per ask, and with
``--single-weight`` above 0 each ask re-encodes the runs whose scores the tell changed: the run
told, or all of them when the refitted score map moved); the median is printed, per thread
count. The thread counts run one after the other, on a state grown by the earlier ones' tells.

    python benchmarks/ask_latency.py                    # 1000 observations, 2000 candidates
    python benchmarks/ask_latency.py --observations 4000 --candidates 4000
    python benchmarks/ask_latency.py --checkpoint runs/small/model   # another network
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from bo.freeze_thaw import FreezeThaw, FreezeThawConfig
from bo.journal import Journal
from bo.space import Categorical, Float, Int, Space
from pfn.surrogate import Surrogate

SPACE = Space(
    {
        "lr": Float(1e-5, 1e-1, log=True),
        "weight_decay": Float(1e-6, 1e-2, log=True),
        "beta1": Float(0.8, 0.999),
        "batch_size": Int(16, 512, log=True),
        "layers": Int(1, 8),
        "dropout": Float(0.0, 0.5),
        "optimizer": Categorical(["adam", "sgd", "rmsprop"]),
    }
)
MAX_STEPS = 50


def build(
    state_dir: str,
    n_obs: int,
    n_runs: int,
    n_candidates: int,
    single_weight: float,
    surrogate: Surrogate | None = None,
) -> FreezeThaw:
    """A FreezeThaw whose journal holds ``n_obs`` told steps over ``n_runs`` runs
    (``surrogate`` None: the shipped one)."""
    rng = np.random.default_rng(0)
    pool = FreezeThawConfig(n_candidates=n_candidates, single_weight=single_weight)
    settings_probe = FreezeThaw(SPACE, max_steps=MAX_STEPS, minimize=True, config=pool)
    journal = Journal(state_dir, settings_probe._settings())
    # run lengths: a few long runs, many short ones (Dirichlet shares), capped at MAX_STEPS
    shares = rng.dirichlet(np.full(n_runs, 0.5))
    lengths = np.clip(np.round(shares * n_obs), 1, MAX_STEPS).astype(int)
    configs = SPACE.sample(n_runs, seed=1, method="random")
    for run, (config, length) in enumerate(zip(configs, lengths, strict=True)):
        final = rng.uniform(0.2, 0.9)
        for step in range(1, length + 1):
            journal.append("ask", run=run, step=step, config=config)
            value = final + (1.0 - final) * np.exp(-step / 5) + 0.01 * rng.standard_normal()
            journal.append("tell", run=run, step=step, value=float(value))
    journal.close()
    ft = FreezeThaw(
        SPACE,
        max_steps=MAX_STEPS,
        minimize=True,
        state_dir=state_dir,
        config=pool,
        surrogate=surrogate,
    )
    return ft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument(
        "--single-weight",
        type=float,
        default=FreezeThawConfig().single_weight,
        help="FreezeThawConfig.single_weight (default: %(default)s; 0: the context view alone)",
    )
    parser.add_argument("--checkpoint", default=None, help="surrogate (default: the shipped one)")
    args = parser.parse_args()
    surrogate = None if args.checkpoint is None else Surrogate.load(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        ft = build(
            tmp, args.observations, args.runs, args.candidates, args.single_weight, surrogate
        )
        n_obs = len(ft.history)
        print(
            f"ask latency: {n_obs} observations in {len(ft.configs())} runs, "
            f"{args.candidates} new candidates, space of {SPACE.dim} encoded dims, "
            f"single_weight {args.single_weight}, model {ft.surrogate.config}"
        )
        for threads in (int(x) for x in args.threads.split(",")):
            torch.set_num_threads(threads)
            rng = np.random.default_rng(threads)
            ft.tell(ft.ask(), float(rng.uniform(0.2, 0.9)))  # warm-up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                trial = ft.ask()
                times.append(time.perf_counter() - start)
                ft.tell(trial, float(rng.uniform(0.2, 0.9)))
            print(
                f"  {threads} thread(s): median {statistics.median(times):.3f} s, "
                f"min {min(times):.3f} s over {args.repeats} asks"
            )
        ft.close()


if __name__ == "__main__":
    main()
